"""An idempotent confluent-kafka producer through a crash of floodgate serve: it sends COUNT
records (values 0..COUNT-1, acks=all) at about RATE a second, printing "acked N" as deliveries
come; the test kills the server with SIGKILL mid-stream and starts it again on the same
directory and port, and the producer's retries carry on. Then every acknowledged record must
be stored, and none twice (the retries of batches stored before the kill are known to the
partitions after the restart). A record whose delivery failed may be stored or not.
Usage: confluent_crash.py HOST:PORT TOPIC COUNT RATE"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "message.timeout.ms": 120000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 200,
})
acked, failed = set(), []


def delivered(err, msg):
    if err is None:
        acked.add(int(msg.value()))
        if len(acked) % 1000 == 0:
            print("acked", len(acked), flush=True)
    else:
        failed.append(str(err))


start = time.time()
for i in range(count):
    while True:
        try:
            producer.produce(topic, value=b"%d" % i, partition=0, on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)
    ahead = start + i / rate - time.time()
    if ahead > 0:
        time.sleep(ahead)
assert producer.flush(120) == 0, "records left unsent"
print("all acked:", len(acked), "failed", len(failed), flush=True)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check",
              "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0)])
seen = {}
idle_since = time.time()
while time.time() - idle_since < 3:
    msgs = c.consume(10000, 0.5)
    if msgs:
        idle_since = time.time()
    for m in msgs:
        if m.error():
            continue
        v = int(m.value())
        seen[v] = seen.get(v, 0) + 1
c.close()
missing = sorted(acked - set(seen))
twice = sorted(v for v, n in seen.items() if n > 1)
assert not missing, "acknowledged and lost: %d, first %s" % (len(missing), missing[:5])
assert not twice, "stored twice: %d, first %s" % (len(twice), twice[:5])
print("ok: %d acked, %d stored, none lost, none twice, %d failed: %s"
      % (len(acked), len(seen), len(failed), failed[:2]), flush=True)
