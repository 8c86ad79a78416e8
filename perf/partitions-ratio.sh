#!/usr/bin/env bash
# Throughput with 10,000 partitions as a ratio of 1 partition (100-byte records, Sync), the two
# run alternately RUNS times (default 5) so both see the same machine; prints each pair and
# the medians. Usage: perf/partitions-ratio.sh [RUNS] [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
messages=${2:-10000000}
cargo build --release --quiet
results=()
for i in $(seq "$runs"); do
  one=$(./target/release/floodgate load produce --messages "$messages" --partitions 1 --json)
  many=$(./target/release/floodgate load produce --messages "$messages" --partitions 10000 --json)
  results+=("$(python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"one_msgs_per_s": round(a["produce_msgs_per_s"]), "many_msgs_per_s": round(b["produce_msgs_per_s"]),
  "ratio": round(b["produce_msgs_per_s"] / a["produce_msgs_per_s"], 3),
  "one_cpu_ns_per_msg": a["cpu_ns_per_msg"], "many_cpu_ns_per_msg": b["cpu_ns_per_msg"]}))' "$one" "$many")")
  echo "run $i: ${results[-1]}"
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rs = [json.loads(a) for a in sys.argv[1:]]
print("median:", json.dumps({k: statistics.median(r[k] for r in rs) for k in rs[0]}))
PY
