#!/usr/bin/env bash
# The peak scenario across processes: `floodgate serve` with the consumer group's rate set on
# the server (--group-rate logistics=RATE), the load tool producing PRODUCE_RATE records/s of
# 100 bytes (acks=all, Sync) into PARTITIONS partitions for SECONDS, and MEMBERS members of
# group "logistics" in their own processes (confluent-kafka, perf/paced_group_member.py)
# draining the backlog. Prints the producer's JSON, then the group's records per second of the
# wall clock (all members together) and the worst whole second's deviation from RATE while the
# backlog lasted. Needs confluent-kafka in PYTHON (default python3).
# Usage: perf/paced-group.sh [SECONDS] [PARTITIONS] [MEMBERS] [RATE] [PRODUCE_RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
partitions=${2:-8}
members=${3:-2}
rate=${4:-80000}
produce_rate=${5:-500000}
python=${PYTHON:-python3}
cargo build --release --quiet -p floodgate-tools
bin=$PWD/target/release/floodgate
source perf/brokers-lib.sh
start_floodgate sync --group-rate "logistics=$rate" --group-initial-rebalance-delay-ms 1000
# Its own server, not another one listening there.
kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
# The topic first, so the members subscribe to all its partitions at once.
"$bin" load produce --bootstrap 127.0.0.1:$port --partitions "$partitions" --messages 1 --json \
  >/dev/null
pids=()
for m in $(seq 1 "$members"); do
  "$python" perf/paced_group_member.py 127.0.0.1:$port load logistics "$((seconds + 15))" \
    >"$work/member-$m.json" &
  pids+=($!)
done
sleep 2
"$bin" load produce --bootstrap 127.0.0.1:$port --partitions "$partitions" \
  --duration "$seconds" --rate "$produce_rate" --json | tee "$work/produce.json"
for p in "${pids[@]}"; do wait "$p"; done
"$python" - "$rate" "$work"/member-*.json <<'PY'
import json, sys
rate = float(sys.argv[1])
total = {}
for path in sys.argv[2:]:
    for second, n in json.load(open(path))["per_second"].items():
        total[int(second)] = total.get(int(second), 0) + n
seconds = sorted(total)
# Whole seconds while the backlog lasted: from the second after the first to the one before
# the rate was last reached.
busy = [s for s in seconds if total[s] >= rate * 0.5]
inner = [s for s in seconds if busy and busy[0] < s < busy[-1]]
worst = max((abs(total[s] - rate) / rate for s in inner), default=float("nan"))
print(json.dumps({"group_per_second": [total[s] for s in seconds],
                  "whole_seconds": len(inner),
                  "consumed_per_s": sum(total[s] for s in inner) / max(len(inner), 1),
                  "worst_second_off": worst}))
PY
