#!/usr/bin/env bash
# How long a 3-member consumer group takes to rebalance when a member leaves, on floodgate
# serve and on a Kafka 4.1 broker (KRaft, defaults) started the same way on this machine, with
# the same client: perf/rebalance.py (confluent-kafka at its defaults, or with
# heartbeat.interval.ms HEARTBEAT_MS) runs ROUNDS rounds on a fresh broker of each kind.
# PROTOCOL `consumer` runs the members with group.protocol=consumer (KIP-848), where each
# broker sets the heartbeat interval (floodgate 1 s, Kafka 5 s, their defaults).
# Prints one JSON object per broker, then a table.
# Usage: perf/rebalance-brokers.sh [ROUNDS] [PARTITIONS] [HEARTBEAT_MS] [PROTOCOL]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
partitions=${2:-12}
protocol=${4:-classic}
heartbeat=${3:-$([ "$protocol" = consumer ] && echo 5000 || echo 3000)}
python=${FLOODGATE_PYTHON:-target/ci-venv/bin/python}
cargo build --release --quiet -p floodgate-tools
bin=$PWD/target/release/floodgate
source perf/brokers-lib.sh
kafka_jars
rows=()
for broker in floodgate kafka; do
  case $broker in
    floodgate) start_floodgate sync ;;
    kafka) start_kafka "" ;;
  esac
  result=$("$python" perf/rebalance.py 127.0.0.1:$port "$rounds" "$partitions" "$heartbeat" "$protocol")
  stop_server
  rows+=("$(python3 -c 'import json, sys; r = json.loads(sys.argv[2]); r["broker"] = sys.argv[1]; print(json.dumps(r))' "$broker" "$result")")
  echo "${rows[-1]}"
done
python3 - "${rows[@]}" <<'PY'
import json, sys
print("| broker | rounds | median s | max s | each round, s |")
print("|---|---|---|---|---|")
for r in map(json.loads, sys.argv[1:]):
    each = ", ".join(f"{s:.2f}" for s in r["rebalance_s"])
    print(f"| {r['broker']} | {len(r['rebalance_s'])} | {r['median_s']:.2f} | {r['max_s']:.2f} | {each} |")
PY
