"""The load generator: its workload is the seeded shared model, its frames are what the protocol
says, its open loop measures from the intended send time, its reports compare."""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import pathlib
import socket
import subprocess
import sys
import time

import msgpack
import pytest
from click.testing import CliRunner

from core_ext import limits
from switch.commands.bench import bench
from switch.loadgen import RunSettings, fixture, model, run_load
from switch.loadgen import report as report_module
from switch.loadgen.frames import FrameRing
from switch.loadgen.plot import percentile_curve
from switch.loadgen.stream import KINDS, StreamBuilder, build_items

REPO = pathlib.Path(__file__).resolve().parents[1]
REQUIRED_KEYS = ("throughput_per_s", "latency_us", "count", "by_code", "durability")
SMALL = fixture.FixtureSpec(seed=7, payer_count=300, merchant_count=60, wallet_count=2)


@pytest.fixture(scope="module")
def small_workload(tmp_path_factory) -> dict:
    _, workload_path = fixture.write_fixture(tmp_path_factory.mktemp("workload"), SMALL)
    return fixture.load_workload(workload_path)


# ---- the workload model ---------------------------------------------------------------

class TestModel:
    def test_base_stream_is_the_postgres_baselines_draw_for_draw(self, monkeypatch):
        monkeypatch.syspath_prepend(str(REPO))
        baseline = pytest.importorskip("bench.baselines.postgres.workload")
        theirs = list(itertools.islice(baseline.Workload(3, 500, 80).payments(), 5_000))
        ours = list(itertools.islice(model.base_payments(3, 500, 80), 5_000))
        assert [(p.transfer_id, p.payer_account_id - baseline.PAYER_ACCOUNT_ID_BASE - 1,
                 p.merchant_account_id - baseline.MERCHANT_ACCOUNT_ID_BASE, p.amount_minor) for p in theirs] == \
               [(p.transfer_id, p.payer_index, p.merchant_rank, p.amount_minor) for p in ours]
        assert [payer.opening_minor for payer in baseline.Workload(3, 500, 80).payers()] == \
               model.opening_balances_minor(3, 500)

    @pytest.mark.parametrize("funding_scale", [1_000, "max"])
    def test_funded_openings_are_the_postgres_baselines_at_a_scale_too(self, monkeypatch, funding_scale):
        monkeypatch.syspath_prepend(str(REPO))
        baseline = pytest.importorskip("bench.baselines.postgres.workload")
        assert baseline.Workload(3, 500, 80).funding_scale_max() == model.funding_scale_max(3, 500)
        if funding_scale == "max":
            funding_scale = model.funding_scale_max(3, 500)
        theirs = baseline.Workload(3, 500, 80, funding_scale)
        assert [payer.opening_minor for payer in theirs.payers()] == \
               model.opening_balances_minor(3, 500, funding_scale)
        assert [(p.transfer_id, p.amount_minor) for p in itertools.islice(theirs.payments(), 2_000)] == \
               [(p.transfer_id, p.amount_minor) for p in itertools.islice(model.base_payments(3, 500, 80), 2_000)]

    def test_funding_scales_normal_openings_and_leaves_the_nearly_empty_ones(self):
        plain, scaled = model.opening_balances_minor(3, 500), model.opening_balances_minor(3, 500, 1_000)
        low = [index for index, minor in enumerate(plain) if minor <= model.LOW_BALANCE_MINOR_MAX]
        assert low, "some payers must stay nearly empty so insufficient funds still happen"
        assert all(scaled[index] == plain[index] for index in low)
        assert all(scaled[index] == 1_000 * plain[index] for index in range(len(plain)) if index not in low)

    def test_funding_scale_up_to_bigint_is_taken_and_one_more_is_refused(self):
        scale_max = model.funding_scale_max(3, 500)
        plain = model.opening_balances_minor(3, 500)
        assert sum(model.opening_balances_minor(3, 500, scale_max)) <= model.ISSUED_MINOR_MAX
        # One more scale adds every normal opening once more: past the total PostgreSQL can hold.
        normal_minor = sum(minor for minor in plain if minor >= model.OPENING_MINOR_MIN)
        assert sum(model.opening_balances_minor(3, 500, scale_max)) + normal_minor > model.ISSUED_MINOR_MAX
        with pytest.raises(ValueError, match=f"funding scale {scale_max + 1}: .*bigint.* at most {scale_max}"):
            model.opening_balances_minor(3, 500, scale_max + 1)
        with pytest.raises(ValueError, match="at least 1"):
            model.check_funding_scale(3, 500, 0)

    def test_same_seed_same_stream_and_another_seed_another(self):
        first = list(itertools.islice(model.base_payments(1, 100, 10), 500))
        assert first == list(itertools.islice(model.base_payments(1, 100, 10), 500))
        assert first != list(itertools.islice(model.base_payments(2, 100, 10), 500))

    def test_merchants_are_zipf_skewed_with_a_few_very_hot(self):
        merchant_count, payment_count = 1_000, 40_000
        ranks = collections.Counter(p.merchant_rank for p in itertools.islice(
            model.base_payments(5, 1_000, merchant_count), payment_count))
        total_weight = model.zipf_cumulative_weights(merchant_count)[-1]
        expected_top_share = 1 / total_weight   # rank 1: 1/1^s over the total
        assert ranks[1] / payment_count == pytest.approx(expected_top_share, rel=0.1)
        top_ten_share = sum(ranks[rank] for rank in range(1, 11)) / payment_count
        assert top_ten_share > 0.4               # 1% of the merchants take ~45% of the payments
        assert ranks[1] > 50 * max(ranks[500], 1)

    def test_amounts_are_integer_minor_units_in_range(self):
        for payment in itertools.islice(model.base_payments(1, 50, 5), 2_000):
            assert type(payment.amount_minor) is int
            assert model.PAYMENT_AMOUNT_MINOR_MIN <= payment.amount_minor <= model.PAYMENT_AMOUNT_MINOR_MAX


class TestFixture:
    def test_files_are_identical_for_a_seed(self, tmp_path):
        first = fixture.write_fixture(tmp_path / "a", SMALL)
        second = fixture.write_fixture(tmp_path / "b", SMALL)
        for one, other in zip(first, second):
            assert one.read_bytes() == other.read_bytes()

    def test_config_is_a_valid_switch_config_with_every_merchant_and_funded_wallets(self, tmp_path):
        from switch import config as config_module

        config_path, _ = fixture.write_fixture(tmp_path, SMALL)
        config = config_module.load(config_path)
        assert len(config.merchants) == SMALL.merchant_count
        wallets = [account for account in config.accounts if account.code == 1]
        assert len(wallets) == SMALL.payer_count * len(fixture.LEDGERS)
        assert {account.ledger for account in wallets} == set(fixture.LEDGERS)
        assert all(config.participants[account.owner].owns(account.id) for account in wallets)

    def test_a_rule_set_is_copied_beside_the_config_and_named_in_it(self, tmp_path):
        from switch import config as config_module

        rules = REPO / "switch" / "demo" / "rules.toml"
        spec = fixture.FixtureSpec(seed=7, payer_count=20, merchant_count=5, wallet_count=1, rules_path=str(rules))
        config_path, workload_path = fixture.write_fixture(tmp_path, spec)
        config = config_module.load(config_path)
        assert pathlib.Path(config.rules_path).read_bytes() == rules.read_bytes()
        assert fixture.load_workload(workload_path)["rules_sha256"] == spec.rules_sha256()

    def test_without_a_rule_set_the_config_names_none(self, tmp_path):
        from switch import config as config_module

        config_path, workload_path = fixture.write_fixture(tmp_path, SMALL)
        assert config_module.load(config_path).rules_path is None
        assert fixture.load_workload(workload_path)["rules_sha256"] is None

    def test_every_merchant_payload_is_valid_under_its_profile(self, small_workload):
        import core_ext

        for merchant in small_workload["merchant_table"]:
            result = core_ext.core.parse_qr(merchant["payload"], 0)
            assert result.valid and result.currency == merchant["ledger"]
            assert result.profile == merchant["profile"]
        profiles = {merchant["profile"] for merchant in small_workload["merchant_table"]}
        assert profiles == {profile for profile, *_ in fixture.PROFILES}

    def test_config_funds_the_wallets_at_the_workloads_funding_scale(self, tmp_path):
        from switch import config as config_module

        scale_max = model.funding_scale_max(7, 20)
        spec = fixture.FixtureSpec(seed=7, payer_count=20, merchant_count=5, wallet_count=1, funding_scale=scale_max)
        config_path, workload_path = fixture.write_fixture(tmp_path, spec)
        config = config_module.load(config_path)
        openings = model.opening_balances_minor(7, 20, scale_max)
        for slot, ledger in enumerate(fixture.LEDGERS):
            funded = {account.id: account.opening_balance_minor for account in config.accounts if account.ledger == ledger
                      and account.code == 1}
            assert [funded[fixture.payer_account_id(slot, index)] for index in range(20)] == openings
        assert fixture.load_workload(workload_path)["funding_scale"] == scale_max

    def test_a_funding_scale_past_the_bigint_total_is_refused_before_writing(self, tmp_path):
        spec = fixture.FixtureSpec(seed=7, payer_count=20, merchant_count=5, wallet_count=1,
                                   funding_scale=model.funding_scale_max(7, 20) + 1)
        with pytest.raises(ValueError, match="PostgreSQL bigint"):
            fixture.write_fixture(tmp_path, spec)
        assert not (tmp_path / "switch.toml").exists()

    def test_a_fixture_of_another_funding_scale_is_regenerated_by_e2e(self, tmp_path):
        from switch.loadgen import e2e

        spec = fixture.FixtureSpec(seed=7, payer_count=20, merchant_count=5, wallet_count=1, funding_scale=10)
        _, workload_path = fixture.write_fixture(tmp_path, spec)
        assert e2e._fixture_matches(workload_path, spec)
        assert not e2e._fixture_matches(workload_path, fixture.FixtureSpec(
            seed=7, payer_count=20, merchant_count=5, wallet_count=1, funding_scale=11))

    def test_sizes_past_the_account_limit_are_refused(self):
        payers_at_limit = (limits.ACCOUNTS_MAX - 1 - 2 * len(fixture.LEDGERS)) // len(fixture.LEDGERS)
        fixture.FixtureSpec(payer_count=payers_at_limit, merchant_count=1).check()
        with pytest.raises(ValueError, match="accounts_max"):
            fixture.FixtureSpec(payer_count=payers_at_limit + 1, merchant_count=1 + len(fixture.LEDGERS)).check()


class TestStream:
    def test_items_are_deterministic_for_a_seed(self, small_workload):
        assert StreamBuilder(small_workload).take(3_000) == StreamBuilder(small_workload).take(3_000)

    def test_every_kind_appears_and_retries_repeat_the_earlier_bytes(self, small_workload):
        items = StreamBuilder(small_workload).take(20_000)
        kinds = collections.Counter(item.kind for item in items)
        assert set(kinds) == set(KINDS)
        assert kinds["dynamic"] / len(items) == pytest.approx(0.1, rel=0.15)
        first_seen = {}
        for item in items:
            transfer_id = msgpack.unpackb(item.args)[0]
            if item.kind == "retry":
                assert first_seen[transfer_id] == item.args
            first_seen.setdefault(transfer_id, item.args)

    def test_a_cached_stream_reads_back_the_same_items(self, small_workload, tmp_path):
        built = build_items(small_workload, 800, tmp_path)
        assert len(list(tmp_path.glob("stream-*.msgpack"))) == 1
        assert build_items(small_workload, 800, tmp_path) == built == StreamBuilder(small_workload).take(800)

    def test_an_item_is_a_pay_argument_array_the_protocol_accepts(self, small_workload):
        from switch import protocol

        for item in StreamBuilder(small_workload).take(500):
            args = msgpack.unpackb(item.args)
            assert len(args) == 5 and len(args[0]) == 16
            decoded = protocol.decode_pay_item(args)
            assert decoded.payer_account_id == args[1]


# ---- frames ---------------------------------------------------------------------------

def _frames(ring: FrameRing, data: bytes) -> list:
    frames, position = [], 0
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        frames.append(msgpack.unpackb(data[position + 4:position + 4 + length]))
        position += 4 + length
    return frames


class TestFrames:
    def test_single_frames_are_pay_requests_with_consecutive_ids(self, small_workload):
        items = StreamBuilder(small_workload).take(10)
        ring = FrameRing(items, 1)
        frames = _frames(ring, ring.take(0, ring.frame_count))
        assert [frame[0] for frame in frames] == list(range(1, 11))
        assert all(frame[1] == "pay" for frame in frames)
        assert [frame[2] for frame in frames] == [msgpack.unpackb(item.args) for item in items]

    def test_batch_frames_hold_exactly_the_batch(self, small_workload):
        items = StreamBuilder(small_workload).take(25)
        ring = FrameRing(items, 12)
        frames = _frames(ring, ring.take(0, ring.frame_count))
        assert len(frames) == 2 and all(frame[1] == "pay_batch" and len(frame[2]) == 12 for frame in frames)

    def test_batch_at_the_frame_item_limit_builds(self, small_workload):
        items = StreamBuilder(small_workload).take(limits.BATCH_FRAME_ITEMS_MAX)
        ring = FrameRing(items, limits.BATCH_FRAME_ITEMS_MAX)
        (frame,) = _frames(ring, ring.take(0, 1))
        assert len(frame[2]) == limits.BATCH_FRAME_ITEMS_MAX

    def test_after_a_wrap_every_transfer_id_is_new_and_nothing_else_changes(self, small_workload):
        ring = FrameRing(StreamBuilder(small_workload).take(6), 2)
        original = _frames(ring, ring.take(0, ring.frame_count))
        ring.wrapped()
        again = _frames(ring, ring.take(0, ring.frame_count))
        assert again != original
        for before, after in zip(original, again):
            for old_item, new_item in zip(before[2], after[2]):
                assert old_item[0] != new_item[0] and old_item[0][4:] == new_item[0][4:]
                assert old_item[1:] == new_item[1:]
        assert _frames(ring, ring.take(0, ring.frame_count)) == again   # patched once per epoch

    def test_too_few_items_for_a_batch_are_refused(self, small_workload):
        with pytest.raises(ValueError):
            FrameRing(StreamBuilder(small_workload).take(3), 4)


# ---- runs against the echo peer --------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def echo_peer(service_ms: float = 0.0):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "switch", "bench", "echo", "--port", str(port),
                                "--service-ms", str(service_ms)], stdout=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert time.monotonic() < deadline and process.poll() is None, "echo peer did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


class TestRuns:
    def test_closed_loop_against_the_echo_peer_counts_every_answer(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, connections=4, processes=2, depth=8, warmup_s=0.2, duration_s=0.6)
            report = run_load(small_workload, settings, stream_items=4_000)
        assert all(key in report for key in REQUIRED_KEYS)
        assert report["count"] > 0 and report["by_code"] == {"OK": report["count"]}
        assert report["errors"] == []
        assert report["workload"]["funding_scale"] == SMALL.funding_scale == 1
        assert set(report["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}
        assert report["latency_us"]["p50"] <= report["latency_us"]["p99"] <= report["latency_us"]["max"]
        assert percentile_curve(report)[-1][1] == pytest.approx(report["latency_us"]["max"], rel=0.01)

    def test_batch_frames_count_every_item(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, connections=2, depth=2, batch_items=50, warmup_s=0.1, duration_s=0.5)
            report = run_load(small_workload, settings, stream_items=2_000)
        assert report["count"] > 0 and report["count"] % 50 == 0
        assert report["by_code"] == {"OK": report["count"]}

    def test_open_loop_latency_includes_the_queue_behind_a_slow_peer(self, small_workload):
        # The peer answers one frame per 10 ms (100/s); offering 200/s for 1 s builds a queue of
        # ~100 frames.  Measured from the intended send time, the late frames wait ~0.5 s and more;
        # a generator that waited for each answer before sending (coordinated omission) would
        # report ~10 ms for every one of them.
        with echo_peer(service_ms=10) as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=200, connections=2, warmup_s=0.0,
                                   duration_s=1.0, drain_timeout_s=10)
            report = run_load(small_workload, settings)
        assert report["count"] == pytest.approx(200, abs=4)
        assert report["latency_us"]["p50"] > 200_000
        assert report["latency_us"]["max"] > 700_000
        assert report["send_lag_us"]["p99"] < 50_000   # the generator itself was on time

    def test_open_loop_offers_its_rate_split_over_processes(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=2_000, connections=4, processes=2,
                                   warmup_s=0.2, duration_s=0.8)
            report = run_load(small_workload, settings)
        assert report["count"] == pytest.approx(1_600, rel=0.05)
        assert report["throughput_per_s"] == pytest.approx(2_000, rel=0.05)

    def test_a_workload_with_more_wallets_than_connections_is_refused(self, small_workload):
        with pytest.raises(ValueError, match="wallets"):
            run_load(small_workload, RunSettings(connections=1, duration_s=0.1))


# ---- reports and the command line --------------------------------------------------------

def _report(throughput: float, p99: int) -> dict:
    return {"target": "x", "durability": "fsync", "throughput_per_s": throughput, "count": 10, "by_code": {"OK": 10},
            "latency_us": {"p50": 100, "p90": 200, "p99": p99, "p999": 800, "max": 900}}


class TestReports:
    def test_compare_prints_ratios(self, tmp_path):
        first, second = tmp_path / "a.json", tmp_path / "b.json"
        first.write_text(json.dumps(_report(1_000.0, 400)))
        second.write_text(json.dumps(_report(2_000.0, 100)))
        result = CliRunner().invoke(bench, ["compare", str(first), str(second)])
        assert result.exit_code == 0, result.output
        throughput_line = next(line for line in result.output.splitlines() if line.startswith("throughput"))
        assert throughput_line.endswith("2.00x")
        p99_line = next(line for line in result.output.splitlines() if line.startswith("latency p99"))
        assert p99_line.endswith("0.25x")

    def test_throughput_counts_accepted_answers_not_busy(self, small_workload):
        """A shedding switch answers BUSY fast and a closed loop re-sends at once: those answers
        are reported (answered_per_s, busy_share, by_code) but are not throughput."""
        from core_ext.codes import Code
        from switch.loadgen.recorder import Merged, new_histogram
        total = new_histogram()
        for _ in range(1_000):
            total.record_value(500)
        merged = Merged(intervals={}, total=total, send_lag=new_histogram(),
                        by_code=collections.Counter({Code.OK: 600, Code.BUSY: 400}), errors=[], wraps=0,
                        cpu_s=0.0, unanswered_frames=0, payments_written=None)
        report = report_module.build(merged, RunSettings(duration_s=2.0), small_workload, "switch", "fsync",
                                     "release", 0.25)
        assert report["throughput_per_s"] == 300.0          # 600 accepted in 2 s
        assert report["answered_per_s"] == 500.0
        assert report["busy_share"] == 0.4
        assert "300 payments/s accepted" in report_module.summary_text(report)

    def test_compare_refuses_a_file_that_is_not_a_report(self, tmp_path):
        bogus = tmp_path / "bogus.json"
        bogus.write_text("{}")
        result = CliRunner().invoke(bench, ["compare", str(bogus), str(bogus)])
        assert result.exit_code != 0 and "not a load report" in result.output

    def test_batch_past_the_frame_item_limit_is_a_usage_error(self, tmp_path):
        workload = tmp_path / "w.json"
        workload.write_text("{}")
        result = CliRunner().invoke(bench, ["run", "--workload", str(workload), "--batch",
                                            str(limits.BATCH_FRAME_ITEMS_MAX + 1)])
        assert result.exit_code == 2 and "--batch" in result.output

    def test_depth_past_the_in_flight_limit_is_a_usage_error(self, tmp_path):
        workload = tmp_path / "w.json"
        workload.write_text("{}")
        result = CliRunner().invoke(bench, ["run", "--workload", str(workload), "--depth",
                                            str(limits.IN_FLIGHT_REQUESTS_MAX + 1)])
        assert result.exit_code == 2 and "--depth" in result.output

    def test_summary_names_codes_and_the_generator_cost(self):
        text = report_module.summary_text(_report(1_000.0, 400) | {"connections": 1, "duration_s": 1.0,
                                                                   "generator_cpu_us_per_payment": 2.0})
        assert "OK 10" in text and "500,000/s" in text

    def test_workload_command_writes_both_files(self, tmp_path):
        result = CliRunner().invoke(bench, ["workload", "--out", str(tmp_path), "--payers", "20", "--merchants", "5",
                                            "--wallets", "1"])
        assert result.exit_code == 0, result.output
        assert fixture.load_workload(tmp_path / "workload.json")["payers"] == 20
        assert (tmp_path / "switch.toml").exists()

    def test_workload_command_takes_the_largest_funding_scale_and_refuses_one_more(self, tmp_path):
        scale_max = model.funding_scale_max(1, 20)
        arguments = ["workload", "--payers", "20", "--merchants", "5", "--wallets", "1", "--funding-scale"]
        result = CliRunner().invoke(bench, arguments + [str(scale_max), "--out", str(tmp_path / "at")])
        assert result.exit_code == 0, result.output
        assert fixture.load_workload(tmp_path / "at" / "workload.json")["funding_scale"] == scale_max
        result = CliRunner().invoke(bench, arguments + [str(scale_max + 1), "--out", str(tmp_path / "past")])
        assert result.exit_code == 2 and "PostgreSQL bigint" in result.output
        assert not (tmp_path / "past").exists()

    def test_e2e_refuses_an_overflowing_funding_scale_before_starting_a_switch(self, tmp_path):
        result = CliRunner().invoke(bench, ["e2e", "--dir", str(tmp_path / "fixture"), "--payers", "20",
                                            "--merchants", "5", "--wallets", "1",
                                            "--funding-scale", str(model.funding_scale_max(1, 20) + 1)])
        assert result.exit_code == 2 and "at most" in result.output
        assert not (tmp_path / "fixture").exists()

    def test_funding_scale_zero_is_a_usage_error(self, tmp_path):
        result = CliRunner().invoke(bench, ["workload", "--out", str(tmp_path), "--funding-scale", "0"])
        assert result.exit_code == 2 and "--funding-scale" in result.output
