"""confluent-kafka (current librdkafka) against floodgate serve: produce keyed records with
acks=all, read them back by assigning the partitions (no group), check every record and offset;
list the topic, describe its configs, create topics (one restating the log's configs, one
with a retention of its own, altered at runtime, also by the legacy AlterConfigs; one
stamped with the log's append time; one compacted, refused), add partitions to one and delete it with the admin client; ACL requests
are refused as by a broker without an authorizer.
Usage: confluent_roundtrip.py HOST:PORT TOPIC COUNT"""
import sys

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
partitions = 3

# An idempotent producer (InitProducerId, sequence numbers checked by the partitions).
producer = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "none",
    "linger.ms": 5,
})
errors = []
acked = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        acked.append((msg.partition(), msg.offset()))


for i in range(count):
    producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % partitions,
                     headers=[("n", b"%d" % i)], on_delivery=delivered)
    producer.poll(0)
left = producer.flush(30)
assert left == 0 and not errors, (left, errors[:3])
assert len(acked) == count, len(acked)
for p in range(partitions):
    offsets = sorted(o for (q, o) in acked if q == p)
    assert offsets == list(range(len(offsets))), "dense offsets from 0 in partition %d" % p

consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "unused-no-commits",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
})
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
seen = {}
eof = set()
while len(eof) < partitions:
    msg = consumer.poll(10)
    assert msg is not None, "timed out with %d records read" % len(seen)
    if msg.error():
        assert msg.error().code() == -191, msg.error()  # _PARTITION_EOF
        eof.add(msg.partition())
        continue
    i = int(msg.value()[1:])
    assert msg.key() == b"k%d" % i and msg.partition() == i % partitions, (msg.key(), i)
    assert msg.headers() == [("n", b"%d" % i)], msg.headers()
    assert i not in seen, "record %d read twice" % i
    seen[i] = msg.offset()
consumer.close()
assert sorted(seen) == list(range(count)), "%d of %d read" % (len(seen), count)

admin = AdminClient({"bootstrap.servers": bootstrap})
listed = admin.list_topics(topic, timeout=10)
assert len(listed.topics[topic].partitions) == partitions
described = admin.describe_configs([ConfigResource("topic", topic)])
configs = list(described.values())[0].result(timeout=10)
assert configs["cleanup.policy"].value == "delete", configs
# A topic's configs may restate the log's, and its retention may be its own; a config the log
# does not have is refused, not ignored.
retention = configs["retention.ms"].value
created = admin.create_topics(
    [
        NewTopic(topic + "-admin", 4, 1, config={"cleanup.policy": "delete", "retention.ms": retention}),
        NewTopic(topic + "-short", 1, 1, config={"retention.ms": "60000"}),
        NewTopic(topic + "-compacted", 1, 1, config={"cleanup.policy": "compact"}),
    ]
)
created[topic + "-admin"].result(timeout=10)
created[topic + "-short"].result(timeout=10)
try:
    created[topic + "-compacted"].result(timeout=10)
    raise AssertionError("a compacted topic was created")
except KafkaException as e:
    assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
    assert "cleanup.policy" in e.args[0].str(), e
assert topic + "-compacted" not in admin.list_topics(timeout=10).topics


def retention_of(name):
    described = admin.describe_configs([ConfigResource("topic", name)])
    return list(described.values())[0].result(timeout=10)["retention.ms"]


short = retention_of(topic + "-short")
assert short.value == "60000" and not short.is_read_only, short
altered = admin.incremental_alter_configs(
    [
        ConfigResource(
            "topic",
            topic + "-short",
            incremental_configs=[ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET)],
        )
    ]
)
list(altered.values())[0].result(timeout=10)
assert retention_of(topic + "-short").value == "120000"
refused = admin.incremental_alter_configs(
    [
        ConfigResource(
            "topic",
            topic + "-short",
            incremental_configs=[ConfigEntry("segment.bytes", "1024", incremental_operation=AlterConfigOpType.SET)],
        )
    ]
)
try:
    list(refused.values())[0].result(timeout=10)
    raise AssertionError("a topic's segment size was altered")
except KafkaException as e:
    assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
assert retention_of(topic + "-short").value == "120000"
assert retention_of(topic + "-admin").value == retention
# The legacy AlterConfigs replaces the topic's configs: retention by size per partition set,
# retention by age back to the log's.
replaced = admin.alter_configs([ConfigResource("topic", topic + "-short", set_config={"retention.bytes": "1048576"})])
list(replaced.values())[0].result(timeout=10)
described = admin.describe_configs([ConfigResource("topic", topic + "-short")])
short_configs = list(described.values())[0].result(timeout=10)
assert short_configs["retention.bytes"].value == "1048576", short_configs["retention.bytes"]
assert short_configs["retention.ms"].value == retention, short_configs["retention.ms"]
# No authorizer: ACL requests are refused, as Kafka refuses them without one.
binding = AclBinding(
    ResourceType.TOPIC,
    topic,
    ResourcePatternType.LITERAL,
    "User:logistics",
    "*",
    AclOperation.READ,
    AclPermissionType.ALLOW,
)
acl_filter = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)
for future in [admin.create_acls([binding])[binding], admin.delete_acls([acl_filter])[acl_filter]]:
    try:
        future.result(timeout=10)
        raise AssertionError("an ACL request succeeded without an authorizer")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.SECURITY_DISABLED, e
# DescribeAcls' error is not passed on by librdkafka (it reads the code and drops it): no
# bindings. kafka/tests/protocol.rs checks the code itself.
assert admin.describe_acls(acl_filter).result(timeout=10) == []
# A topic whose records carry the log's append time: the delivery report and the consumer
# both see it, whatever time the producer gave.
stamped = topic + "-stamped"
created = admin.create_topics([NewTopic(stamped, 1, 1, config={"message.timestamp.type": "LogAppendTime"})])
created[stamped].result(timeout=10)
reports = []
producer.produce(stamped, value=b"late", timestamp=5, on_delivery=lambda err, msg: reports.append((err, msg.timestamp())))
producer.flush(10)
(err, (kind, appended)), = reports
assert err is None and kind == TIMESTAMP_LOG_APPEND_TIME and appended > 1_700_000_000_000, reports
reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-stamped", "enable.auto.commit": False})
reader.assign([TopicPartition(stamped, 0, 0)])
msg = reader.poll(10)
assert msg is not None and msg.error() is None, msg
assert msg.timestamp() == (TIMESTAMP_LOG_APPEND_TIME, appended), (msg.timestamp(), appended)
reader.close()
assert len(admin.list_topics(timeout=10).topics[topic + "-admin"].partitions) == 4
grown = admin.create_partitions([NewPartitions(topic + "-admin", 6)])
list(grown.values())[0].result(timeout=10)
assert len(admin.list_topics(timeout=10).topics[topic + "-admin"].partitions) == 6
deleted = admin.delete_topics([topic + "-admin"])
list(deleted.values())[0].result(timeout=10)
print("ok: %d records produced and read back" % count)
