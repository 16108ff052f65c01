#!/usr/bin/env bash
# The switch beside its baselines, one command, one run, same workload and machine:
#   (1) the switch with its compiled core,
#   (2) the same server with the pure-Python reference twin of the core (SWITCH_PUREPYTHON=1),
#   (3) a PostgreSQL ledger posting the same payments with a stored function (synchronous_commit=on).
# Each writes the load generator's JSON shape; `switch bench compare` prints each as a ratio to (1).
#
#   bench/baselines/run_side_by_side.sh [OUT]
#
# Environment: PAYERS (default 1700), MERCHANTS (1000), DURATION (s, 10), WARMUP (s, 2),
# CONNECTIONS (16), DURABILITY (fsync), PYTHON (.venv/bin/python), FUNDING_SCALE (1000: the normally
# funded payers' opening balances times this, the same for the switch and PostgreSQL, so that
# neither drains them within seconds and then mostly measures refusals).
# (1) and (2) use single `pay` frames pipelined 64 deep per connection; (3) one stored-function
# call per payment on each connection (asyncpg cannot pipeline), then one call per 100 payments.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-var/bench-baselines}
PAYERS=${PAYERS:-1700}
MERCHANTS=${MERCHANTS:-1000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-16}
DURABILITY=${DURABILITY:-fsync}
PYTHON=${PYTHON:-.venv/bin/python}
FUNDING_SCALE=${FUNDING_SCALE:-1000}
mkdir -p "$OUT"
load=(--payers "$PAYERS" --merchants "$MERCHANTS" --funding-scale "$FUNDING_SCALE" --warmup "$WARMUP"
      --duration "$DURATION" --connections "$CONNECTIONS" --durability "$DURABILITY" --depth 64)

"$PYTHON" -m switch bench e2e --dir "$OUT/fixture" "${load[@]}" --json "$OUT/switch-compiled.json"
SWITCH_PUREPYTHON=1 "$PYTHON" -m switch bench e2e --dir "$OUT/fixture" "${load[@]}" --json "$OUT/switch-twin.json"
"$PYTHON" -m bench.baselines.postgres.run --json "$OUT/postgres.json" --payers "$PAYERS" \
    --merchants "$MERCHANTS" --funding-scale "$FUNDING_SCALE" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS"
"$PYTHON" -m bench.baselines.postgres.run --json "$OUT/postgres-batch100.json" --payers "$PAYERS" \
    --merchants "$MERCHANTS" --funding-scale "$FUNDING_SCALE" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --payments-per-call 100

for other in switch-twin postgres postgres-batch100; do
    echo "== switch-compiled vs $other"
    "$PYTHON" -m switch bench compare "$OUT/switch-compiled.json" "$OUT/$other.json"
done
