#!/usr/bin/env bash
# floodgate serve beside a Kafka 4.1 broker on this machine, driven by the same client
# (`floodgate load produce|consume --bootstrap`): for each broker and durability, produce
# MESSAGES records of 100 bytes into PARTITIONS partitions with acks=all (paced at RATE
# records/s if RATE > 0, else as fast as possible), then drain them with one consumer.
# Brokers, each on a fresh directory under ./target:
#   floodgate-sync      floodgate serve --durability sync: acks once written and flushed
#   floodgate-interval  floodgate serve --durability interval:1000: acks once written
#   kafka               Kafka's defaults (one broker, KRaft): acks once in the page cache
#   kafka-flush         Kafka with log.flush.interval.messages=1: a flush per produced batch
# Kafka's jars come from Maven Central into target/kafka-broker/lib (perf/kafka/pom.xml).
# Prints one JSON object per run, with the device's 4 KiB write + fdatasync latency of the
# same minute beside it (perf/fio-baseline.sh), then a table.
# Usage: perf/brokers.sh [MESSAGES] [PARTITIONS] [RATE] [BROKERS...]
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-5000000}
partitions=${2:-8}
rate=${3:-0}
shift $(( $# > 3 ? 3 : $# ))
brokers=("$@")
[ ${#brokers[@]} -gt 0 ] || brokers=(floodgate-sync floodgate-interval kafka kafka-flush)
cargo build --release --quiet -p floodgate-tools
bin=$PWD/target/release/floodgate
source perf/brokers-lib.sh
[[ " ${brokers[*]} " != *" kafka"* ]] || kafka_jars

rows=()
for broker in "${brokers[@]}"; do
  case $broker in
    floodgate-sync) start_floodgate sync ;;
    floodgate-interval) start_floodgate interval:1000 ;;
    kafka) start_kafka "" ;;
    kafka-flush) start_kafka "log.flush.interval.messages=1" ;;
    *) echo "unknown broker $broker" >&2; exit 2 ;;
  esac
  device=$(perf/fio-baseline.sh "$work/fio" 256M)
  produce=$("$bin" load produce --bootstrap 127.0.0.1:$port --partitions "$partitions" \
    --messages "$messages" --rate "$rate" --json)
  consume=$("$bin" load consume --bootstrap 127.0.0.1:$port --json)
  stop_server
  rows+=("$(python3 -c '
import json, sys
b, d, p, c = sys.argv[1], *(json.loads(a) for a in sys.argv[2:])
lat = p["ack_latency_us"]
print(json.dumps({"broker": b, "partitions": p["partitions"], "target_rate": p["target_rate"],
  "produce_msgs_per_s": round(p["produce_msgs_per_s"]), "ack_p50_us": lat["p50"],
  "ack_p99_us": lat["p99"], "ack_max_us": lat["max"], "errors": p["errors"],
  "consume_msgs_per_s": round(c["consume_msgs_per_s"]), "consumed": c["consumed"],
  "device_write_fdatasync_4k_us": round(d["write_fdatasync_4k_us"]),
  "device_fdatasync_p99_us": round(d.get("fdatasync_p99_us", 0))}))' \
    "$broker" "$device" "$produce" "$consume")")
  echo "${rows[-1]}"
done
python3 - "${rows[@]}" <<'PY'
import json, sys
print("| broker | produce msgs/s | ack p50 µs | ack p99 µs | consume msgs/s | device 4 KiB write + fdatasync µs (mean; fdatasync p99) |")
print("|---|---|---|---|---|---|")
for r in map(json.loads, sys.argv[1:]):
    print(f"| {r['broker']} | {r['produce_msgs_per_s']:,} | {r['ack_p50_us']:,} | "
          f"{r['ack_p99_us']:,} | {r['consume_msgs_per_s']:,} | "
          f"{r['device_write_fdatasync_4k_us']} ({r['device_fdatasync_p99_us']}) |")
PY
