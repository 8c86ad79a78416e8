// The Java client (kafka-clients) against floodgate serve: a producer with the client's
// defaults (idempotent: InitProducerId and sequence numbers; acks=all) sends keyed records to
// two partitions; a consumer assigned
// both partitions (no group) reads them from the beginning; every record and offset is checked.
// Usage: java -cp kafka-clients.jar:slf4j-api.jar Roundtrip.java HOST:PORT TOPIC COUNT
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;

public class Roundtrip {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int count = Integer.parseInt(args[2]);
        String strings = "org.apache.kafka.common.serialization.StringSerializer";
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("linger.ms", "5");
        p.put("key.serializer", strings);
        p.put("value.serializer", strings);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, i % 2, "k" + i, "v" + i)));
            }
            for (int i = 0; i < count; i++) {
                RecordMetadata m = sent.get(i).get();
                check(m.partition() == i % 2 && m.offset() == i / 2, "record " + i + " at " + m);
            }
        }
        String bytes = "org.apache.kafka.common.serialization.StringDeserializer";
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("enable.auto.commit", "false");
        c.put("key.deserializer", bytes);
        c.put("value.deserializer", bytes);
        boolean[] seen = new boolean[count];
        int read = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> parts = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            long deadline = System.currentTimeMillis() + 30_000;
            while (read < count) {
                check(System.currentTimeMillis() < deadline, "timed out with " + read + " read");
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    int i = Integer.parseInt(r.value().substring(1));
                    check(r.key().equals("k" + i) && r.partition() == i % 2 && r.offset() == i / 2,
                          "record " + i + " read as " + r);
                    check(!seen[i], "record " + i + " read twice");
                    seen[i] = true;
                    read++;
                }
            }
        }
        System.out.println("ok: " + count + " records produced and read back");
    }
}
