"""confluent-kafka (current librdkafka) consumer groups against floodgate serve: members of one
group share the partitions and rebalance as a third joins, as one leaves (closing) and as one
crashes (a process killed without leaving, expired by its session timeout); every record is
delivered at least once across them, and the group's commits end where the partitions end.
PROTOCOL is librdkafka's group.protocol: `classic` (the default) or `consumer` (KIP-848, where
the broker sets the heartbeat interval and the session timeout, which must be SESSION_MS).
Usage: confluent_groups.py HOST:PORT TOPIC PARTITIONS COUNT [PROTOCOL]
       confluent_groups.py --member HOST:PORT TOPIC GROUP PROTOCOL   (runs until killed)"""
import os
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

SESSION_MS = 2000


def consumer_config(bootstrap, group, protocol):
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 200,
    }
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 300})
    return config


if sys.argv[1] == "--member":
    # A member in its own process: consumes and says what it holds, until it is killed. It
    # never commits, so what it read is delivered again to the others.
    bootstrap, topic, group, protocol = sys.argv[2:6]
    c = Consumer(dict(consumer_config(bootstrap, group, protocol), **{"enable.auto.commit": False}))
    c.subscribe([topic])
    while True:
        c.poll(0.1)
        held = sorted(tp.partition for tp in c.assignment())
        print("held", " ".join(map(str, held)), flush=True)

bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
protocol = sys.argv[5] if len(sys.argv) > 5 else "classic"
group = "py-group" if protocol == "classic" else "py-group-" + protocol

producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                     "enable.idempotence": True})
for i in range(count):
    producer.produce(topic, value=b"v%d" % i, partition=i % partitions)
    producer.poll(0)
assert producer.flush(30) == 0
per_partition = [len(range(p, count, partitions)) for p in range(partitions)]


class Member:
    """A consumer polled by its own thread, recording what it receives and holds."""

    def __init__(self, name):
        self.name = name
        self.consumer = Consumer(consumer_config(bootstrap, group, protocol))
        self.consumer.subscribe([topic])
        self.seen = []
        self.held = []
        self.stop = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            self.held = sorted(tp.partition for tp in self.consumer.assignment())
            if msg is None:
                continue
            if msg.error():
                self.errors.append(str(msg.error()))
                continue
            self.seen.append((msg.partition(), msg.offset()))
            # Slow enough that a rebalance finds records left to hand over.
            time.sleep(0.0005)
        self.consumer.close()  # commits, then leaves the group

    def close(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), self.name


def wait_for(what, predicate, timeout=30):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)
    return time.time()


def split_among(members):
    """Whether `members` together hold every partition, each one once, all holding some."""
    held = [p for m in members for p in m.held]
    return sorted(held) == list(range(partitions)) and all(m.held for m in members)


a, b = Member("a"), Member("b")
wait_for("a and b to share the partitions", lambda: split_among([a, b]))
c = Member("c")
wait_for("a, b and c to share the partitions", lambda: split_among([a, b, c]))
assert sorted(len(m.held) for m in (a, b, c)) == [partitions // 3] * 3, [m.held for m in (a, b, c)]

# b leaves: a and c take its partitions.
left_at = time.time()
b.close()
done = wait_for("a and c to take b's partitions", lambda: split_among([a, c]))
print("rebalance after a member left: %.2f s" % (done - left_at))
assert done - left_at < 2.0 + 0.5, done - left_at

# A member in another process joins, then is killed without leaving: its session runs out
# and a and c take its partitions back.
member = subprocess.Popen([sys.executable, __file__, "--member", bootstrap, topic, group, protocol],
                          stdout=subprocess.PIPE, text=True)
line = ""
deadline = time.time() + 30
while time.time() < deadline:
    line = member.stdout.readline()
    if line.startswith("held ") and line.split()[1:]:
        break
assert line.split()[1:], "the member in another process got partitions: %r" % line
wait_for("a and c to give it its share", lambda: len(a.held) + len(c.held) < partitions)
killed_at = time.time()
member.kill()
member.wait()
done = wait_for("a and c to take the killed member's partitions", lambda: split_among([a, c]))
print("rebalance after a member was killed: %.2f s (session %d ms)"
      % (done - killed_at, SESSION_MS))
assert done - killed_at >= SESSION_MS / 1000 * 0.8, done - killed_at

# Everything is delivered at least once, then committed.
def delivered_all():
    seen = set(a.seen) | set(b.seen) | set(c.seen)
    return all((p, o) in seen for p in range(partitions) for o in range(per_partition[p]))


wait_for("every record delivered", delivered_all)
time.sleep(0.5)  # an auto-commit interval and more
a.close()
c.close()
for m in (a, b, c):
    assert not m.errors, (m.name, m.errors[:3])

check = Consumer(consumer_config(bootstrap, group, protocol))
committed = check.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
assert [tp.offset for tp in committed] == per_partition, [tp.offset for tp in committed]
check.close()

if protocol == "consumer":
    # A subscription by pattern (SubscribedTopicRegex): the topics it matches, and one created
    # while it runs; not the topic it does not match.
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = topic + "-pattern-"
    created = admin.create_topics([NewTopic(prefix + "a", 2, 1), NewTopic(topic + "-other", 2, 1)])
    for f in created.values():
        f.result(10)
    watcher = Consumer(dict(consumer_config(bootstrap, group + "-pattern", protocol)))
    watcher.subscribe(["^" + prefix + ".*"])

    def holds(expected):
        watcher.poll(0.1)
        return sorted((tp.topic, tp.partition) for tp in watcher.assignment()) == expected

    wait_for("the pattern's topic", lambda: holds([(prefix + "a", 0), (prefix + "a", 1)]))
    for f in admin.create_topics([NewTopic(prefix + "b", 1, 1)]).values():
        f.result(10)
    wait_for("the topic created later",
             lambda: holds([(prefix + "a", 0), (prefix + "a", 1), (prefix + "b", 0)]))
    # The admin client sees it as a group of the consumer protocol (ConsumerGroupDescribe,
    # ListGroups v5).
    from confluent_kafka import ConsumerGroupType

    described = admin.describe_consumer_groups([group + "-pattern"])[group + "-pattern"].result(10)
    assert described.type == ConsumerGroupType.CONSUMER, described.type
    assert described.partition_assignor == "uniform", described.partition_assignor
    [only] = described.members
    assert len(only.assignment.topic_partitions) == 3, only.assignment.topic_partitions
    listed = {g.group_id: g.type for g in admin.list_consumer_groups().result(10).valid}
    assert listed[group + "-pattern"] == ConsumerGroupType.CONSUMER, listed
    watcher.close()
print("ok: %d records over %d partitions, %d delivered (at least once)"
      % (count, partitions, len(a.seen) + len(b.seen) + len(c.seen)))
