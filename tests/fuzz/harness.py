"""What every fuzz target shares: the repository on sys.path, the atheris entry
point, and a plain replay of a corpus for pytest.

A target module defines `test_one_input(data: bytes) -> None`, which returns
quietly for an input the code under test handles correctly and raises
`FuzzFailure` (or lets an unexpected exception escape) when it does not.
`main(test_one_input)` hands it to atheris: any escaping exception is a finding,
and libFuzzer writes the input to `crash-<sha1>` under -artifact_prefix.
"""
from __future__ import annotations

import dataclasses
import gc
import pathlib
import re
import shutil
import subprocess
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ_DIR = pathlib.Path(__file__).resolve().parent
CORPUS_ROOT = FUZZ_DIR / "corpus"
# Every target: tests/fuzz/fuzz_<name>.py with its corpus in tests/fuzz/corpus/<name>/.
TARGETS = ("qr", "qr_fields", "upi", "frames", "msgpack", "pipeline", "rules_config")
# One input taking longer than this is a finding (a hang), not a slow machine.
INPUT_TIMEOUT_SECONDS = 10
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class FuzzFailure(AssertionError):
    """An invariant a target checks did not hold; the message says which and how."""


def check(condition: bool, message: str, *details) -> None:
    """An assertion that survives `python -O`: the fuzzer's whole output is these."""
    if not condition:
        raise FuzzFailure(message + ("" if not details else ": " + " | ".join(repr(d)[:300] for d in details)))


def corpus_dir(target: str) -> pathlib.Path:
    return CORPUS_ROOT / target


def seed_files(target: str) -> list[pathlib.Path]:
    """The committed seeds of a target (seed-*), sorted; reproducers (crash-*) are apart."""
    return sorted(corpus_dir(target).glob("seed-*"))


def reproducer_files(target: str) -> list[pathlib.Path]:
    return sorted(corpus_dir(target).glob("crash-*"))


@dataclasses.dataclass
class RunResult:
    target: str
    executions: int
    seconds: int
    returncode: int
    output: str
    artifacts: list

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.artifacts


def run_target(target: str, seconds: int, workdir: pathlib.Path, python: str = sys.executable) -> RunResult:
    """Fuzz one target for `seconds` in a subprocess, from its seeds.

    The seeds are copied into `workdir/<target>` first, and that copy is the
    corpus libFuzzer grows: a run never writes into the repository, and the
    committed reproducers (crash-*), which would stop it at once, stay out.
    """
    corpus = workdir / target
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seed_files(target):
        shutil.copyfile(seed, corpus / seed.name)
    artifact_prefix = f"{workdir}/{target}-"
    earlier = set(workdir.glob(f"{target}-*"))   # reproducers of earlier runs in a reused workdir
    completed = subprocess.run(
        [python, str(FUZZ_DIR / f"fuzz_{target}.py"), f"-max_total_time={seconds}", "-print_final_stats=1",
         f"-timeout={INPUT_TIMEOUT_SECONDS}", f"-artifact_prefix={artifact_prefix}", str(corpus)],
        capture_output=True, text=True, errors="replace", cwd=str(ROOT),
    )
    output = completed.stdout + completed.stderr
    executions = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    artifacts = sorted(str(path) for path in set(workdir.glob(f"{target}-*")) - earlier)
    return RunResult(target, int(executions.group(1)) if executions else 0, seconds, completed.returncode,
                     output, artifacts)


def main(test_one_input, instrumented_modules: tuple[str, ...]) -> None:
    """`python tests/fuzz/fuzz_<target>.py [libFuzzer flags] [corpus dirs]`."""
    import atheris

    instrument(atheris, instrumented_modules)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def instrument(atheris, module_names: tuple[str, ...]) -> None:
    """Coverage feedback from the named (already imported) modules only.

    atheris sees Python bytecode, not the compiled core, so the reference twin's
    coverage is what guides the mutations the compiled core is compared on.
    atheris.instrument_all() would do it for all 3,600 loaded functions and
    takes a minute to start; the few modules under test take a second.
    """
    wanted = set(module_names)
    functions = [obj for obj in gc.get_objects()
                 if isinstance(obj, types.FunctionType) and getattr(obj, "__module__", None) in wanted]
    for function in functions:
        atheris.instrument_func(function)
    sys.stderr.write(f"INFO: instrumented {len(functions)} functions of {sorted(wanted)}\n")
