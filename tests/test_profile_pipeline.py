"""bench/profile_pipeline.py, the workload `make profile` runs: what an engineer profiling the core sees."""
from __future__ import annotations

import pytest

from bench import profile_pipeline
from bench.pipeline_workload import TraceBuildError, build_mode, workload_engine
from core_ext import limits

# The shape callgrind_annotate --inclusive=yes prints (a function may be listed under two file names).
ANNOTATE_LISTING = """\
--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
2,000,000 (100.0%)  core_ext/_pipeline.c:__pyx_pw_8core_ext_9_pipeline_8Pipeline_23run [/x/_pipeline.so]
1,000,000 (50.00%)  /work/core_ext/_rules.c:__pyx_f_8core_ext_6_rules_10RuleEngine_evaluate_struct
1,200,000 (60.00%)  core_ext/_rules.c:__pyx_f_8core_ext_6_rules_10RuleEngine_evaluate_struct [/x/_rules.so]
  400,000 (20.00%)  core_ext/_rules.c:__pyx_f_8core_ext_6_rules_4_Lru_find [/x/_rules.so]
"""


def test_a_run_prints_the_rate_and_the_stages_and_writes_the_cprofile_report(tmp_path, capsys):
    if build_mode() == "debug":
        pytest.skip("the workload refuses the trace build (tested below)")
    report = tmp_path / "cprofile.txt"
    assert profile_pipeline.main(["--payments", "200", "--batch", "100", "--cprofile", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "200 payments in frames of 100 (compiled, release build, under cProfile)" in printed
    assert "100.0% approved" in printed
    assert "per payment: decode" in printed and "rules" in printed and "post" in printed and "respond" in printed
    assert "Ordered by: cumulative time" in report.read_text()


def test_the_workload_refuses_the_trace_build_unless_allowed(monkeypatch):
    monkeypatch.setattr("bench.pipeline_workload.build_mode", lambda: "debug")
    with pytest.raises(TraceBuildError):
        workload_engine("compiled")
    assert profile_pipeline.main(["--payments", "1", "--batch", "1"]) == 2


@pytest.mark.parametrize("batch, accepted", [(limits.BATCH_FRAME_ITEMS_MAX, True),
                                             (limits.BATCH_FRAME_ITEMS_MAX + 1, False), (0, False)])
def test_the_batch_is_a_pay_batch_frame_the_switch_takes(batch, accepted):
    arguments = ["--payments", str(max(batch, 1)), "--batch", str(batch)]
    if accepted:
        assert profile_pipeline.parse_arguments(arguments).batch == batch
    else:
        with pytest.raises(SystemExit):
            profile_pipeline.parse_arguments(arguments)


def test_fewer_payments_than_one_frame_are_refused():
    with pytest.raises(SystemExit):
        profile_pipeline.parse_arguments(["--payments", "99", "--batch", "100"])


def test_the_callgrind_summary_gives_instructions_per_payment_and_share(monkeypatch, tmp_path):
    class Finished:
        stdout = ANNOTATE_LISTING

    monkeypatch.setattr(profile_pipeline.subprocess, "run", lambda *args, **kwargs: Finished())
    lines = profile_pipeline.callgrind_summary(tmp_path / "callgrind.out", payments=1_000)
    by_label = {line[:42].strip(): line[42:].split() for line in lines[1:]}
    assert by_label["Pipeline.run (all of it)"] == ["2,000", "100.0%"]
    assert by_label["rules evaluate"] == ["1,200", "60.0%"]          # the larger of its two listings
    assert by_label["rules LRU find (evaluate and touch)"] == ["400", "20.0%"]
    assert by_label["ledger create_transfers"] == ["0", "0.0%"]       # not in the listing
