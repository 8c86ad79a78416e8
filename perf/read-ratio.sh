#!/usr/bin/env bash
# floodgate's catch-up read bandwidth (a consumer draining a stored backlog of 4 KiB records as
# fast as it can) as a ratio of fio's O_DIRECT sequential read on the same file system,
# measured back to back in the same run, RUNS times (default 3). Prints each run and the
# medians. SIZE sets the record size (default 4096); with SIZE=100 the msgs/s figure is the
# 100-byte catch-up rate.
# Usage: [SIZE=4096] [PARTITIONS=8] perf/read-ratio.sh [RUNS] [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
messages=${2:-500000}
size=${SIZE:-4096}
partitions=${PARTITIONS:-8}
cargo build --release --quiet
dir=$(mktemp -d ./target/read-ratio-XXXXXX)
trap 'rm -rf "$dir"' EXIT
./target/release/floodgate load produce --dir "$dir/log" --size "$size" \
  --partitions "$partitions" --messages "$messages" --json >/dev/null
results=()
for i in $(seq "$runs"); do
  fio=$(perf/fio-baseline.sh "$dir" 2G)
  load=$(./target/release/floodgate load consume --dir "$dir/log" --json)
  results+=("$(python3 -c '
import json, sys
f, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"fio_read_mb_per_s": round(f["read_mb_per_s"]), "floodgate_mb_per_s": round(l["consume_mb_per_s"]),
  "ratio": round(l["consume_mb_per_s"] / f["read_mb_per_s"], 3), "msgs_per_s": round(l["consume_msgs_per_s"])}))' "$fio" "$load")")
  echo "run $i: ${results[-1]}"
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rs = [json.loads(a) for a in sys.argv[1:]]
print("median:", json.dumps({k: statistics.median(r[k] for r in rs) for k in rs[0]}))
PY
