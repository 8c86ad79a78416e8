"""A member of a consumer group (confluent-kafka, the current librdkafka) for
perf/paced-group.sh: consumes TOPIC in GROUP until it has seen nothing for IDLE seconds after
START_BY, and prints one JSON object: records received per whole second of the wall clock.
Usage: paced_group_member.py HOST:PORT TOPIC GROUP SECONDS"""
import json
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
c = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,
    "session.timeout.ms": 10000,
})
c.subscribe([topic])
per_second = {}
end = time.time() + seconds
while time.time() < end:
    for msg in c.consume(num_messages=2000, timeout=0.1):
        if msg.error():
            continue
        second = int(time.time())
        per_second[second] = per_second.get(second, 0) + 1
c.close()
print(json.dumps({"per_second": per_second}))
