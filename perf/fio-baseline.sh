#!/usr/bin/env bash
# The device ceiling on the file system of a directory: fio O_DIRECT sequential write and read
# with 1 MiB blocks (queue depth 4, io_uring engine), and a 4 KiB write + fdatasync loop.
# Usage: perf/fio-baseline.sh [DIR] [SIZE]   (default DIR: a temporary directory under ./target)
# Prints one JSON object: {"write_mb_per_s":..,"read_mb_per_s":..,"write_fdatasync_4k_us":..,
# "fdatasync_p99_us":..} (the last: the fdatasync calls' own p99).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get install -y fio >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y fio >/dev/null; }; }
dir=${1:-$(mktemp -d ./target/fio-XXXXXX)}
size=${2:-4G}
mkdir -p "$dir"
file="$dir/fio-baseline.dat"
trap 'rm -f "$file"' EXIT
common=(--filename="$file" --size="$size" --direct=1 --ioengine=io_uring --output-format=json)
write=$(fio --name=seqwrite --rw=write --bs=1M --iodepth=4 "${common[@]}")
read=$(fio --name=seqread --rw=read --bs=1M --iodepth=4 "${common[@]}")
sync=$(fio --name=fsync4k --rw=write --bs=4k --iodepth=1 --fdatasync=1 --filename="$file" \
  --size=64M --runtime=5 --time_based --direct=1 --ioengine=psync --output-format=json)
python3 - "$write" "$read" "$sync" <<'PY'
import json, sys
w, r, s = (json.loads(a) for a in sys.argv[1:4])
out = {
    "write_mb_per_s": w["jobs"][0]["write"]["bw_bytes"] / 1e6,
    "read_mb_per_s": r["jobs"][0]["read"]["bw_bytes"] / 1e6,
    "write_fdatasync_4k_us": 1e6 / max(s["jobs"][0]["write"]["iops"], 1e-9),
}
# The fdatasync calls' own p99, where fio reports it.
sync_pct = s["jobs"][0].get("sync", {}).get("lat_ns", {}).get("percentile", {})
if "99.000000" in sync_pct:
    out["fdatasync_p99_us"] = sync_pct["99.000000"] / 1e3
print(json.dumps(out))
PY
