"""Fuzz target: the compiled payment pipeline's own msgpack reader (the server's fast path).

    python tests/fuzz/fuzz_pipeline.py -atheris_runs=20000 tests/fuzz/corpus/pipeline

The input is a frame body as a wallet sends it.  The server hands `pay` and
`pay_batch` bodies undecoded to core.Pipeline, whose compiled form reads the
msgpack in C (core_ext/_pipeline.pyx).  On fresh demo engines (the fixtures of
tests/test_server_helpers.py and tests/test_pipeline_rules.py):

* Pipeline.peek gives the same (events, request id) in both cores;
* in each core the fast path answers byte for byte what the slow path
  (switch.protocol.decode_request, the engine, pack_frame) answers;
* the compiled core's answer is the twin's, byte for byte;
* no answer is INTERNAL_ERROR (the engine turns an exception into that code,
  so an exception in the pipeline would otherwise pass unseen).
"""
from __future__ import annotations

import sys

import harness  # noqa: F401  (puts the repository on sys.path)
from harness import check

sys.path.insert(0, str(harness.ROOT / "tests"))

import core_ext  # noqa: E402
from core_ext.codes import Code  # noqa: E402
from switch import protocol  # noqa: E402
from switch.engine import OP_RAW_PAY, Encoded  # noqa: E402
from switch.protocol import Request  # noqa: E402
import test_server_helpers as fixtures  # noqa: E402
from test_pipeline_rules import make_engine  # noqa: E402

TARGET = "pipeline"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("core_ext.reference.pipeline", "switch.protocol", "__main__")
CORES = {name: core_ext.implementation(name) for name in core_ext.IMPLEMENTATIONS}


def slow_frame(impl, body: bytes) -> bytes:
    engine = make_engine(impl)
    request = protocol.decode_request(body)
    outcome, = engine.process_batch([(engine.config.participants[fixtures.WALLET_ID], request)])
    check(outcome.code != Code.INTERNAL_ERROR, "the slow path failed with INTERNAL_ERROR", body)
    return protocol.pack_frame(protocol.response(request.request_id, *outcome))


def fast_frame(impl, body: bytes) -> bytes:
    engine = make_engine(impl)
    raw = Request(0, OP_RAW_PAY, body, None, 2)
    outcome, = engine.process_batch([(engine.config.participants[fixtures.WALLET_ID], raw)])
    check(isinstance(outcome, Encoded), "the fast path did not answer an encoded frame", body, outcome)
    return outcome.frame


def test_one_input(data: bytes) -> None:
    peeks = {name: core.Pipeline.peek(data) for name, core in CORES.items()}
    check(peeks["compiled"] == peeks["reference"], "Pipeline.peek differs between the cores", data, peeks)
    if peeks["compiled"][0] < 0:
        return  # not a pay / pay_batch body: the server never takes the fast path for it
    frames = {}
    for name, core in CORES.items():
        fast, slow = fast_frame(core, data), slow_frame(core, data)
        check(fast == slow, f"{name}: the fast path answers other bytes than the slow path", data, fast, slow)
        frames[name] = fast
    check(frames["compiled"] == frames["reference"], "compiled and twin answer different bytes", data, frames)


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
