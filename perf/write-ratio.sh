#!/usr/bin/env bash
# floodgate's write bandwidth with 4 KiB records (Sync durability) as a ratio of fio's O_DIRECT
# sequential write on the same file system, measured back to back in the same run, RUNS times
# (default 3). Prints each run and the medians.
# Usage: [FLOODGATE_ARGS="--no-prezero"] perf/write-ratio.sh [RUNS] [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
messages=${2:-500000}
cargo build --release --quiet
dir=$(mktemp -d ./target/ratio-XXXXXX)
trap 'rm -rf "$dir"' EXIT
results=()
for i in $(seq "$runs"); do
  fio=$(perf/fio-baseline.sh "$dir" 2G)
  load=$(./target/release/floodgate load produce --dir "$dir/log-$i" --size 4096 \
    --messages "$messages" ${FLOODGATE_ARGS:-} --json)
  rm -rf "$dir/log-$i"
  results+=("$(python3 -c '
import json, sys
f, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"fio_write_mb_per_s": round(f["write_mb_per_s"]), "floodgate_mb_per_s": round(l["produce_mb_per_s"]),
  "ratio": round(l["produce_mb_per_s"] / f["write_mb_per_s"], 3), "msgs_per_s": round(l["produce_msgs_per_s"]),
  "ack_p99_us": l["ack_latency_us"]["p99"]}))' "$fio" "$load")")
  echo "run $i: ${results[-1]}"
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rs = [json.loads(a) for a in sys.argv[1:]]
print("median:", json.dumps({k: statistics.median(r[k] for r in rs) for k in rs[0]}))
PY
