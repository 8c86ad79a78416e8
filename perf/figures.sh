#!/usr/bin/env bash
# The README's figures: each load run RUNS times (default 3), medians printed as JSON lines.
# Usage: perf/figures.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet
median() { # label, then the load command's arguments; FIGURES=substring runs only matching rows
  local label=$1; shift
  [[ -z "${FIGURES:-}" || "$label" == *"$FIGURES"* ]] || return 0
  local outs=()
  for _ in $(seq "$runs"); do outs+=("$(./target/release/floodgate load produce --json "$@")"); done
  python3 - "$label" "$*" "${outs[@]}" <<'PY'
import json, statistics, sys
label, cmd, runs = sys.argv[1], sys.argv[2], [json.loads(a) for a in sys.argv[3:]]
m = lambda f: statistics.median(f(r) for r in runs)
print(json.dumps({"workload": label, "command": "floodgate load produce " + cmd, "runs": len(runs),
  "msgs_per_s": round(m(lambda r: r["produce_msgs_per_s"])), "mb_per_s": round(m(lambda r: r["produce_mb_per_s"]), 1),
  "ack_p50_us": m(lambda r: r["ack_latency_us"]["p50"]), "ack_p99_us": m(lambda r: r["ack_latency_us"]["p99"]),
  "ack_p999_us": m(lambda r: r["ack_latency_us"]["p999"])}))
PY
}
median "100 B, Sync, 1 partition, as fast as possible" --messages 5000000 --size 100
median "100 B, Sync, 1 partition, paced at 500k msgs/s" --duration 10 --rate 500000 --size 100
median "4 KiB, Sync, 1 partition, as fast as possible" --messages 500000 --size 4096
median "100 B, Sync, 10,000 partitions, as fast as possible" --messages 5000000 --size 100 --partitions 10000
