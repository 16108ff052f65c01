#!/usr/bin/env bash
# The switch's end-to-end load runs, one command: the generator's own ceiling against the echo
# peer, then closed loop (16 connections, single `pay` frames and `pay_batch` frames) and open
# loop (10,000/s, the compiled sender; fsync runs also probe the bare fsync of the data disk)
# against a fresh `switch serve` under each durability, and the two open-loop senders side by
# side against the echo peer. Reports (JSON + PNG) go to OUT. See bench/load/README.md.
#
#   bench/load/run_all.sh [OUT] [PAYERS] [MERCHANTS]
#
# Environment: DURATION (s, default 10), WARMUP (s, default 2), PYTHON (default .venv/bin/python),
# BATCH_DEPTH (pay_batch frames in flight per connection against the switch, default 2),
# SENDER_ROUNDS (C/Python sender rounds against the echo peer, default 2),
# RULES (a rule set for the switch, e.g. switch/demo/rules.toml; default none), FUNDING_SCALE
# (the normally funded payers' opening balances times this, default 1000: at the model's own
# balances a closed loop drains them within seconds and then mostly measures refusals).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-var/bench-load}
# The shared model's default is 10,000 payers, but today's `switch serve` creates every configured
# account in ONE ledger batch at start-up (at most 8,190 events): 1,700 payers x 4 currencies +
# 1,000 merchants fit. Pass 10000 once the engine funds its configuration in chunks.
PAYERS=${2:-1700}
MERCHANTS=${3:-1000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PYTHON=${PYTHON:-.venv/bin/python}
FUNDING_SCALE=${FUNDING_SCALE:-1000}
FIXTURE="$OUT/fixture"
# Batch frames in flight per connection against the switch: 16 x 2 x 256 = 8,192 payments, one
# full batch. At depth 4 (16,384, two batches) the work in flight is more than the switch's 100 ms
# wait budget covers, so admission sheds part of it with BUSY by design (bench/RESULTS.md 5.2).
BATCH_DEPTH=${BATCH_DEPTH:-2}
mkdir -p "$OUT"
bench() { "$PYTHON" -m switch bench "$@"; }
common=(--warmup "$WARMUP" --duration "$DURATION" --connections 16)
rules=()
if [ -n "${RULES:-}" ]; then rules=(--rules "$RULES"); fi
fixture_options=(--payers "$PAYERS" --merchants "$MERCHANTS" --funding-scale "$FUNDING_SCALE")

# 1. The ceiling: the generator (CPU 0) against a peer that answers without work (CPU 1).
bench workload --out "$FIXTURE" "${fixture_options[@]}" "${rules[@]}"
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Not through the `bench` function: $! must be the peer's own pid for the kill below.
"$PYTHON" -m switch bench echo --port "$port" --cpu 1 > "$OUT/echo.log" 2>&1 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
"$PYTHON" - "$port" <<'WAIT'
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the echo peer did not start")
        time.sleep(0.1)
WAIT
bench run --workload "$FIXTURE/workload.json" --port "$port" --cpus 0 --target echo --durability none "${common[@]}" \
    --depth 64 --json "$OUT/ceiling-single.json"
bench run --workload "$FIXTURE/workload.json" --port "$port" --cpus 0 --target echo --durability none "${common[@]}" \
    --depth 4 --batch 256 --json "$OUT/ceiling-batch.json"
kill "$echo_pid"; trap - EXIT
# The open loop's own precision: the compiled sender and the asyncio one, alternated (echo peer on CPU 1).
"$PYTHON" bench/load/compare_senders.py "$OUT" --rounds "${SENDER_ROUNDS:-2}" --duration "$DURATION" --warmup "$WARMUP"

# 2. The switch: a fresh `switch serve` per run, pinned to the other CPU.
for durability in fsync os; do
    bench e2e --dir "$FIXTURE" --durability "$durability" "${fixture_options[@]}" \
        "${rules[@]}" "${common[@]}" --depth 64 --json "$OUT/switch-$durability-single.json" --plot "$OUT/switch-$durability-single.png"
    bench e2e --dir "$FIXTURE" --durability "$durability" "${fixture_options[@]}" \
        "${rules[@]}" "${common[@]}" --depth "$BATCH_DEPTH" --batch 256 --json "$OUT/switch-$durability-batch.json" \
        --plot "$OUT/switch-$durability-batch.png"
    bench e2e --dir "$FIXTURE" --durability "$durability" "${fixture_options[@]}" \
        "${rules[@]}" "${common[@]}" --mode open --rate 10000 --sender c --json "$OUT/switch-$durability-open10k.json" \
        --plot "$OUT/switch-$durability-open10k.png"
done

# 3. Side by side: how far each run is from the generator's own ceiling.
bench compare "$OUT/ceiling-single.json" "$OUT/switch-fsync-single.json"
bench compare "$OUT/ceiling-batch.json" "$OUT/switch-fsync-batch.json"
bench compare "$OUT/switch-os-open10k.json" "$OUT/switch-fsync-open10k.json"   # with the bare fsync rows
