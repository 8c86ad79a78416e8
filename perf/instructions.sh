#!/usr/bin/env bash
# Instructions per record at 1 and at 10,000 partitions, by thread (producer, shard writer,
# segment helper), counted by callgrind: the same on a quiet or a busy host, where wall-clock
# ratios swing by a third from run to run. The portable backend (valgrind does not run
# io_uring), 64 MiB segments so a short run crosses several rolls; per-record costs of the
# index (one entry per batch) do not depend on the segment size, per-run costs (one per
# partition and segment) are overstated 16x against the default 1 GiB.
# Usage: perf/instructions.sh [MESSAGES] [PARTITIONS...]   (defaults: 2000000, 1 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-2000000}
shift || true
[[ $# -gt 0 ]] || set -- 1 10000
command -v valgrind >/dev/null || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }
cargo build --release --quiet
out=$(mktemp -d ./target/instructions-XXXXXX)
trap 'rm -rf "$out"' EXIT
for p in "$@"; do
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$p" \
    ./target/release/floodgate load produce --messages "$messages" --partitions "$p" \
    --backend portable --segment-bytes 67108864 --no-pin --json >/dev/null 2>"$out/log.$p" &
done
wait
python3 - "$out" "$messages" "$@" <<'PY'
import glob, json, re, sys
out, messages, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def threads(p):
    # One file per thread: its name (the first function it ran that names it) and its total.
    per = {}
    for f in glob.glob(f"{out}/cg.{p}-*"):
        text = open(f).read()
        total = int(re.search(r"^summary: (\d+)", text, re.M).group(1))
        if "floodgate::shard::writer::Writer::" in text:
            name = "writer"
        elif "floodgate::shard::prepare::run" in text:
            name = "helper"
        elif "::producer_thread" in text:
            name = "producer"
        else:
            name = "other"
        per[name] = per.get(name, 0) + total
    return per
rows = {p: threads(p) for p in parts}
names = ["producer", "writer", "helper", "other"]
for p, per in rows.items():
    line = {n: round(per.get(n, 0) / messages) for n in names}
    line["total"] = round(sum(per.values()) / messages)
    print(json.dumps({"partitions": int(p), "instructions_per_record": line}))
if len(parts) == 2:
    a, b = (sum(rows[p].values()) for p in parts)
    print(json.dumps({"ratio": round(a / b, 3)}))
PY
