//! A producer's RecordBatch, as a Kafka client sends it, is stored byte for byte
//! (`Producer::append_batch`): only its base offset and partition leader epoch change; its
//! records take the partition's next offsets, among records sent one by one; it reads back
//! the same (`Log::read_batches`, `Log::read`) before and after a reopen, compressed ones
//! (gzip, snappy, lz4, zstd) as they came, their records decompressed for the library's
//! readers; and a batch that is malformed, transactional or too large is refused with nothing
//! written.

mod common;

use bytes::{Bytes, BytesMut};
use common::{BACKENDS, small_config, test_dir};
use floodgate::{Codec, Error, Log, Offset, Record, TopicConfig};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A batch of `n` records (values `v{first + i}`, every other one keyed) encoded by the
/// `kafka-protocol` crate as a producer would: base offset 0, leader epoch -1; an idempotent
/// producer's, each batch from a producer of its own (so none is a retry or a gap of another).
fn client_batch(first: i64, n: i64, compression: Compression) -> Bytes {
    let records: Vec<KRecord> = (0..n)
        .map(|i| KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 4711 + first,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: (first + i) as i32,
            timestamp: 1_700_000_000_000 + first + i,
            key: (i % 2 == 0).then(|| Bytes::from(format!("k{}", first + i))),
            value: Some(Bytes::from(format!("v{}", first + i))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// `batch` with the fields a broker sets: base offset and partition leader epoch 0.
fn as_stored(batch: &[u8], base_offset: u64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&0i32.to_be_bytes());
    b
}

#[test]
fn appended_batches_are_stored_as_sent_among_single_records() {
    for backend in BACKENDS {
        let dir = test_dir("batches");
        let config = small_config(dir.path(), backend);
        let (a, b) = (
            client_batch(1, 5, Compression::None),
            client_batch(7, 3, Compression::None),
        );
        {
            let log = Log::open(config.clone()).unwrap();
            log.create_topic("t", TopicConfig::new(2)).unwrap();
            let mut producer = log.producer();
            // Sent in this order to partition 1: a record, a batch of 5, a record, a batch of 3.
            let acks = [
                producer.send("t", Record::new(b"v0").partition(1)).unwrap(),
                producer.append_batch("t", 1, &a).unwrap(),
                producer.send("t", Record::new(b"v6").partition(1)).unwrap(),
                producer.append_batch("t", 1, &b).unwrap(),
            ];
            let offsets: Vec<Offset> = acks.into_iter().map(|a| a.wait().unwrap().offset).collect();
            assert_eq!(offsets, [Offset(0), Offset(1), Offset(6), Offset(7)]);
        }
        // After a reopen (recovery checks every frame) as before it.
        let log = Log::open(config).unwrap();
        assert_eq!(log.offsets("t", 1).unwrap(), (Offset(0), Offset(10)));
        let (batches, next) = log.read_batches("t", 1, Offset(0), 1 << 20, false).unwrap();
        assert_eq!(next, Offset(10));
        assert_eq!(
            batches.len(),
            4,
            "two batches of single records, two stored as sent"
        );
        assert_eq!(batches[1][..], as_stored(&a, 1)[..]);
        assert_eq!(batches[3][..], as_stored(&b, 7)[..]);
        // A read from the middle of a batch starts with that batch.
        let (from_3, _) = log.read_batches("t", 1, Offset(3), 1, false).unwrap();
        assert_eq!(from_3.len(), 1);
        assert_eq!(from_3[0][..], as_stored(&a, 1)[..]);
        // The library's readers see the records, with their offsets, keys and timestamps.
        let records = log.read("t", 1, Offset(0), 1 << 20).unwrap();
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
        assert_eq!(values, expected);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, Offset(i as u64));
        }
        assert_eq!(records[1].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[2].key, None);
        assert_eq!(records[8].timestamp, 1_700_000_000_000 + 8);
        assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(0)));
    }
}

/// `batch` with these attribute bits set, its checksum made to match.
fn with_attributes(batch: &[u8], bits: u8) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[22] |= bits;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn compressed_batches_are_stored_compressed_and_read_decompressed() {
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let dir = test_dir("batches-compressed");
    let config = small_config(dir.path(), BACKENDS[0]);
    let batches: Vec<Bytes> = (0..codecs.len())
        .map(|i| client_batch(10 * i as i64, 10, codecs[i]))
        .collect();
    for (batch, codec) in batches.iter().zip(1u8..) {
        assert_eq!(
            batch[22] & 0x07,
            codec,
            "the encoder compressed with codec {codec}"
        );
    }
    {
        let log = Log::open(config.clone()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        for (i, batch) in batches.iter().enumerate() {
            let at = producer
                .append_batch("t", 0, batch)
                .unwrap()
                .wait()
                .unwrap();
            assert_eq!(at.offset, Offset(10 * i as u64));
        }
    }
    // After a reopen (recovery checks every frame, decompressing its records).
    let log = Log::open(config).unwrap();
    let (stored, next) = log.read_batches("t", 0, Offset(0), 1 << 20, false).unwrap();
    assert_eq!(next, Offset(40));
    for (i, (got, sent)) in stored.iter().zip(&batches).enumerate() {
        assert_eq!(
            got[..],
            as_stored(sent, 10 * i as u64)[..],
            "stored as sent"
        );
    }
    let records = log.read("t", 0, Offset(0), 1 << 20).unwrap();
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    assert!((records.iter().enumerate()).all(|(i, r)| r.offset == Offset(i as u64)));
    // A consumer of several partitions (the scan path) reads them too.
    log.create_topic("u", TopicConfig::new(2)).unwrap();
    let mut producer = log.producer();
    for batch in &batches {
        producer
            .append_batch("u", 1, batch)
            .unwrap()
            .wait()
            .unwrap();
    }
    let mut consumer = log.consumer("u").build().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let polled = consumer.poll(std::time::Duration::from_secs(5)).unwrap();
        assert!(!polled.is_empty(), "{} of 40 read", seen.len());
        seen.extend(polled.into_iter().map(|r| r.record.offset));
    }
    assert_eq!(seen, (0..40).map(Offset).collect::<Vec<_>>());
}

#[test]
fn refused_batches_write_nothing() {
    let dir = test_dir("batches-refused");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let good = client_batch(0, 4, Compression::None);

    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let err = producer.append_batch("t", 0, &flipped).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch(why) if why.contains("checksum")),
        "{err}"
    );

    let err = producer
        .append_batch("t", 0, &good[..good.len() - 3])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err}");

    let err = producer.append_batch("t", 0, &good[..20]).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err}");

    // Said to be lz4-compressed (the codec bits set, the checksum made to match), and not.
    let lz4 = with_attributes(&good, 0x03);
    let err = producer.append_batch("t", 0, &lz4).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch(why) if why.contains("lz4")),
        "{err}"
    );
    // An unknown codec.
    let err = producer
        .append_batch("t", 0, &with_attributes(&good, 0x05))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch(why) if why.contains("codec")),
        "{err}"
    );

    let txn = with_attributes(&good, 0x10);
    let err = producer.append_batch("t", 0, &txn).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedBatch(why) if why.contains("transaction")),
        "{err}"
    );

    let big = client_batch(0, 2000, Compression::None);
    assert!(big.len() > 16 << 10, "the batch passes record_bytes_max");
    let err = producer.append_batch("t", 0, &big).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    // Checked against a larger limit than this log's: still refused when appended.
    let checked = floodgate::producer::check_batch(&big, usize::MAX).unwrap();
    let err = producer.try_append_checked("t", 0, &checked).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");

    let err = producer.append_batch("t", 1, &good).unwrap_err();
    assert!(matches!(err, Error::UnknownPartition { .. }), "{err}");
    let err = producer.append_batch("nope", 0, &good).unwrap_err();
    assert!(matches!(err, Error::UnknownTopic(_)), "{err}");

    assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(0)));
    // The producer goes on after refusals.
    let at = producer
        .append_batch("t", 0, &good)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(at.offset, Offset(0));
    assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(4)));
}

/// Runs `fut` to completion on this thread, parking between polls.
/// A topic's own largest record or batch (`TopicConfig::max_message_bytes`, Kafka's
/// `max.message.bytes` on a topic): larger records and client batches are refused with
/// nothing written, other topics keep the log's limit; it changes at runtime for a producer
/// that already sent to the topic, survives a reopen, and may not exceed the log's.
#[test]
fn a_topics_own_message_limit_refuses_larger_records_and_batches() {
    let dir = test_dir("topic-message-limit");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    let log_max = 16 << 10;
    for asked in [0, log_max + 1] {
        let err = log
            .create_topic("bad", TopicConfig::new(1).max_message_bytes(asked))
            .unwrap_err();
        assert!(
            matches!(err, Error::TopicMessageBytesAboveLog { asked: a, log, .. } if a == asked && log == log_max),
            "{err}"
        );
    }
    log.create_topic("small", TopicConfig::new(1).max_message_bytes(1024))
        .unwrap();
    log.create_topic("other", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let value = vec![7u8; 2000];
    let too_large = |e: Error, limit: usize| {
        assert!(
            matches!(e, Error::RecordTooLarge { max, .. } if max == limit),
            "{e}"
        );
    };
    too_large(
        producer.send("small", Record::new(&value)).unwrap_err(),
        1024,
    );
    let batch = client_batch(0, 200, Compression::None);
    assert!(batch.len() > 1024, "{}", batch.len());
    too_large(producer.append_batch("small", 0, &batch).unwrap_err(), 1024);
    producer
        .send("small", Record::new(&value[..500]))
        .unwrap()
        .wait()
        .unwrap();
    producer
        .send("other", Record::new(&value))
        .unwrap()
        .wait()
        .unwrap();
    producer
        .append_batch("other", 0, &batch)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.offsets("small", 0).unwrap().1, Offset(1));
    assert_eq!(log.list_topics()[1].message_bytes_max, Some(1024));
    // Raised at runtime (the producer has the topic cached): accepted.
    log.set_topic_max_message_bytes("small", None).unwrap();
    producer
        .send("small", Record::new(&value))
        .unwrap()
        .wait()
        .unwrap();
    producer
        .append_batch("small", 0, &batch)
        .unwrap()
        .wait()
        .unwrap();
    log.set_topic_max_message_bytes("small", Some(256)).unwrap();
    too_large(
        producer
            .send("small", Record::new(&value[..500]))
            .unwrap_err(),
        256,
    );
    assert!(matches!(
        log.set_topic_max_message_bytes("small", Some(log_max + 1)),
        Err(Error::TopicMessageBytesAboveLog { .. })
    ));
    drop(producer);
    drop(log);

    let log = Log::open(config()).unwrap();
    assert_eq!(log.list_topics()[1].message_bytes_max, Some(256));
    let mut producer = log.producer();
    too_large(
        producer
            .send("small", Record::new(&value[..500]))
            .unwrap_err(),
        256,
    );
    assert_eq!(log.offsets("small", 0).unwrap().1, Offset(202));
    // Several configs at once, the ones not given removed; a refused one changes nothing.
    let both = TopicConfig::new(1)
        .max_message_bytes(512)
        .compression(Codec::Lz4);
    log.set_topic_configs("small", &both).unwrap();
    let own = |log: &Log| {
        let t = &log.list_topics()[1];
        (t.message_bytes_max, t.compression, t.retention_age)
    };
    assert_eq!(own(&log), (Some(512), Some(Codec::Lz4), None));
    let refused = TopicConfig::new(1).max_message_bytes(0);
    assert!(matches!(
        log.set_topic_configs("small", &refused),
        Err(Error::TopicMessageBytesAboveLog { .. })
    ));
    assert_eq!(own(&log), (Some(512), Some(Codec::Lz4), None));
    log.set_topic_configs("small", &TopicConfig::new(1))
        .unwrap();
    assert_eq!(own(&log), (None, None, None));
}

/// A topic with a codec of its own (`TopicConfig::compression`, Kafka's `compression.type` on a
/// topic) stores client batches in that codec: a batch in another is compressed again (same
/// offsets, timestamps, producer fields and records, a new CRC), one in the topic's codec is
/// stored as sent; it changes at runtime and survives a reopen; records sent one by one are
/// unaffected.
#[test]
fn a_topics_codec_recompresses_client_batches() {
    let dir = test_dir("topic-codec");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    log.create_topic("z", TopicConfig::new(1).compression(Codec::Zstd))
        .unwrap();
    let mut producer = log.producer();
    let sent = [
        client_batch(0, 40, Compression::None),
        client_batch(40, 40, Compression::Gzip),
        client_batch(80, 40, Compression::Zstd),
    ];
    for batch in &sent {
        producer
            .append_batch("z", 0, batch)
            .unwrap()
            .wait()
            .unwrap();
    }
    producer
        .send("z", Record::new(b"one by one"))
        .unwrap()
        .wait()
        .unwrap();
    let codec_of = |b: &[u8]| b[22] & 0x07;
    let stored = |log: &Log| -> Vec<Bytes> {
        log.read_batches("z", 0, Offset(0), 1 << 20, false)
            .unwrap()
            .0
    };
    let check = |log: &Log| {
        // The first four: the three client batches and the record sent alone.
        let batches = stored(log);
        assert!(batches.len() >= 4);
        for (i, (got, sent)) in batches.iter().zip(&sent).enumerate() {
            assert_eq!(codec_of(got), 4, "batch {i} is stored in zstd");
            // Every field but the codec, length and CRC is as sent (offsets from 0 here).
            assert_eq!(got[23..61], sent[23..61], "batch {i}");
            let view = floodgate::segment::BatchView::decode(got).unwrap();
            view.check_records().unwrap();
        }
        assert_eq!(
            batches[2],
            as_stored(&sent[2], 80),
            "a batch in the topic's codec is stored as sent"
        );
        let values: Vec<Vec<u8>> = (log.read("z", 0, Offset(0), 1 << 20).unwrap().iter())
            .take(121)
            .map(|r| r.value.clone().unwrap().to_vec())
            .collect();
        let mut expected: Vec<Vec<u8>> = (0..120).map(|i| format!("v{i}").into_bytes()).collect();
        expected.push(b"one by one".to_vec());
        assert_eq!(values, expected);
    };
    check(&log);
    assert_eq!(log.list_topics()[0].compression, Some(Codec::Zstd));
    // As sent from now on.
    log.set_topic_compression("z", None).unwrap();
    producer
        .append_batch("z", 0, &client_batch(121, 5, Compression::Lz4))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(codec_of(&stored(&log)[4]), 3);
    log.set_topic_compression("z", Some(Codec::None)).unwrap();
    producer
        .append_batch("z", 0, &client_batch(126, 5, Compression::Snappy))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(codec_of(&stored(&log)[5]), 0, "uncompressed");
    log.set_topic_compression("z", Some(Codec::Zstd)).unwrap();
    drop(producer);
    drop(log);
    let log = Log::open(config()).unwrap();
    assert_eq!(log.list_topics()[0].compression, Some(Codec::Zstd));
    check(&log);
    let mut producer = log.producer();
    producer
        .append_batch("z", 0, &client_batch(131, 5, Compression::Gzip))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(codec_of(&stored(&log)[6]), 4);
}

/// A topic whose records carry the log's append time (`floodgate::TimestampType::LogAppendTime`, Kafka's
/// `message.timestamp.type=LogAppendTime`): a client batch is stored with that time as its
/// newest timestamp and the attribute saying so (its other fields as sent), and every record
/// reads back with it; a record sent alone gets it too; back to the producer's time at
/// runtime; it survives a reopen.
#[test]
fn a_topic_with_log_append_time_stamps_what_it_appends() {
    let dir = test_dir("topic-append-time");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    let stamped = TopicConfig::new(1).timestamp_type(floodgate::TimestampType::LogAppendTime);
    log.create_topic("la", stamped).unwrap();
    let mut producer = log.producer();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now();
    let sent = client_batch(0, 20, Compression::None);
    producer
        .append_batch("la", 0, &sent)
        .unwrap()
        .wait()
        .unwrap();
    let old = Record::new(b"alone").timestamp(5);
    producer.send("la", old).unwrap().wait().unwrap();
    let after = now();
    let check = |log: &Log| {
        let (batches, _) = log
            .read_batches("la", 0, Offset(0), 1 << 20, false)
            .unwrap();
        let stored = &batches[0];
        assert_eq!(stored[22] & 0x08, 0x08, "LogAppendTime in its attributes");
        let stamp = i64::from_be_bytes(stored[35..43].try_into().unwrap());
        assert!(
            (before..=after).contains(&stamp),
            "{before} <= {stamp} <= {after}"
        );
        assert_eq!(stored[23..35], sent[23..35]);
        assert_eq!(stored[43..], sent[43..]);
        let view = floodgate::segment::BatchView::decode(stored).unwrap();
        assert!(view.log_append_time);
        let records = log.read("la", 0, Offset(0), 1 << 20).unwrap();
        assert!(records.len() >= 21);
        assert!(records[..20].iter().all(|r| r.timestamp == stamp));
        assert!((before..=after).contains(&records[20].timestamp));
    };
    check(&log);
    assert_eq!(
        log.list_topics()[0].timestamp_type,
        floodgate::TimestampType::LogAppendTime
    );
    log.set_topic_timestamp_type("la", floodgate::TimestampType::CreateTime)
        .unwrap();
    let later = client_batch(21, 3, Compression::None);
    producer
        .append_batch("la", 0, &later)
        .unwrap()
        .wait()
        .unwrap();
    let (batches, _) = log
        .read_batches("la", 0, Offset(21), 1 << 20, false)
        .unwrap();
    assert_eq!(batches[0][..], as_stored(&later, 21)[..], "as sent");
    log.set_topic_timestamp_type("la", floodgate::TimestampType::LogAppendTime)
        .unwrap();
    drop(producer);
    drop(log);
    let log = Log::open(config()).unwrap();
    assert_eq!(
        log.list_topics()[0].timestamp_type,
        floodgate::TimestampType::LogAppendTime
    );
    check(&log);
}

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A reader that found nothing new awaits `published_since` and is woken by the next
/// acknowledged batch, not by a timer; a mark taken before a publish is already passed.
#[test]
fn a_reader_waiting_for_new_batches_is_woken_by_a_publish() {
    let dir = test_dir("batches-wait");
    let log = std::sync::Arc::new(Log::open(small_config(dir.path(), BACKENDS[0])).unwrap());
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mark = log.publish_mark();
    assert_eq!(log.publish_mark(), mark, "nothing was published");
    let sender = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut producer = log.producer();
            let batch = client_batch(0, 2, Compression::None);
            producer
                .append_batch("t", 0, &batch)
                .unwrap()
                .wait()
                .unwrap();
        })
    };
    let started = std::time::Instant::now();
    block_on(log.published_since(mark.clone()));
    assert!(started.elapsed() >= std::time::Duration::from_millis(40));
    sender.join().unwrap();
    let (batches, next) = log.read_batches("t", 0, Offset(0), 1 << 20, false).unwrap();
    assert_eq!((batches.len(), next), (1, Offset(2)));
    // Published past the old mark: resolves at once.
    block_on(log.published_since(mark));
}
