// The Java client's consumer group (kafka-clients) against floodgate serve: two consumers
// subscribe in one group, share the topic's partitions, read every record once between them and
// commit synchronously with metadata; then one closes and the other takes its partitions; a
// fresh consumer of the group finds the commits and their metadata. PROTOCOL is the client's
// group.protocol: classic (the default) or consumer (KIP-848; group "java-group-consumer").
// Usage: java -cp kafka-clients.jar:slf4j-api.jar Groups.java HOST:PORT TOPIC PARTITIONS COUNT
//        [PROTOCOL]
import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

public class Groups {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static String protocol = "classic";

    static Properties consumerProps(String bootstrap) {
        String strings = "org.apache.kafka.common.serialization.StringDeserializer";
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        if (protocol.equals("consumer")) {
            // The broker sets the session and the heartbeat interval.
            c.put("group.id", "java-group-consumer");
            c.put("group.protocol", "consumer");
        } else {
            c.put("group.id", "java-group");
            c.put("session.timeout.ms", "6000");
            c.put("heartbeat.interval.ms", "500");
        }
        c.put("key.deserializer", strings);
        c.put("value.deserializer", strings);
        return c;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        int count = Integer.parseInt(args[3]);
        if (args.length > 4) {
            protocol = args[4];
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        p.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        p.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, i % partitions, "k" + i, "v" + i));
            }
            producer.flush();
        }

        Set<Integer> seen = ConcurrentHashMap.newKeySet();
        Map<String, Set<Integer>> held = new ConcurrentHashMap<>();
        AtomicBoolean stopA = new AtomicBoolean();
        AtomicBoolean stopB = new AtomicBoolean();
        Thread a = member("a", bootstrap, topic, seen, held, stopA);
        Thread b = member("b", bootstrap, topic, seen, held, stopB);
        a.start();
        b.start();
        long deadline = System.currentTimeMillis() + 60_000;
        while (seen.size() < count) {
            check(System.currentTimeMillis() < deadline, "timed out with " + seen.size() + " read");
            Thread.sleep(50);
        }
        // Both took a share.
        while (held.getOrDefault("a", Set.of()).isEmpty() || held.getOrDefault("b", Set.of()).isEmpty()
               || held.get("a").size() + held.get("b").size() != partitions) {
            check(System.currentTimeMillis() < deadline, "no split: " + held);
            Thread.sleep(50);
        }
        // b leaves; a takes everything.
        stopB.set(true);
        b.join();
        long left = System.currentTimeMillis();
        while (held.getOrDefault("a", Set.of()).size() != partitions) {
            check(System.currentTimeMillis() < deadline, "a never took b's partitions: " + held);
            Thread.sleep(20);
        }
        System.out.println("rebalance after b left: " + (System.currentTimeMillis() - left) + " ms");
        stopA.set(true);
        a.join();

        try (KafkaConsumer<String, String> fresh = new KafkaConsumer<>(consumerProps(bootstrap))) {
            Set<TopicPartition> all = new HashSet<>();
            for (int q = 0; q < partitions; q++) {
                all.add(new TopicPartition(topic, q));
            }
            Map<TopicPartition, OffsetAndMetadata> committed = fresh.committed(all);
            for (TopicPartition tp : all) {
                OffsetAndMetadata m = committed.get(tp);
                long expected = (count - tp.partition() + partitions - 1) / partitions;
                check(m != null && m.offset() == expected, tp + " committed " + m);
                check(m.metadata().startsWith("java-"), tp + " metadata " + m.metadata());
            }
        }
        System.out.println("ok: " + count + " records read by a group of two, commits found");
    }

    static Thread member(String name, String bootstrap, String topic, Set<Integer> seen,
                         Map<String, Set<Integer>> held, AtomicBoolean stop) {
        return new Thread(() -> {
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(bootstrap))) {
                c.subscribe(List.of(topic));
                while (!stop.get()) {
                    Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                        seen.add(Integer.parseInt(r.value().substring(1)));
                        commit.put(new TopicPartition(r.topic(), r.partition()),
                                   new OffsetAndMetadata(r.offset() + 1, "java-" + name));
                    }
                    if (!commit.isEmpty()) {
                        c.commitSync(commit);
                    }
                    Set<Integer> mine = new HashSet<>();
                    for (TopicPartition tp : c.assignment()) {
                        mine.add(tp.partition());
                    }
                    held.put(name, mine);
                }
            }
        });
    }
}
