"""The TCP server: connections, handshake, limits, batching, graceful shutdown.

One `Connection` (an asyncio BufferedProtocol) per client reads straight into
its FrameBuffer.  The complete pay / pay_batch frames at its front become ONE
FrameRun (the pipeline's `cut` finds them, its `run_frames` runs them and
writes all their answers into one bytes): no Python object per frame on the
payment path.  Any other frame is cut into a Request of its own.  All
connections feed one queue; a single batch task takes everything queued (up to
server_batch_events_max events), runs it through `Engine.execute_batch` in one
worker thread, then `Engine.write_batch` (one commit) in another (optionally
while the next batch executes: SWITCH_WRITE_OVERLAP=1), and only then writes the
answers.  Meanwhile the event loop keeps reading and queueing.  Answers on one connection go out in request order.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import ssl as ssl_module
import sys
import time
from typing import Any, Callable, NamedTuple

from core_ext import limits
from core_ext.codes import Code
from switch import protocol
from switch.config import Config, Participant
from switch.metrics import OpsStats
from switch.protocol import FrameBuffer, ProtocolError, Request
from switch.engine import OP_RAW_PAY, OP_RAW_RUN, Encoded, EncodedRun

log = logging.getLogger("switch.server")

# Under the default 5 ms switch interval the commit thread waits milliseconds for the
# GIL while the event loop is busy (PERF_NOTES: p50 11 ms -> 0.8 ms at 0.1 ms).
SWITCH_INTERVAL_SECONDS = 0.0001

HANDSHAKE, OPEN, DRAINING, CLOSED = "handshake", "open", "draining", "closed"
# Admission predicts the wait of the work ahead as its commits x the fixed cost of one commit (the write:
# mostly the fsync) plus its ledger events x their execution cost, all at twice the learnt costs: a shared
# machine drifts 2x within seconds and the event loop's own work between batches is in neither cost.
# Measured under a tenfold overload (bench/overload.py, fsync): with the rule before (one rate) planning
# for the plain rate left 3-12% of batches waiting past the budget, for half of it 0.5-2%; with this one,
# doubling only the per-event cost left up to 28%, doubling both is as good as the rule before
# (bench/RESULTS.md section 7).
COMMIT_RATE_HEADROOM = 2
# The learnt costs move a quarter of the way to each new batch's, so one slow fsync or one lucky batch
# moves them little; a slower execution of a batch at least half full is believed at once (safety first).
COST_SMOOTHING = 4
# A smaller batch counts as at most this many times the learnt cost per event: on a shared machine one
# runs 20-30x slower now and then (the engine thread preempted, measured in a closed loop), and believing
# it shed a closed loop that one commit carries; a lasting slowdown is still learnt within a few batches.
SMALL_BATCH_COST_RISE_MAX = 2


class ServerLimits:
    """The server's limits, defaulting to core_ext/limits.py; tests shrink them."""

    def __init__(self, connections_max: int = limits.CONNECTIONS_MAX,
                 in_flight_requests_max: int = limits.IN_FLIGHT_REQUESTS_MAX,
                 in_flight_bytes_max: int = limits.IN_FLIGHT_BYTES_MAX,
                 busy_answers_held_max: int = limits.BUSY_ANSWERS_HELD_MAX,
                 write_buffer_bytes_high: int = limits.WRITE_BUFFER_BYTES_HIGH,
                 write_stall_ms_max: int = limits.WRITE_STALL_MS_MAX,
                 write_buffer_bytes_max: int = limits.WRITE_BUFFER_BYTES_MAX,
                 handshake_timeout_ms: int = limits.HANDSHAKE_TIMEOUT_MS,
                 handshakes_max: int = limits.HANDSHAKES_MAX,
                 batch_events_max: int = limits.SERVER_BATCH_EVENTS_MAX,
                 queue_events_max: int = limits.SERVER_QUEUE_EVENTS_MAX,
                 queue_wait_ms_max: int = limits.SERVER_QUEUE_WAIT_MS_MAX,
                 frame_bytes_max: int = limits.FRAME_BYTES_MAX) -> None:
        self.connections_max = connections_max
        self.in_flight_requests_max = in_flight_requests_max
        self.in_flight_bytes_max = in_flight_bytes_max
        self.busy_answers_held_max = busy_answers_held_max
        self.write_buffer_bytes_high = write_buffer_bytes_high
        self.write_stall_ms_max = write_stall_ms_max
        self.write_buffer_bytes_max = write_buffer_bytes_max
        self.handshake_timeout_ms = handshake_timeout_ms
        self.handshakes_max = handshakes_max
        self.batch_events_max = batch_events_max
        self.queue_events_max = queue_events_max
        self.queue_wait_ms_max = queue_wait_ms_max
        self.frame_bytes_max = frame_bytes_max


class Connection(asyncio.BufferedProtocol):
    """One client: the handshake, then requests into the server's queue."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.limits = server.limits
        self.buffer = FrameBuffer(self.limits.frame_bytes_max)
        self.transport: asyncio.Transport | None = None
        self.state = HANDSHAKE
        self.participant: Participant | None = None
        self.nonce = protocol.new_nonce()
        self.in_flight = 0
        # Frame bytes of each unanswered request or FrameRun, oldest first (answers come in order).
        self.in_flight_sizes: collections.deque[int] = collections.deque()
        self.in_flight_bytes = 0
        # One slot per request (or FrameRun) of this connection in the server's queue or a running
        # batch, oldest first: None, or the BUSY answers of requests shed after it, each as
        # (its frames, the requests they answer), written right after its answer.
        self.answers_owed: collections.deque[list[tuple[bytes, int]] | None] = collections.deque()
        # BUSY answers with nothing earlier owed: written together once the frames of a read are cut.
        self.busy_unsent: list[bytes] = []
        self.busy_unsent_requests = 0           # the frames those answers answer (a FrameRun: several)
        self.busy_held = 0                      # BUSY answers (requests or FrameRuns) in answers_owed
        self.shed_count = 0                     # requests of this connection shed with BUSY
        self.reading_paused = False
        self.writing_paused = False
        self.behind_at_last_answer = False      # writing was paused when the last answers were written
        self.closing_code: int | None = None   # a fatal error waiting for earlier answers
        self._timer: asyncio.TimerHandle | None = None
        self.peer = None

    # ---- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        if self.server.stopping or len(self.server.connections) >= self.limits.connections_max \
                or len(self.server.handshaking) >= self.limits.handshakes_max:
            code = Code.SHUTTING_DOWN if self.server.stopping else Code.TOO_MANY_CONNECTIONS
            self.state = CLOSED
            transport.write(protocol.pack_frame(protocol.response(protocol.CONNECTION_REQUEST_ID, code)))
            transport.close()
            return
        self.server.connections.add(self)
        self.server.handshaking.add(self)
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes_high)
        transport.write(protocol.pack_frame(protocol.challenge_message(self.server.config.name, self.nonce)))
        self._timer = self.server.loop.call_later(
            self.limits.handshake_timeout_ms / 1000, self._fail, Code.HANDSHAKE_TIMEOUT)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer.writable()

    def buffer_updated(self, nbytes: int) -> None:
        self.buffer.wrote(nbytes)
        shed_before = self.shed_count
        self._drain_frames()
        if self.shed_count != shed_before and not self.reading_paused:
            self._yield_to_batches()

    def eof_received(self) -> bool:
        # Half-close: the client sent everything. Answer what is in flight, then close.
        self._cancel_timer()
        if self.state == OPEN:
            self._drain_frames(ignore_in_flight_limit=True)
        if self.in_flight == 0 or self.state == HANDSHAKE:
            self.state = CLOSED
            return False
        self.state = DRAINING
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self._cancel_timer()
        self.server.connections.discard(self)
        self.server.handshaking.discard(self)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests, and cut it
        # off if it stays that way, so it can never make the server buffer without bound.
        self.writing_paused = True
        self._pause_reading()
        self._cancel_timer()
        self._timer = self.server.loop.call_later(self.limits.write_stall_ms_max / 1000, self._cut_off_slow_reader)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.behind_at_last_answer = False
        self._cancel_timer()
        self._maybe_resume_reading()

    # ---- frames ----------------------------------------------------------------------

    def _drain_frames(self, ignore_in_flight_limit: bool = False) -> None:
        self._cut_frames(ignore_in_flight_limit)
        if self.busy_unsent:
            self._write_busy()

    def _cut_frames(self, ignore_in_flight_limit: bool) -> None:
        while self.state in (HANDSHAKE, OPEN) and self.closing_code is None:
            if self._in_flight_full() and not ignore_in_flight_limit:
                self._pause_reading()
                return
            if self.state == OPEN and self.server.cut is not None:
                run = self._take_run(ignore_in_flight_limit)
                if run is not None:
                    self._submit(run, run.body_bytes, run.count)
                    continue
            try:
                body = self.buffer.next_frame()
            except ProtocolError as error:
                self._fail(error.code)
                return
            if body is None:
                return
            if self.state == HANDSHAKE:
                self._authenticate(body)
            else:
                self._submit(self.server.request_of(body), len(body))

    def _take_run(self, ignore_in_flight_limit: bool) -> protocol.FrameRun | None:
        """The pay frames at the buffer's front as one FrameRun, within what the in-flight limits
        still allow (checked before each frame, as for single frames) and one batch's events."""
        if ignore_in_flight_limit:
            frames_max = bytes_budget = sys.maxsize
        else:
            frames_max = self.limits.in_flight_requests_max - self.in_flight
            bytes_budget = self.limits.in_flight_bytes_max - self.in_flight_bytes
        # Within the queue's bound too, so a run is never too big to be accepted (shed as one).
        events_max = min(self.limits.batch_events_max, self.limits.queue_events_max)
        return self.buffer.take_run(self.server.cut, frames_max, bytes_budget, events_max)

    def _authenticate(self, body: bytes) -> None:
        try:
            auth = protocol.decode_auth(protocol.unpack_body(body))
        except ProtocolError as error:
            self._fail(error.code)
            return
        participant = self.server.config.participants.get(auth.participant_id)
        secret = participant.secret if participant is not None else None
        if not protocol.verify_mac(secret, self.nonce, auth.mac):
            log.warning("authentication failed for participant %d from %s", auth.participant_id, self.peer)
            self._fail(Code.AUTHENTICATION_FAILED)
            return
        self._cancel_timer()
        self.participant = participant
        self.state = OPEN
        self.server.handshaking.discard(self)
        welcome = {"participant_id": participant.id, "role": participant.role}
        self.transport.write(protocol.pack_frame(protocol.response(protocol.CONNECTION_REQUEST_ID, Code.OK, welcome)))

    def _submit(self, request: Request, frame_bytes: int, requests: int = 1) -> None:
        self.in_flight += requests
        self.in_flight_sizes.append(frame_bytes)
        self.in_flight_bytes += frame_bytes
        self.server.submit(self, request)

    def _in_flight_full(self) -> bool:
        """Unanswered requests bound both in count and in bytes: a connection can hold at most
        in_flight_bytes_max (plus one frame) of the server's memory, whatever its frames hold; and
        BUSY answers held behind earlier ones, so a flood is shed a bounded number per batch."""
        return (self.in_flight >= self.limits.in_flight_requests_max
                or self.in_flight_bytes >= self.limits.in_flight_bytes_max
                or self.busy_held >= self.limits.busy_answers_held_max)

    # ---- answers and errors ------------------------------------------------------------

    def answered(self, requests: int, units: int) -> None:
        """`requests` frames answered (written, or dropped with the connection closed), queued as
        `units` Requests and FrameRuns."""
        self.in_flight -= requests
        for _ in range(units):
            self.in_flight_bytes -= self.in_flight_sizes.popleft()
        if self._too_far_behind():
            self._cut_off_slow_reader()
            return
        if self.closing_code is not None and self.in_flight == 0:
            self._close_with(self.closing_code)
            return
        self._maybe_resume_reading()

    def _yield_to_batches(self) -> None:
        """While shedding, one read per turn of the event loop: uvloop reads a readable socket up to 32
        times in a row, and eight flooding connections then keep the loop cutting and shedding frames
        for up to a second before it takes the finished batch's answers (measured: bench/overload.py)."""
        self._pause_reading()
        self.server.loop.call_soon(self._maybe_resume_reading)

    def _write_busy(self) -> None:
        """One write for the BUSY answers of a read (a flood is shed at a syscall per read, not per frame)."""
        frames, self.busy_unsent = self.busy_unsent, []
        requests, self.busy_unsent_requests = self.busy_unsent_requests, 0
        if self.state != CLOSED and not self.transport.is_closing():
            self.transport.write(b"".join(frames))
        self.answered(requests, len(frames))

    def _fail(self, code: int) -> None:
        """A fatal error: answer it with request id 0 after every earlier answer, then close."""
        if self.state == CLOSED or self.closing_code is not None:
            return
        self._pause_reading()
        self.closing_code = code
        if self.in_flight == 0:
            self._close_with(code)

    def _close_with(self, code: int) -> None:
        self._cancel_timer()
        if self.state != CLOSED and not self.transport.is_closing():
            self.transport.write(protocol.pack_frame(protocol.response(protocol.CONNECTION_REQUEST_ID, code)))
            self.transport.close()
        self.state = CLOSED

    def _too_far_behind(self) -> bool:
        """More than write_buffer_bytes_max unsent after answers written while the client was already
        behind (past write_buffer_bytes_high at the previous answers).  One burst of answers to a client
        that was keeping up may overshoot freely; a client that stopped reading is cut at its next
        answers instead of making the switch hold them for write_stall_ms_max."""
        if self.state == CLOSED:
            return False
        was_behind, self.behind_at_last_answer = self.behind_at_last_answer, self.writing_paused
        return was_behind and self.transport.get_write_buffer_size() > self.limits.write_buffer_bytes_max

    def _cut_off_slow_reader(self) -> None:
        self._cancel_timer()
        log.warning("%s: %s, %d bytes unsent", self.peer, Code.SLOW_READER.name, self.transport.get_write_buffer_size())
        self.state = CLOSED
        self.transport.abort()

    def close_after_answers(self) -> None:
        """Graceful shutdown: take every complete frame already received, then close when answered."""
        if self.state == HANDSHAKE:
            self._close_with(Code.SHUTTING_DOWN)
            return
        if self.state == OPEN:
            self._drain_frames(ignore_in_flight_limit=True)
            self._pause_reading()
            self.state = DRAINING
            if self.in_flight == 0:
                self.transport.close()
                self.state = CLOSED

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.reading_paused = True

    def _maybe_resume_reading(self) -> None:
        if (self.reading_paused and self.state in (HANDSHAKE, OPEN) and not self.writing_paused
                and self.closing_code is None and not self._in_flight_full()):
            self.reading_paused = False
            self.transport.resume_reading()
            # Frames that arrived while paused are already in the buffer.
            self._drain_frames()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TakenBatch(NamedTuple):
    """A batch taken from the queue: its (connection, request) pairs, their ledger events, when it
    started and when its oldest request arrived (its wait is measured from then)."""
    items: list
    events: int
    started_ns: int
    oldest_queued_ns: int


class Server:
    """Accepts wallets and runs their requests in batches through one engine."""

    def __init__(self, engine: Any, config: Config, server_limits: ServerLimits | None = None,
                 ssl_context: ssl_module.SSLContext | None = None) -> None:
        self.engine = engine
        self.config = config
        # The pipeline's header check: pay / pay_batch bodies go to it undecoded (its C reader decodes them).
        # SWITCH_FAST_PATH=0 decodes them here instead (the slow path, kept for before/after measurements).
        pipeline = getattr(engine, "pipeline", None)
        self._peek = getattr(pipeline, "peek", None)
        if os.environ.get("SWITCH_FAST_PATH", "1") == "0":
            self._peek = None
        # Runs of pay frames as one request (FrameRun); SWITCH_FRAME_RUNS=0 queues one Request per frame
        # (the path before runs, kept for side-by-side measurements).
        self.cut = getattr(pipeline, "cut", None) if self._peek is not None else None
        # A shed or failed run's answers: the code under each frame's own id, in one C pass.
        self._refuse_frames = getattr(pipeline, "refuse_frames", None)
        if os.environ.get("SWITCH_FRAME_RUNS", "1") == "0":
            self.cut = None
        self.limits = server_limits or ServerLimits()
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.handshaking: set[Connection] = set()      # connected, not yet authenticated
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[Connection, Request]] = []
        self._queued_events = 0
        self._running_events = 0        # the ledger events of the batches executing or writing, unanswered
        self._oldest_queued_ns = 0
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self._listener: asyncio.base_events.Server | None = None
        # One thread: batches run strictly one after another, off the event loop; and one more that
        # writes each executed batch (in order) while the next one runs.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="switch-commit")
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="switch-write")
        self._engine = engine if hasattr(engine, "execute_batch") else _WholeBatches(engine)
        self._writes: collections.deque[asyncio.Task] = collections.deque()
        # Batches written while the next one executes (SWITCH_WRITE_OVERLAP=1): none by default.
        # Measured with the switch on one core (bench/RESULTS.md section 5) it lost: the write's own
        # CPU then competes with the execution, and each extra commit costs its fixed CPU again.
        self._writes_ahead = 1 if os.environ.get("SWITCH_WRITE_OVERLAP", "0") == "1" else 0
        self.batches_committed = 0
        # What the recent batches cost (see _note_commit_cost): the fixed cost of one commit (its write),
        # and the execution cost per ledger event as ns / events (both decayed sums; 0 events: unknown).
        self.commit_fixed_ns = 0
        self._executed_ns = 0
        self._executed_events = 0
        # What the stats operation and the metrics port report (switch/metrics.py).
        self.ops = OpsStats()
        self.ops.connections = lambda: len(self.connections)
        self.ops.connections_max = self.limits.connections_max
        self.ops.queue_events = lambda: self._queued_events
        if hasattr(engine, "attach_operations"):
            engine.attach_operations(ops=self.ops)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self.loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._batcher = asyncio.create_task(self._run_batches(), name="switch-batcher")
        self._listener = await self.loop.create_server(
            lambda: Connection(self), host, port, ssl=self.ssl_context, backlog=1024)
        address = self._listener.sockets[0].getsockname()
        log.info("serving on %s:%d (%s)", address[0], address[1], type(self.loop).__module__)
        return address[0], address[1]

    def request_of(self, body: bytes) -> Request:
        """A pay / pay_batch body as a raw request (op OP_RAW_PAY, args = the body) for the core's
        pipeline to decode, run and encode; any other body decoded here.  The request id is read
        from the header, so a raw request shed with BUSY is still answered under its own id."""
        if self._peek is not None:
            events, request_id = self._peek(body)
            if events >= 0:
                return Request(request_id, OP_RAW_PAY, body, None, events)
        return protocol.decode_request(body)

    def submit(self, connection: Connection, request: Request) -> None:
        """Queue a request for the next batch; past the queue's bounds it is shed with BUSY."""
        if request.error is None and request.events and self._over_queue_bounds(request.events):
            self._shed(connection, request)
            return
        connection.answers_owed.append(None)
        self._queued_events += request.events
        if not self._queue:
            # The oldest waiting request's arrival: the batch that takes it reports its wait.
            self._oldest_queued_ns = time.perf_counter_ns()
        self._queue.append((connection, request))
        self._wakeup.set()

    def _shed(self, connection: Connection, request: Request) -> None:
        """Answer BUSY without queueing: as soon as the frames of this read are cut when nothing earlier
        on this connection is unanswered, else right after the last earlier answer (answers keep request
        order).  A shed request never sits in the queue or a batch: it neither delays the accepted
        requests nor waits behind them."""
        self.ops.observe_shed(request.op, request.count)
        connection.shed_count += request.count
        frame = self._frame_of(request, (Code.BUSY, None))
        owed = connection.answers_owed
        if not owed:
            connection.busy_unsent.append(frame)
            connection.busy_unsent_requests += request.count
            return
        if owed[-1] is None:
            owed[-1] = [(frame, request.count)]
        else:
            owed[-1].append((frame, request.count))
        connection.busy_held += 1

    def _over_queue_bounds(self, events: int) -> bool:
        """Past queue_events_max; or the work ahead (the queue and the batches executing or writing) is
        predicted to take longer than queue_wait_ms_max, so what is accepted is answered within about
        that time and the rest is told BUSY at once instead of waiting seconds.  An empty queue always
        takes a request (the switch keeps moving however slow its disk); before any batch has
        committed the costs are unknown, and no more than one batch may wait."""
        queued = self._queued_events + events
        if queued > self.limits.queue_events_max:
            return True
        if not self._queued_events:
            return False
        if not self._executed_events:
            return queued > self.limits.batch_events_max
        return self.predicted_wait_ns(queued) > self.limits.queue_wait_ms_max * 1_000_000

    def predicted_wait_ns(self, queued_events: int) -> int:
        """How long until `queued_events` more are committed: the batches executing or writing and the
        ones the queue needs, each with the fixed cost of a commit, plus every event ahead at its
        execution cost, all twice as learnt.  The fixed cost counts once per commit, however many events
        it carries (not folded into each event): a closed loop that a commit or two carries is not shed."""
        batch_events_max = self.limits.batch_events_max
        commits = -(-queued_events // batch_events_max) + -(-self._running_events // batch_events_max)
        events_ahead = queued_events + self._running_events
        return COMMIT_RATE_HEADROOM * (commits * self.commit_fixed_ns
                                       + events_ahead * self._executed_ns // self._executed_events)

    def _note_commit_cost(self, events: int, executed_ns: int, written_ns: int) -> None:
        """Learn a commit's fixed cost from its write and the per-event cost from its execution: a
        batch's time is both, and the rate of small batches (or of one slow fsync) folded into one
        events-per-second figure understated what a full batch carries.  The execution sums are
        weighted by events, so a small batch, dominated by the thread hop, moves them little."""
        if events <= 0 or executed_ns <= 0 or written_ns <= 0:
            return
        if not self._executed_events:
            self.commit_fixed_ns = written_ns
            self._executed_ns, self._executed_events = executed_ns, events
            return
        self.commit_fixed_ns += (written_ns - self.commit_fixed_ns) // COST_SMOOTHING
        slower = executed_ns * self._executed_events > self._executed_ns * events
        if slower and events * 2 >= self.limits.batch_events_max:
            self._executed_ns, self._executed_events = executed_ns, events
            return
        executed_ns = min(executed_ns, SMALL_BATCH_COST_RISE_MAX * self._executed_ns * events // self._executed_events)
        keep = COST_SMOOTHING - 1
        self._executed_ns = self._executed_ns * keep // COST_SMOOTHING + executed_ns
        self._executed_events = self._executed_events * keep // COST_SMOOTHING + events

    async def _run_batches(self) -> None:
        """Batches execute one after another in the engine thread; each one's write, then its
        answers, follow in the writer thread -- with SWITCH_WRITE_OVERLAP=1, while the next batch
        executes when a full one is waiting.  At most two batches are executed and unanswered at a
        time: one writing, one waiting to."""
        writes = self._writes
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                while writes and (writes[0].done() or len(writes) > self._writes_ahead
                                  or not self._full_batch_queued()):
                    await writes.popleft()
                oldest_queued_ns = self._oldest_queued_ns
                batch, events = self._take_batch()
                self._running_events += events      # executed or writing, not yet answered
                work = [(connection.participant, request) for connection, request in batch]
                taken = TakenBatch(batch, events, time.perf_counter_ns(), oldest_queued_ns)
                if self._queue:
                    self._oldest_queued_ns = taken.started_ns    # the rest arrived earlier: a lower bound
                if not self._writes_ahead and not writes:
                    await self._execute_and_write(taken, work)
                    continue
                try:
                    executed = await self.loop.run_in_executor(self._executor, self._engine.execute_batch, work)
                except Exception:
                    log.exception("engine failed on a batch of %d; rebuilding state from storage", len(batch))
                    while writes:                          # what was written stays: rebuild after it
                        await writes.popleft()
                    await self._recover()
                    failed_ns = time.perf_counter_ns() - taken.started_ns
                    self._finish(taken, [(Code.INTERNAL_ERROR, None)] * len(batch), failed_ns, 0)
                    continue
                executed_ns = time.perf_counter_ns() - taken.started_ns
                previous = writes[-1] if writes else None
                writes.append(self.loop.create_task(self._write_and_answer(taken, executed, previous, executed_ns)))

    def _full_batch_queued(self) -> bool:
        """Enough queued to execute ahead of the write in flight: at least half a batch.  With less,
        waiting for the write lets more arrive, and one commit (an fsync: a fixed cost) carries
        them all instead of two commits carrying half each."""
        return self._queued_events * 2 >= self.limits.batch_events_max

    async def _execute_and_write(self, taken: TakenBatch, work: list) -> None:
        """Without write overlap (the default): execute and write a batch in ONE hand-off to the engine
        thread.  A hand-off costs two thread wake-ups, which at low load are most of a small batch's
        time (bench/RESULTS.md 5.3); the write still runs off the event loop."""
        try:
            outcomes, executed_ns, written_ns = await self.loop.run_in_executor(
                self._executor, self._execute_then_write, work)
        except Exception:
            log.exception("engine failed on a batch of %d; rebuilding state from storage", len(work))
            outcomes, executed_ns, written_ns = [(Code.INTERNAL_ERROR, None)] * len(work), 0, 0
            await self._recover()
        if outcomes is None:                    # the write failed: memory is ahead of storage
            await self._recover()
            outcomes, written_ns = [(Code.STORAGE_FAILED, None)] * len(work), 0
        self._finish(taken, outcomes, executed_ns, written_ns)

    def _execute_then_write(self, work: list) -> tuple[list | None, int, int]:
        """In the engine thread: (outcomes, or None when the write failed; ns executing; ns writing).
        Raises when execution failed (a bug: memory may hold part of the batch)."""
        started_ns = time.perf_counter_ns()
        executed = self._engine.execute_batch(work)
        executed_ns = time.perf_counter_ns() - started_ns
        try:
            outcomes = self._engine.write_batch(executed)
        except Exception:
            log.exception("writing a batch of %d failed unexpectedly", len(work))
            outcomes = None
        return outcomes, executed_ns, time.perf_counter_ns() - started_ns - executed_ns

    async def _write_and_answer(self, taken: TakenBatch, executed: Any, previous: asyncio.Task | None,
                                executed_ns: int) -> None:
        """Write one executed batch once the batch before it is written, then answer it: never an
        answer before its batch is durable (fsync) or handed to the OS (os).  A failed write fails
        this batch and, through recover(), every batch executed on top of it.  Never raises."""
        try:
            if previous is not None:
                await previous
            write_started_ns = time.perf_counter_ns()
            outcomes = await self.loop.run_in_executor(self._writer, self._engine.write_batch, executed)
            if outcomes is None:
                await self._recover()
                outcomes = [(Code.STORAGE_FAILED, None)] * len(taken.items)
        except Exception:
            log.exception("writing a batch of %d failed unexpectedly; rebuilding state from storage",
                          len(taken.items))
            await self._recover()
            outcomes = [(Code.INTERNAL_ERROR, None)] * len(taken.items)
            write_started_ns = taken.started_ns + executed_ns
        written_ns = time.perf_counter_ns() - write_started_ns
        # Admission adds the two (with SWITCH_WRITE_OVERLAP=1 they overlap: a prediction on the safe side).
        self._finish(taken, outcomes, executed_ns, written_ns)

    async def _recover(self) -> None:
        try:
            await self.loop.run_in_executor(self._executor, self._engine.recover)
        except Exception:
            log.exception("state could not be rebuilt from storage")

    def _finish(self, taken: TakenBatch, outcomes: list, executed_ns: int, written_ns: int) -> None:
        """Answer a batch, count it, and learn its costs (not a failed one's: written_ns 0)."""
        self.batches_committed += 1
        self._answer(taken.items, outcomes)
        answered_ns = time.perf_counter_ns()
        try:
            self.ops.observe_batch(taken.items, outcomes, answered_ns - taken.started_ns,
                                   answered_ns - taken.oldest_queued_ns)
        except Exception:       # counting must never stop the batcher
            log.exception("a batch of %d could not be counted in the statistics", len(taken.items))
        self._running_events -= taken.events
        self._note_commit_cost(taken.events, executed_ns, written_ns)

    def _take_batch(self) -> tuple[list[tuple[Connection, Request]], int]:
        """Everything queued, up to batch_events_max ledger events (always at least one request),
        and those events.
        A reload_rules is a batch of its own: a rule set swap falls between two batches, so every
        payment of a batch is decided by one rule set."""
        events = 0
        count = 0
        for _, request in self._queue:
            # events == 0 first: payments never pay for the operation name comparison.
            swap = request.events == 0 and request.op == protocol.OP_RELOAD_RULES
            if count and (swap or events + request.events > self.limits.batch_events_max):
                break
            events += request.events
            count += 1
            if swap:
                break
        batch, self._queue = self._queue[:count], self._queue[count:]
        self._queued_events -= events
        return batch, events

    def _answer(self, batch: list[tuple[Connection, Request]], outcomes: list) -> None:
        """Each connection's answers in one write, in request order, each followed by the BUSY
        answers held behind it; [frames, requests, units] per connection."""
        answers: dict[Connection, list] = {}
        for (connection, request), outcome in zip(batch, outcomes):
            entry = answers.get(connection)
            if entry is None:
                entry = answers[connection] = [[], 0, 0]
            entry[0].append(self._frame_of(request, outcome))
            entry[1] += request.count
            entry[2] += 1
            shed_after = connection.answers_owed.popleft()
            if shed_after is not None:
                for frame, requests in shed_after:
                    entry[0].append(frame)
                    entry[1] += requests
                entry[2] += len(shed_after)
                connection.busy_held -= len(shed_after)
        for connection, (frames, requests, units) in answers.items():
            if connection.state != CLOSED and not connection.transport.is_closing():
                connection.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            connection.answered(requests, units)
            if connection.state == DRAINING and connection.in_flight == 0:
                connection.transport.close()
                connection.state = CLOSED

    def _frame_of(self, request: Request, outcome: Any) -> bytes:
        kind = type(outcome)
        if kind is Encoded or kind is EncodedRun:
            return outcome.frame                # the pipeline wrote it (raw pay / pay_batch frames)
        if request.op == OP_RAW_RUN:            # shed, or its batch failed: every frame gets the code
            return self._refuse_frames(request.args, outcome[0])
        return protocol.pack_frame(protocol.response(request.request_id, *outcome))

    async def reload_rules_file(self) -> tuple[int, Any]:
        """SIGHUP: re-read the configured rules file in the commit thread, so the swap falls
        between two batches; a bad file is logged and the running rule set stays."""
        code, result = await self.loop.run_in_executor(self._executor, self.engine.reload_rules_file)
        if code == Code.OK:
            log.info("SIGHUP: rule set %r loaded, hash %s", result["name"], result["hash"])
        else:
            log.error("SIGHUP: rules not reloaded: %s %s", Code(code).name, result or "")
        return code, result

    async def shutdown(self, timeout_seconds: float = 30.0) -> None:
        """Stop accepting, run and answer every request already received, close, stop the engine thread."""
        if self.stopping:
            return
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.close_after_answers()
        deadline = self.loop.time() + timeout_seconds
        while (self._queue or any(c.in_flight for c in self.connections if c.state != CLOSED)) \
                and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        for connection in list(self.connections):
            if connection.transport is not None and not connection.transport.is_closing():
                connection.transport.close()
        if self._batcher is not None:
            self._batcher.cancel()
            try:
                await self._batcher
            except asyncio.CancelledError:
                pass
        for write in self._writes:
            write.cancel()                  # only after the timeout: their connections are closed
        if self._listener is not None:
            await self._listener.wait_closed()
        self._executor.shutdown(wait=True)
        self._writer.shutdown(wait=True)


class _WholeBatches:
    """An engine with process_batch only (the tests' doubles): it writes as it executes."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def execute_batch(self, batch: list) -> list:
        return self.engine.process_batch(batch)

    @staticmethod
    def write_batch(outcomes: list) -> list:
        return outcomes

    @staticmethod
    def recover() -> None:
        """process_batch recovers by itself."""


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """uvloop when asked and installed, the stock loop otherwise."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the stock asyncio loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def tls_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl_module.SSLContext:
    """Server TLS; with a client CA, every wallet must present a certificate it signed."""
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl_module.CERT_REQUIRED
    return context


async def serve_forever(server: Server, host: str, port: int,
                        on_ready: Callable[[tuple[str, int]], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    import signal

    address = await server.start(host, port)
    if on_ready is not None:
        on_ready(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    if hasattr(server.engine, "reload_rules_file"):
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload_rules_file()))
    await stop.wait()
    log.info("signal received: finishing what was received, then closing")
    await server.shutdown()
