# cython: language_level=3
"""The load generator's compiled open-loop sender (issue #6): on time to microseconds.

Not part of the payment core (nothing in the switch imports it) and so without a reference
twin: `switch bench --sender python` is the pure-Python open loop it is compared against.

The Python side connects and authenticates every connection and pre-encodes its frames
(switch/loadgen/frames.py); `OpenLoop` takes the sockets' file descriptors and copies of the
frame buffers, and two threads run it without the GIL:

- `send()`: sleeps with clock_nanosleep(TIMER_ABSTIME) until `spin_ns` before the next frame is
  due, spins the rest, then writes every frame that is due on every connection (non-blocking;
  a socket that would block keeps its frames due, so the lateness shows in their latency) and
  pushes each frame's intended instant into its connection's FIFO.  A full FIFO (as many
  frames in flight as the switch takes, `fifo_capacity`) holds that connection's sends back.
- `receive()`: epoll on every connection; cuts the length-prefixed answers, checks the request
  id, pops the intended instant (answers come in request order on a connection,
  docs/PROTOCOL.md 3), peeks the result code (each item's, in an OK `pay_batch` answer) and
  records latency = arrival - intended instant in log-linear histograms: one for the whole
  window (0.1% resolution) and a coarser one per interval for the timeline.

The FIFOs are single-producer single-consumer rings with acquire/release counters.  The
histograms are exported as (value_us, count) pairs, merged into the HDR Recorder by the caller.
"""
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint8_t, INT64_MAX
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memmove, strerror

cdef extern from * nogil:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <sys/epoll.h>
    #include <sys/prctl.h>
    #include <sys/socket.h>
    #include <time.h>
    #include <unistd.h>

    static inline int64_t loadsend_now_ns(void) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    }
    static inline void loadsend_sleep_until(int64_t instant_ns) {
        struct timespec until = {instant_ns / 1000000000LL, instant_ns % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {}
    }
    /* Linux rounds a sleeping thread's wake-up by its timer slack (50 us by default). */
    static inline void loadsend_no_timer_slack(void) { prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); }
    static inline int loadsend_msb(uint64_t value) { return 63 - __builtin_clzll(value); }
    static inline int64_t loadsend_load(int64_t *counter) { return __atomic_load_n(counter, __ATOMIC_ACQUIRE); }
    static inline void loadsend_store(int64_t *counter, int64_t value) { __atomic_store_n(counter, value, __ATOMIC_RELEASE); }
    static inline int64_t loadsend_add(int64_t *counter, int64_t value) { return __atomic_fetch_add(counter, value, __ATOMIC_ACQ_REL); }
    static inline int loadsend_errno(void) { return errno; }
    static inline int loadsend_would_block(void) { return errno == EAGAIN || errno == EWOULDBLOCK; }
    static inline int loadsend_set_nonblocking(int fd) {
        int flags = fcntl(fd, F_GETFL);
        return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    """
    int64_t loadsend_now_ns()
    void loadsend_sleep_until(int64_t instant_ns)
    void loadsend_no_timer_slack()
    int loadsend_msb(uint64_t value)
    int64_t loadsend_load(int64_t *counter)
    void loadsend_store(int64_t *counter, int64_t value)
    int64_t loadsend_add(int64_t *counter, int64_t value)
    int loadsend_errno()
    int loadsend_would_block()
    int loadsend_set_nonblocking(int fd)
    ctypedef long ssize_t
    ssize_t send(int fd, const void *buffer, size_t length, int flags)
    ssize_t read(int fd, void *buffer, size_t count)
    int MSG_NOSIGNAL, EINTR
    int EPOLLIN, EPOLL_CTL_ADD, EPOLL_CTL_DEL
    union epoll_data_t:
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int close(int fd)

include "limits.pxi"

cdef enum:
    CODES = 1024                 # result codes are below 1000 (core_ext/codes.py)
    FINE_BITS = 11               # 1024 sub-buckets an octave: 0.1%, like the HDR recorder's 3 digits
    COARSE_BITS = 7              # 64 an octave (1.6%): enough for the timeline's points
    VALUE_BITS = 42              # latencies clamped to 2^42 ns (73 minutes)
    RECEIVE_CHUNK = 65536
    POLL_MS = 5                  # the receiver's epoll timeout: how often it checks for the end
    ERRORS_MAX = 50
    ERROR_BYTES = 160
    RETRY_NS = 50000             # a socket that would block, or a full FIFO: look again this much later

# ---- log-linear histograms of nanoseconds ----------------------------------------------------

cdef struct Histogram:
    int bits
    int64_t size
    int64_t *counts


cdef inline int64_t _bucket(int bits, int64_t value) noexcept nogil:
    """Values below 2^bits are exact; above, each octave has 2^(bits-1) buckets."""
    cdef int shift
    if value < (1 << bits):
        return value if value > 0 else 0
    if value >= (<int64_t>1 << VALUE_BITS):
        value = (<int64_t>1 << VALUE_BITS) - 1
    shift = loadsend_msb(<uint64_t>value) - (bits - 1)
    return (<int64_t>shift << (bits - 1)) + (value >> shift)


cdef inline int64_t _bucket_middle(int bits, int64_t index) noexcept nogil:
    cdef int64_t half = 1 << (bits - 1), shift
    if index < (1 << bits):
        return index
    shift = index // half - 1
    return ((index - shift * half) << shift) + ((<int64_t>1 << shift) >> 1)


cdef int _histogram_init(Histogram *histogram, int bits) noexcept nogil:
    histogram.bits = bits
    histogram.size = _bucket(bits, (<int64_t>1 << VALUE_BITS) - 1) + 1
    histogram.counts = <int64_t *>calloc(histogram.size, sizeof(int64_t))
    return 0 if histogram.counts != NULL else -1


cdef inline void _record(Histogram *histogram, int64_t value_ns, int64_t count) noexcept nogil:
    histogram.counts[_bucket(histogram.bits, value_ns)] += count


cdef list _histogram_pairs(Histogram *histogram):
    """(value in microseconds, count) for every bucket that holds something."""
    cdef int64_t index
    pairs = []
    if histogram.counts == NULL:
        return pairs
    for index in range(histogram.size):
        if histogram.counts[index]:
            pairs.append((max(1, _bucket_middle(histogram.bits, index) // 1000), histogram.counts[index]))
    return pairs


# ---- one connection ----------------------------------------------------------------------------

cdef struct Connection:
    int fd
    char *frames                 # this connection's frames back to back (a private copy: ids are patched)
    int64_t *frame_ends          # frame i ends at frame_ends[i] (and starts at frame_ends[i - 1] or 0)
    int64_t frame_count
    int64_t *id_offsets          # where every transfer id starts in `frames` (patched on a wrap)
    int64_t id_count
    int64_t first_due_ns         # the schedule: frame n (ever) is due at first_due_ns + n * interval_ns
    int64_t interval_ns
    # sender only
    int64_t last_frame           # frames due before the end: the sender stops after them
    int64_t sent                 # frames ever wholly written (the FIFO holds those not yet answered)
    int64_t next_frame           # ring index of the next frame to write
    int64_t written_bytes        # of the frames from `write_start`, already in the socket
    int64_t epoch
    # the FIFO of intended instants: the sender writes `pushed`, the receiver `popped`
    int64_t *fifo
    int64_t pushed
    int64_t popped
    int64_t dead                 # set by either thread when the socket failed: both skip it
    # receiver only
    char *receive_buffer
    int64_t receive_capacity
    int64_t receive_length
    int64_t expected_request_id


cdef class OpenLoop:
    """One open-loop run over already authenticated sockets; `send` and `receive` on two threads."""

    cdef Connection *connections
    cdef int connection_count
    cdef int64_t items_per_frame
    cdef int64_t fifo_capacity
    cdef int64_t spin_ns
    cdef int64_t measure_start_ns, measure_end_ns, interval_ns, drain_end_ns
    cdef int64_t catch_up_end_ns   # the sender stops writing late frames here: half the drain
    cdef int interval_count
    cdef Histogram total, send_lag
    cdef Histogram *intervals
    cdef int64_t by_code[CODES]
    cdef int64_t other_codes
    cdef int64_t completed         # answered payments, warm-up included (the progress line)
    cdef int64_t sent_in_window    # frames written in the measured window (whenever they were due)
    cdef int64_t wraps
    cdef int64_t sending           # 1 while the sender runs: the receiver stays until it stops
    cdef int64_t stop_requested
    cdef char _error_text[ERRORS_MAX][ERROR_BYTES]
    cdef int epoll_fd
    cdef int64_t retry_ns
    cdef int64_t _error_count

    def __cinit__(self):
        self.connections = NULL
        self.intervals = NULL

    def __init__(self, list connections, int items_per_frame, int64_t measure_start_ns, int64_t measure_end_ns,
                 int64_t interval_ns, int64_t drain_timeout_ns, int fifo_capacity, int64_t spin_ns=30_000):
        """`connections`: (fd, frames bytes, frame_ends, id_offsets, first_due_ns, interval_ns) per
        connection; the fd is the caller's (not closed here) and must be non-blocking."""
        if not connections:
            raise ValueError("an open loop needs at least one connection")
        if not 1 <= fifo_capacity <= <int>LIMIT_IN_FLIGHT_REQUESTS_MAX:
            raise ValueError(f"fifo_capacity must be 1..{LIMIT_IN_FLIGHT_REQUESTS_MAX}")
        if items_per_frame < 1 or interval_ns < 1 or measure_end_ns <= measure_start_ns:
            raise ValueError("items_per_frame and interval must be positive and the window not empty")
        self.items_per_frame, self.fifo_capacity, self.spin_ns = items_per_frame, fifo_capacity, spin_ns
        self.measure_start_ns, self.measure_end_ns, self.interval_ns = measure_start_ns, measure_end_ns, interval_ns
        self.drain_end_ns = measure_end_ns + drain_timeout_ns
        # Late frames are written up to half the drain, so the last of them have the other half to be answered.
        self.catch_up_end_ns = measure_end_ns + drain_timeout_ns // 2
        self.interval_count = <int>((measure_end_ns - measure_start_ns + interval_ns - 1) // interval_ns)
        self.sending = 1     # until send() returns: a receiver started first must not see the run as over
        self.connections = <Connection *>calloc(len(connections), sizeof(Connection))
        self.intervals = <Histogram *>calloc(self.interval_count, sizeof(Histogram))
        if self.connections == NULL or self.intervals == NULL:
            raise MemoryError()
        if _histogram_init(&self.total, FINE_BITS) or _histogram_init(&self.send_lag, FINE_BITS):
            raise MemoryError()
        for index, (fd, frames, frame_ends, id_offsets, first_due_ns, connection_interval_ns) in enumerate(connections):
            self.connection_count = index + 1      # first: __dealloc__ frees what a failing _add allocated
            self._add(index, fd, frames, frame_ends, id_offsets, first_due_ns, connection_interval_ns)

    cdef _add(self, int index, int fd, bytes frames, frame_ends, id_offsets, int64_t first_due_ns,
              int64_t interval_ns):
        cdef Connection *connection = &self.connections[index]
        if not frame_ends or frame_ends[len(frame_ends) - 1] != len(frames) or interval_ns < 1:
            raise ValueError("frame_ends must end at the buffer's end, and the interval be positive")
        if loadsend_set_nonblocking(fd) < 0:
            raise OSError(loadsend_errno(), "fcntl O_NONBLOCK")
        connection.fd = fd
        connection.first_due_ns, connection.interval_ns = first_due_ns, interval_ns
        connection.frame_count, connection.id_count = len(frame_ends), len(id_offsets)
        connection.frames = <char *>malloc(len(frames))
        connection.frame_ends = <int64_t *>malloc(len(frame_ends) * sizeof(int64_t))
        connection.id_offsets = <int64_t *>malloc((len(id_offsets) or 1) * sizeof(int64_t))
        connection.fifo = <int64_t *>malloc(self.fifo_capacity * sizeof(int64_t))
        connection.receive_capacity = RECEIVE_CHUNK * 2
        connection.receive_buffer = <char *>malloc(connection.receive_capacity)
        if (connection.frames == NULL or connection.frame_ends == NULL or connection.id_offsets == NULL
                or connection.fifo == NULL or connection.receive_buffer == NULL):
            raise MemoryError()
        memcpy(connection.frames, <char *>frames, len(frames))
        for position, end in enumerate(frame_ends):
            connection.frame_ends[position] = end
        for position, offset in enumerate(id_offsets):
            if not 0 <= offset <= len(frames) - 4:
                raise ValueError("a transfer id offset is outside the frames")
            connection.id_offsets[position] = offset
        connection.expected_request_id = 1

    def __dealloc__(self):
        cdef int index
        if self.connections != NULL:
            for index in range(self.connection_count):
                free(self.connections[index].frames)
                free(self.connections[index].frame_ends)
                free(self.connections[index].id_offsets)
                free(self.connections[index].fifo)
                free(self.connections[index].receive_buffer)
            free(self.connections)
        if self.intervals != NULL:
            for index in range(self.interval_count):
                free(self.intervals[index].counts)
            free(self.intervals)
        free(self.total.counts)
        free(self.send_lag.counts)

    # ---- errors: written by either thread (a fixed table), read after both stopped ----

    cdef void _error(self, int connection, const char *what, int error_number) noexcept nogil:
        cdef int64_t slot = loadsend_add(&self._error_count, 1)
        cdef const char *separator = b": "
        cdef const char *reason = b""
        if error_number:
            reason = strerror(error_number)
        else:
            separator = b""
        if slot < ERRORS_MAX:
            snprintf(self._error_text[slot], ERROR_BYTES, b"connection %d: %s%s%s", connection, what, separator, reason)

    cdef void _kill(self, int index, const char *what, int error_number) noexcept nogil:
        if not loadsend_load(&self.connections[index].dead):
            loadsend_store(&self.connections[index].dead, 1)
            self._error(index, what, error_number)

    # ---- the sender --------------------------------------------------------------------------------

    def send(self, int64_t end_ns):
        """Send every frame due before `end_ns` (CLOCK_MONOTONIC) on schedule, or as soon after as
        the FIFO and the socket let it (up to half the drain); call it on its own thread."""
        with nogil:
            self._send_loop(end_ns)
        loadsend_store(&self.sending, 0)

    cdef void _send_loop(self, int64_t end_ns) noexcept nogil:
        """Until every frame due before `end_ns` is written (a stalled thread catches up after
        it: the count is the schedule's), its connection failed, or half the drain has passed."""
        cdef int64_t now_ns, next_ns
        cdef int index
        loadsend_no_timer_slack()
        for index in range(self.connection_count):
            self._set_last_frame(&self.connections[index], end_ns)
        while not loadsend_load(&self.stop_requested):
            now_ns = loadsend_now_ns()
            next_ns, self.retry_ns = INT64_MAX, INT64_MAX
            for index in range(self.connection_count):
                next_ns = min(next_ns, self._send_due(index, now_ns))
            if (next_ns == INT64_MAX and self.retry_ns == INT64_MAX) or now_ns >= self.catch_up_end_ns:
                return
            if self.retry_ns < next_ns - self.spin_ns:
                # Only a blocked socket or a full FIFO to look at again: sleep, leave the CPU to the receiver.
                loadsend_sleep_until(self.retry_ns)
                continue
            if next_ns - self.spin_ns > loadsend_now_ns():
                loadsend_sleep_until(next_ns - self.spin_ns)
            while loadsend_now_ns() < next_ns:
                pass    # the last stretch: a timer wakes up tens of microseconds late, a spin does not

    cdef void _set_last_frame(self, Connection *connection, int64_t end_ns) noexcept nogil:
        connection.last_frame = 0
        if end_ns > connection.first_due_ns:
            connection.last_frame = (end_ns - connection.first_due_ns + connection.interval_ns - 1) // connection.interval_ns

    cdef int64_t _send_due(self, int index, int64_t now_ns) noexcept nogil:
        """Write this connection's due frames; returns when its next frame is due (INT64_MAX when
        it has none left, or cannot send now: then `retry_ns` says when to look again)."""
        cdef Connection *connection = &self.connections[index]
        cdef int64_t due, frames, start, length, written
        if loadsend_load(&connection.dead) or connection.sent >= connection.last_frame:
            return INT64_MAX
        due = (now_ns - connection.first_due_ns) // connection.interval_ns + 1 if now_ns >= connection.first_due_ns else 0
        due = min(due, connection.last_frame)
        if due <= connection.sent:
            return connection.first_due_ns + connection.sent * connection.interval_ns
        # The frames due that the FIFO has room for, up to the ring's end: one write.
        frames = min(due - connection.sent, self.fifo_capacity - (connection.sent - loadsend_load(&connection.popped)),
                     connection.frame_count - connection.next_frame)
        if frames <= 0:
            self.retry_ns = min(self.retry_ns, now_ns + RETRY_NS)
            return INT64_MAX
        start = connection.frame_ends[connection.next_frame - 1] if connection.next_frame else 0
        length = connection.frame_ends[connection.next_frame + frames - 1] - start
        self._publish(connection, frames)
        written = send(connection.fd, connection.frames + start + connection.written_bytes,
                       length - connection.written_bytes, MSG_NOSIGNAL)
        if written < 0 and not loadsend_would_block() and loadsend_errno() != EINTR:
            self._kill(index, b"send failed", loadsend_errno())
            return INT64_MAX
        self._sent(connection, start, connection.written_bytes + max(written, 0))
        if connection.sent < due:
            self.retry_ns = min(self.retry_ns, now_ns + RETRY_NS)
            return INT64_MAX
        if connection.sent >= connection.last_frame:
            return INT64_MAX
        return connection.first_due_ns + connection.sent * connection.interval_ns

    cdef void _publish(self, Connection *connection, int64_t frames) noexcept nogil:
        """Put the intended instants of the frames about to be written into the FIFO *before*
        the write: the answer to a frame can arrive before send() returns.  `_sent` then takes
        back those not wholly written (the receiver cannot have seen answers to them)."""
        cdef int64_t frame
        for frame in range(connection.sent, connection.sent + frames):
            connection.fifo[frame % self.fifo_capacity] = connection.first_due_ns + frame * connection.interval_ns
        loadsend_store(&connection.pushed, connection.sent + frames)

    cdef void _sent(self, Connection *connection, int64_t start, int64_t written) noexcept nogil:
        """Count every frame the socket now holds wholly; a partly written one stays next, its
        written bytes in `written_bytes`."""
        cdef int64_t now_ns = loadsend_now_ns(), intended_ns, consumed = 0
        while connection.frame_ends[connection.next_frame] - start <= written:
            consumed = connection.frame_ends[connection.next_frame] - start
            intended_ns = connection.first_due_ns + connection.sent * connection.interval_ns
            if self.measure_start_ns <= intended_ns < self.measure_end_ns:
                _record(&self.send_lag, now_ns - intended_ns, 1)
            if self.measure_start_ns <= now_ns < self.measure_end_ns:
                self.sent_in_window += 1
            connection.sent += 1
            connection.next_frame += 1
            if connection.next_frame == connection.frame_count:
                break    # a write never crosses the ring's end
        connection.written_bytes = written - consumed
        loadsend_store(&connection.pushed, connection.sent)
        if connection.next_frame == connection.frame_count:
            self._wrap(connection)

    cdef void _wrap(self, Connection *connection) noexcept nogil:
        """Start the ring again with fresh transfer ids: XOR each id's first 4 bytes with the epoch."""
        cdef int64_t index
        cdef uint8_t *id_bytes
        cdef uint32_t change
        connection.next_frame = 0
        connection.epoch += 1
        change = <uint32_t>(connection.epoch ^ (connection.epoch - 1))
        for index in range(connection.id_count):
            id_bytes = <uint8_t *>connection.frames + connection.id_offsets[index]
            id_bytes[0] ^= (change >> 24) & 0xFF
            id_bytes[1] ^= (change >> 16) & 0xFF
            id_bytes[2] ^= (change >> 8) & 0xFF
            id_bytes[3] ^= change & 0xFF
        self.wraps += 1

    def stop(self):
        """Ask both loops to end now (a failed run)."""
        loadsend_store(&self.stop_requested, 1)

    # ---- the receiver --------------------------------------------------------------------------------

    def receive(self):
        """Read answers until every frame sent is answered (after the sender stopped), every
        connection failed, or the drain deadline; call it on its own thread."""
        cdef int status
        with nogil:
            status = self._receive_loop()
        if status:
            raise OSError(status, "epoll")

    cdef int _receive_loop(self) noexcept nogil:
        cdef int epoll_fd = epoll_create1(0), index, ready, event
        self.epoll_fd = epoll_fd
        cdef epoll_event events[64]
        cdef epoll_event wanted
        if epoll_fd < 0:
            return loadsend_errno()
        for index in range(self.connection_count):
            wanted.events = EPOLLIN
            wanted.data.u64 = index
            if epoll_ctl(epoll_fd, EPOLL_CTL_ADD, self.connections[index].fd, &wanted) < 0:
                close(epoll_fd)
                return loadsend_errno()
        while not loadsend_load(&self.stop_requested) and not self._finished():
            ready = epoll_wait(epoll_fd, events, 64, POLL_MS)
            for event in range(max(ready, 0)):
                self._read(<int>events[event].data.u64)
        close(epoll_fd)
        return 0

    cdef bint _finished(self) noexcept nogil:
        cdef int index
        if loadsend_now_ns() >= self.drain_end_ns:
            return True
        if loadsend_load(&self.sending):
            return False
        for index in range(self.connection_count):
            if not loadsend_load(&self.connections[index].dead) and \
                    loadsend_load(&self.connections[index].pushed) != self.connections[index].popped:
                return False
        return True

    cdef void _read(self, int index) noexcept nogil:
        cdef Connection *connection = &self.connections[index]
        cdef ssize_t got
        cdef int64_t used
        if loadsend_load(&connection.dead):
            epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, connection.fd, NULL)   # else epoll reports it forever
            return
        if connection.receive_capacity - connection.receive_length < RECEIVE_CHUNK:
            if self._grow(connection, connection.receive_length + RECEIVE_CHUNK):
                self._kill(index, b"out of memory for an answer", 0)
                return
        got = read(connection.fd, connection.receive_buffer + connection.receive_length,
                   connection.receive_capacity - connection.receive_length)
        if got == 0 or (got < 0 and not loadsend_would_block() and loadsend_errno() != EINTR):
            self._kill(index, b"closed by the peer" if got == 0 else b"read failed", loadsend_errno() if got else 0)
            epoll_ctl(self.epoll_fd, EPOLL_CTL_DEL, connection.fd, NULL)
            return
        if got < 0:
            return
        connection.receive_length += got
        used = self._answers(index, connection, loadsend_now_ns())
        if used < 0:
            return
        memmove(connection.receive_buffer, connection.receive_buffer + used, connection.receive_length - used)
        connection.receive_length -= used

    cdef int _grow(self, Connection *connection, int64_t capacity) noexcept nogil:
        cdef char *grown = <char *>realloc(connection.receive_buffer, capacity)
        if grown == NULL:
            return -1
        connection.receive_buffer, connection.receive_capacity = grown, capacity
        return 0

    cdef int64_t _answers(self, int index, Connection *connection, int64_t now_ns) noexcept nogil:
        """Every whole answer in the buffer; returns the bytes used, or -1 when the connection died."""
        cdef const uint8_t *data = <const uint8_t *>connection.receive_buffer
        cdef int64_t position = 0, length
        while connection.receive_length - position >= 4:
            length = (<int64_t>data[position] << 24) | (data[position + 1] << 16) | (data[position + 2] << 8) \
                | data[position + 3]
            if length < 1 or length > <int64_t>LIMIT_FRAME_BYTES_MAX:
                self._kill(index, b"answer frame length out of range", 0)
                return -1
            if connection.receive_length - position - 4 < length:
                if self._grow(connection, length + 4 + RECEIVE_CHUNK):
                    self._kill(index, b"out of memory for an answer", 0)
                    return -1
                break
            if self._answer(index, connection, data + position + 4, length, now_ns):
                return -1
            position += 4 + length
        return position

    cdef int _answer(self, int index, Connection *connection, const uint8_t *body, int64_t length,
                     int64_t now_ns) noexcept nogil:
        """One answer `[request_id, code, result]`: match it to the oldest frame in flight."""
        cdef Reader reader
        cdef int64_t request_id, code, intended_ns, items, item, item_code
        cdef bint measured
        reader.data, reader.end = body, body + length
        if _array_header(&reader) != 3 or _uint(&reader, &request_id) or _uint(&reader, &code):
            self._kill(index, b"an answer is not [request_id, code, result]", 0)
            return -1
        if request_id == 0:
            self._error(index, b"the switch answered about the connection itself (request id 0)", 0)
            return 0
        if connection.popped == loadsend_load(&connection.pushed):
            self._kill(index, b"an answer with no request in flight", 0)
            return -1
        if request_id != connection.expected_request_id:
            self._error(index, b"an answer out of request order", 0)
        connection.expected_request_id = request_id % connection.frame_count + 1
        intended_ns = connection.fifo[connection.popped % self.fifo_capacity]
        loadsend_store(&connection.popped, connection.popped + 1)
        measured = self.measure_start_ns <= intended_ns < self.measure_end_ns
        items = self.items_per_frame
        loadsend_add(&self.completed, items)
        if not measured:
            return 0
        _record(&self.total, now_ns - intended_ns, items)
        self._record_interval(intended_ns, now_ns - intended_ns, items)
        if items == 1 or code != 0:
            self._count(code, items)
            return 0
        if _array_header(&reader) != items:
            self._error(index, b"a batch answer without one entry per item", 0)
            return 0
        for item in range(items):
            if _array_header(&reader) != 2 or _uint(&reader, &item_code) or _skip(&reader, 0):
                self._error(index, b"a batch answer entry is not [code, detail]", 0)
                return 0
            self._count(item_code, 1)
        return 0

    cdef inline void _count(self, int64_t code, int64_t count) noexcept nogil:
        if 0 <= code < CODES:
            self.by_code[code] += count
        else:
            self.other_codes += count

    cdef void _record_interval(self, int64_t intended_ns, int64_t latency_ns, int64_t count) noexcept nogil:
        cdef int64_t slot = (intended_ns - self.measure_start_ns) // self.interval_ns
        cdef Histogram *histogram = &self.intervals[slot]
        if histogram.counts == NULL and _histogram_init(histogram, COARSE_BITS):
            return
        _record(histogram, latency_ns, count)

    # ---- what the caller reads (after both threads returned) --------------------------------------

    def completed_payments(self) -> int:
        return loadsend_load(&self.completed)

    def export(self) -> dict:
        """Histograms as (value_us, count) pairs, codes, errors, and what stayed unanswered."""
        cdef int index
        unanswered = unsent = 0
        for index in range(self.connection_count):
            unanswered += self.connections[index].pushed - self.connections[index].popped
            unsent += max(0, self.connections[index].last_frame - self.connections[index].sent)
        errors = [self._error_text[slot].decode("utf-8", "replace") for slot in range(min(self._error_count, ERRORS_MAX))]
        if self._error_count > ERRORS_MAX:
            errors.append(f"... and {self._error_count - ERRORS_MAX} more")
        if self.other_codes:
            errors.append(f"{self.other_codes} payments answered with a code past {CODES}")
        return {
            "total": _histogram_pairs(&self.total),
            "intervals": {slot: _histogram_pairs(&self.intervals[slot]) for slot in range(self.interval_count)
                          if self.intervals[slot].counts != NULL},
            "send_lag": _histogram_pairs(&self.send_lag),
            "by_code": {code: self.by_code[code] for code in range(CODES) if self.by_code[code]},
            "frames_written_in_window": self.sent_in_window,
            "unanswered_frames": unanswered,
            "unsent_frames": unsent,
            "wraps": self.wraps,
            "errors": errors,
        }


# ---- a minimal msgpack reader: array headers, unsigned ints, and skipping anything else ---------

cdef struct Reader:
    const uint8_t *data
    const uint8_t *end


cdef inline int64_t _big_endian(Reader *reader, int size) noexcept nogil:
    """The next `size` bytes as an unsigned big-endian number, or -1 when they are not there."""
    cdef int64_t value = 0
    cdef int index
    if reader.end - reader.data < size:
        return -1
    for index in range(size):
        value = (value << 8) | reader.data[index]
    reader.data += size
    return value


cdef int64_t _array_header(Reader *reader) noexcept nogil:
    """The length of the array that starts here, or -1."""
    cdef uint8_t marker
    if reader.data >= reader.end:
        return -1
    marker = reader.data[0]
    reader.data += 1
    if 0x90 <= marker <= 0x9f:
        return marker & 0x0f
    if marker == 0xdc:
        return _big_endian(reader, 2)
    if marker == 0xdd:
        return _big_endian(reader, 4)
    return -1


cdef int _uint(Reader *reader, int64_t *value) noexcept nogil:
    """An unsigned integer of up to 32 bits into `value`; 0 on success."""
    cdef uint8_t marker
    if reader.data >= reader.end:
        return -1
    marker = reader.data[0]
    reader.data += 1
    if marker <= 0x7f:
        value[0] = marker
    elif 0xcc <= marker <= 0xce:
        value[0] = _big_endian(reader, 1 << (marker - 0xcc))
    else:
        return -1
    return 0 if value[0] >= 0 else -1


cdef int _skip(Reader *reader, int depth) noexcept nogil:
    """Step over one msgpack object of any type; 0 on success, -1 when it is cut or too deep."""
    cdef uint8_t marker
    cdef int64_t count = 0, size = 0, index
    if reader.data >= reader.end or depth > 8:
        return -1
    marker = reader.data[0]
    reader.data += 1
    if marker <= 0x7f or marker >= 0xe0 or marker in (0xc0, 0xc2, 0xc3):
        return 0
    if 0xa0 <= marker <= 0xbf:
        size = marker & 0x1f
    elif 0x80 <= marker <= 0x8f:
        count = 2 * (marker & 0x0f)
    elif 0x90 <= marker <= 0x9f:
        count = marker & 0x0f
    elif marker in (0xc4, 0xd9):
        size = _big_endian(reader, 1)
    elif marker in (0xc5, 0xda):
        size = _big_endian(reader, 2)
    elif marker in (0xc6, 0xdb):
        size = _big_endian(reader, 4)
    elif marker in (0xcc, 0xd0):
        size = 1
    elif marker in (0xcd, 0xd1):
        size = 2
    elif marker in (0xce, 0xd2, 0xca):
        size = 4
    elif marker in (0xcf, 0xd3, 0xcb):
        size = 8
    elif marker == 0xdc:
        count = _big_endian(reader, 2)
    elif marker == 0xdd:
        count = _big_endian(reader, 4)
    elif marker == 0xde:
        count = 2 * _big_endian(reader, 2)
    elif marker == 0xdf:
        count = 2 * _big_endian(reader, 4)
    else:
        return -1   # ext types: the switch never sends them
    if size < 0 or count < 0 or reader.end - reader.data < size:
        return -1
    reader.data += size
    for index in range(count):
        if _skip(reader, depth + 1):
            return -1
    return 0
