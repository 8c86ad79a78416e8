"""A confluent-kafka consumer group member through a crash of floodgate serve: it produces
COUNT records to TOPIC (3 partitions), then consumes them as a member of a group with
PROTOCOL (`classic` or `consumer`, librdkafka's group.protocol), committing as it goes and
printing "consumed N" every 1,000 records, slowly enough that the test can kill the server with
SIGKILL mid-stream and start it again on the same directory and port. The member carries on
(it joins the group again: the server lost its membership, not its commits), every record is
delivered at least once, and the group's commits end where the partitions end.
Usage: confluent_group_crash.py HOST:PORT TOPIC COUNT PROTOCOL"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, count, protocol = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
PARTITIONS = 3
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
    f.result(10)
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
for i in range(count):
    producer.produce(topic, value=b"%d" % i, partition=i % PARTITIONS)
    producer.poll(0)
assert producer.flush(30) == 0
ends = [len(range(p, count, PARTITIONS)) for p in range(PARTITIONS)]

config = {
    "bootstrap.servers": bootstrap,
    "group.id": "crash-group-" + protocol,
    "group.protocol": protocol,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 100,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 200,
}
c = Consumer(config)
c.subscribe([topic])
seen = set()
errors = []


def done():
    """Every record seen, and the member's position at every partition's end: records seen
    before the kill and not committed then are delivered again after it, from the commits."""
    if len(seen) < count:
        return False
    held = c.assignment()
    if len(held) < PARTITIONS:
        return False
    return all(tp.offset >= ends[tp.partition] for tp in c.position(held))


deadline = time.time() + 120
while not done():
    assert time.time() < deadline, "%d of %d records seen, at %s in 120 s" % (
        len(seen), count, c.position(c.assignment()))
    msg = c.poll(0.1)
    if msg is None:
        continue
    if msg.error():
        errors.append(str(msg.error()))  # the server going away is reported, and survived
        continue
    before = len(seen)
    seen.add((msg.partition(), msg.offset()))
    if len(seen) % 1000 == 0 and len(seen) != before:
        print("consumed", len(seen), flush=True)
    time.sleep(0.0005)  # slow enough that the kill comes mid-stream
for tp in c.commit(asynchronous=False):
    assert tp.error is None, "the last commit of %s: %s" % (tp, tp.error)
c.close()

check = Consumer(config)
committed = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
assert [tp.offset for tp in committed] == ends, ([tp.offset for tp in committed], ends)
check.close()
print("ok: %d records, each delivered at least once; %d error(s) reported on the way"
      % (count, len(errors)), flush=True)
