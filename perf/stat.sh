#!/usr/bin/env bash
# Hardware and software counters of one load run (perf stat), per message: instructions,
# cycles, cache misses, context switches and CPU migrations divided by the records produced
# or consumed. Usage: perf/stat.sh [load arguments...]   (default: produce --messages 5000000)
# Prints the load's own JSON line, then one JSON object of counters per message. On a VM
# without a PMU the hardware counters read "not supported" and are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || set -- produce --messages 5000000
command -v perf >/dev/null || { apt-get update >/dev/null && apt-get install -y linux-perf >/dev/null; }
cargo build --release --quiet
counters=$(mktemp ./target/stat-XXXXXX.csv)
trap 'rm -f "$counters"' EXIT
load=$(perf stat -x, -o "$counters" \
  -e instructions,cycles,cache-misses,cache-references,context-switches,cpu-migrations,task-clock \
  ./target/release/floodgate load "$@" --json)
echo "$load"
python3 - "$load" "$counters" <<'PY'
import json, sys
load = json.loads(sys.argv[1])
messages = load.get("produced") or load.get("consumed") or 1
out = {"messages": messages}
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) < 3 or not parts[0] or parts[0].startswith("<"):
        continue
    try:
        value = float(parts[0])
    except ValueError:
        continue
    unit, name = parts[1], parts[2].replace("-", "_")
    if unit == "msec":
        value, name = value * 1e6, name + "_ns"
    out[name + "_per_msg"] = round(value / messages, 3)
print(json.dumps(out))
PY
