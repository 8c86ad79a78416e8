"""How long a consumer group takes to rebalance when a member leaves, with the current
librdkafka (confluent-kafka) at its default settings against a Kafka-protocol broker.

Creates TOPIC with PARTITIONS partitions (if missing) and produces a few records to each, then
runs three members of a new group in threads. ROUNDS times: once the three hold every partition
between them (each some), one member closes (it leaves the group), and the time until the two
left hold every partition between them is taken; then a new third member joins for the next
round. The member leaves at a random moment within a heartbeat interval of the group settling,
since the others learn of the rebalance at their next heartbeat. Prints one JSON object: the
seconds of each round, their median and their maximum.

Usage: rebalance.py HOST:PORT [ROUNDS] [PARTITIONS] [HEARTBEAT_MS] [PROTOCOL]
  PROTOCOL: librdkafka's group.protocol, `classic` (default) or `consumer` (KIP-848, where
  the broker sets the heartbeat interval). HEARTBEAT_MS: with `classic`, librdkafka's
  heartbeat.interval.ms (default its own 3000); with `consumer`, only the span over which the
  leaving moment is spread (default 5000, Kafka's interval). Needs confluent-kafka
  (`pip install confluent-kafka`; .ci/run's venv target/ci-venv has it) and a broker that
  creates topics (`floodgate serve`, Kafka)."""
import json
import random
import statistics
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
partitions = int(sys.argv[3]) if len(sys.argv) > 3 else 12
heartbeat_ms = int(sys.argv[4]) if len(sys.argv) > 4 else None
protocol = sys.argv[5] if len(sys.argv) > 5 else "classic"
spread_ms = heartbeat_ms or (5000 if protocol == "consumer" else 3000)
topic = "rebalance-" + uuid.uuid4().hex[:8]
group = "rebalance-" + uuid.uuid4().hex[:8]

admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
    f.result(timeout=10)
producer = Producer({"bootstrap.servers": bootstrap})
for p in range(partitions):
    for i in range(10):
        producer.produce(topic, value=b"r%d" % i, partition=p)
if producer.flush(10) != 0:
    sys.exit("records not acknowledged within 10 s")


class Member:
    """A member polling in its own thread; `assigned` is what it holds now."""

    def __init__(self):
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
        if protocol == "consumer":
            conf["group.protocol"] = "consumer"
        elif heartbeat_ms is not None:
            conf["heartbeat.interval.ms"] = heartbeat_ms
        self.consumer = Consumer(conf)
        self.assigned = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer.subscribe([topic])
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def held(self):
        with self.lock:
            return set(self.assigned)

    def run(self):
        while not self.stop.is_set():
            self.consumer.poll(0.05)
            # What it holds after the poll's rebalance callbacks, under either protocol (the
            # consumer protocol's callbacks name only what is added or taken away).
            held = {p.partition for p in self.consumer.assignment()}
            with self.lock:
                self.assigned = held
        self.consumer.close()

    def leave(self):
        self.stop.set()
        self.thread.join()


def wait_until_held(members, deadline_s=60):
    """Waits until `members` hold every partition between them, each exactly once, and each
    member holds some (a member that joined is in the group's assignment, not still waiting
    for the others to learn of it)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        held = [m.held() for m in members]
        together = set().union(*held)
        if (
            len(together) == partitions
            and sum(map(len, held)) == partitions
            and all(held)
        ):
            return time.monotonic()
        time.sleep(0.005)
    sys.exit(f"the group did not settle within {deadline_s} s")


members = [Member() for _ in range(3)]
seconds = []
try:
    for _ in range(rounds):
        wait_until_held(members)
        time.sleep(random.uniform(0, spread_ms / 1000))
        leaving = members.pop()
        start = time.monotonic()
        leaving.leave()
        seconds.append(wait_until_held(members) - start)
        members.append(Member())
finally:
    for m in members:
        m.leave()
print(json.dumps({
    "partitions": partitions,
    "protocol": protocol,
    "heartbeat_interval_ms": (heartbeat_ms or 3000) if protocol == "classic" else None,
    "rebalance_s": [round(s, 3) for s in seconds],
    "median_s": round(statistics.median(seconds), 3),
    "max_s": round(max(seconds), 3),
}))
