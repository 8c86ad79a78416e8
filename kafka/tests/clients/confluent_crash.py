"""An idempotent confluent-kafka producer through a crash of floodgate serve: it sends COUNT
records (values 0..COUNT-1, acks=all) at about RATE a second, printing "acked N" as deliveries
come; the test kills the server with SIGKILL mid-stream and starts it again on the same
directory and port, and the producer's retries carry on. Then every acknowledged record must
be stored, and none twice (the retries of batches stored before the kill are known to the
partitions after the restart). A record whose delivery failed may be stored or not. Once all
are acknowledged it waits for "check" on stdin (the server is up for good), then reads the
partition to its end.
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
# The test says when the server is up for good (after its last restart).
assert sys.stdin.readline().strip() == "check"

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check",
              "enable.auto.commit": False})
_, end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=60)
c.assign([TopicPartition(topic, 0, 0)])
seen = {}
read_to = 0
deadline = time.time() + 60
while read_to < end:
    assert time.time() < deadline, "read %d of %d" % (read_to, end)
    for m in c.consume(10000, 0.5):
        if m.error():
            continue
        read_to = max(read_to, m.offset() + 1)
        v = int(m.value())
        seen[v] = seen.get(v, 0) + 1
c.close()
missing = sorted(acked - set(seen))
twice = sorted(v for v, n in seen.items() if n > 1)
assert not missing, "acknowledged and lost: %d, first %s" % (len(missing), missing[:5])
assert not twice, "stored twice: %d, first %s" % (len(twice), twice[:5])
print("ok: %d acked, %d stored, none lost, none twice, %d failed: %s"
      % (len(acked), len(seen), len(failed), failed[:2]), flush=True)
