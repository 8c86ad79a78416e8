# Shared by perf/brokers.sh and perf/rebalance-brokers.sh: starts and stops one broker at a
# time on 127.0.0.1:$port, each on a fresh directory under $work. The caller sets `bin` (the
# floodgate binary) and sources this file from the project's root.
lib=$PWD/target/kafka-broker/lib

kafka_jars() { # Kafka's jars from Maven Central into $lib, once
  [ -e "$lib/kafka_2.13-4.1.1.jar" ] ||
    mvn -q -B -f perf/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$lib"
}

mkdir -p "$PWD/target"
work=$(mktemp -d "$PWD/target/brokers.XXXXXX")
server=
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=19092

wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

start_floodgate() { # durability [more serve flags]
  "$bin" serve --dir "$work/fg" --listen 127.0.0.1:$port --metrics-listen none \
    --durability "$@" 2>"$work/server.log" &
  server=$!
  wait_port $port
}

start_kafka() { # extra server.properties lines
  local dir=$work/kafka
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
$1
EOF
  local java=(java -Xms1g -Xmx1g -cp "$lib/*" -Dlog4j2.configurationFile="$PWD/perf/kafka/log4j2.yaml")
  local id
  id=$("${java[@]}" kafka.tools.StorageTool random-uuid)
  "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" --standalone >/dev/null
  "${java[@]}" kafka.Kafka "$dir/server.properties" 2>"$work/server.log" >&2 &
  server=$!
  wait_port $port
}

stop_server() {
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=
  rm -rf "$work/fg" "$work/kafka"
}

