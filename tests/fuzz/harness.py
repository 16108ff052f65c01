"""What every fuzz target shares: the repository on sys.path, the atheris entry
point, and a plain replay of a corpus for pytest.

A target module defines `test_one_input(data: bytes) -> None`, which returns
quietly for an input the code under test handles correctly and raises
`FuzzFailure` (or lets an unexpected exception escape) when it does not.
`main(test_one_input)` hands it to atheris: any escaping exception is a finding,
and libFuzzer writes the input to `crash-<sha1>` under -artifact_prefix.
"""
from __future__ import annotations

import gc
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS_ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
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
    """The committed inputs of a target, seeds and reproducers (crash-*) alike, sorted."""
    directory = corpus_dir(target)
    return sorted(path for path in directory.iterdir() if path.is_file()) if directory.is_dir() else []


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
