#!/usr/bin/env bash
# Produce, catch-up consume and the peak scenario against the partition count (100-byte
# records, Sync, one shard). For each count in PARTITIONS (default 1 100 1000 10000 100000):
# `load produce` of MESSAGES records into a kept directory, `load consume` of that directory
# (one consumer owning every partition, then a group of 3 members), and `load peak --duration
# PEAK_S`; prints a line per count and the ratio of each figure to the first count's. Catch-up
# is given in records and in bytes of log read per second: past 1,000 partitions a batch holds
# one or two records, so each record carries its batch's headers and the log grows by half. The device's own write + flush
# latency is measured once with `--compare-device` on the first peak run. SEGMENT_BYTES (default
# the tool's, 1 GiB) sets the segment size of the produce runs: sealed segments of small batches
# are rewritten by partition (Config::rewrite_sealed_segments) before the consume runs, and the
# rewrites are reported. A catch-up of 10 M records lasts about a second, so ROUNDS (default 3)
# alternating rounds of the one consumer and of a group of 3 (a new group each round) run on
# each log, with the page cache written back and dropped before each where that is allowed, and
# the medians are reported beside every round's figure.
# Usage: [SEGMENT_BYTES=N] [ROUNDS=N] perf/partition-sweep.sh [MESSAGES] [PEAK_S] [PARTITIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-2000000}
peak_s=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 100 1000 10000 100000)
cargo build --release --quiet -p floodgate-tools
bin=./target/release/floodgate
work=$(mktemp -d "${TMPDIR:-/var/tmp}/floodgate-sweep.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Writes dirty pages back and, where allowed, drops the page cache, so that each catch-up
# starts from the device.
settle() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
rows=()
compare=--compare-device
for n in "${counts[@]}"; do
  dir="$work/p$n"
  produce=$($bin load produce --dir "$dir" --partitions "$n" --messages "$messages" \
    --segment-bytes "${SEGMENT_BYTES:-1073741824}" --json)
  consumes=()
  groups=()
  for r in $(seq "${ROUNDS:-3}"); do
    settle
    consumes+=("$($bin load consume --dir "$dir" --json)")
    settle
    groups+=("$($bin load consume --dir "$dir" --group "sweep$r" --consumers 3 --json)")
  done
  rm -rf "$dir"
  peak=$($bin load peak --partitions "$n" --duration "$peak_s" $compare --json)
  compare=
  rows+=("$(python3 -c '
import json, statistics, sys
n, p, k = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
runs = [json.loads(a) for a in sys.argv[4:]]
cs, gs = runs[: len(runs) // 2], runs[len(runs) // 2 :]
def median_run(rs):
    return sorted(rs, key=lambda r: r["consume_msgs_per_s"])[(len(rs) - 1) // 2]
c, g = median_run(cs), median_run(gs)
lat = k["ack_latency_us"]
print(json.dumps({"partitions": n,
  "produce_msgs_per_s": round(p["produce_msgs_per_s"]),
  "segments_rewritten": p["rewrites"]["done"],
  "rewrites_s": round(p["rewrites"]["waited_s"], 1),
  "consume_msgs_per_s": round(c["consume_msgs_per_s"]),
  "consume_rounds": [round(r["consume_msgs_per_s"]) for r in cs],
  "consume_log_mb_per_s": round(c["read_disk_bytes"] / c["duration_s"] / 1e6),
  "consumer_cpu_ns_per_msg": round(c["consumer_cpu_ns_per_msg"]),
  "read_amplification": round(c["read_amplification"] or 0, 3),
  "group3_msgs_per_s": round(g["consume_msgs_per_s"]),
  "group3_rounds": [round(r["consume_msgs_per_s"]) for r in gs],
  "group3_read_amplification": round(g["read_amplification"] or 0, 3),
  "peak_consumed_per_s": round(k["consume_msgs_per_s"]),
  "peak_worst_second_pct": k["consume_rate_error_pct"],
  "peak_ack_p50_us": lat["p50"], "peak_ack_p99_us": lat["p99"],
  "device_flush_us_mean": round(k["flush_latency_us_mean"])}))' \
    "$n" "$produce" "$peak" "${consumes[@]}" "${groups[@]}")")
  echo "${rows[-1]}"
done
python3 - "${rows[@]}" <<'PY'
import json, sys
rs = [json.loads(a) for a in sys.argv[1:]]
base = rs[0]
for r in rs:
    print(r["partitions"], "partitions:",
          "produce x%.2f" % (r["produce_msgs_per_s"] / base["produce_msgs_per_s"]),
          "consume x%.2f" % (r["consume_msgs_per_s"] / base["consume_msgs_per_s"]),
          "(log MB/s x%.2f)" % (r["consume_log_mb_per_s"] / base["consume_log_mb_per_s"]),
          "group of 3 x%.2f" % (r["group3_msgs_per_s"] / base["consume_msgs_per_s"]),
          "peak p99 x%.2f" % (r["peak_ack_p99_us"] / base["peak_ack_p99_us"]))
PY
