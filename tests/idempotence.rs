//! Idempotent producers' batches (`Producer::try_append_batch` with a producer id): each
//! partition checks the sequence of every batch against the producer's last five, as Kafka
//! brokers do. A retry of a stored batch is acknowledged with that batch's offset and stored
//! once; a gap is refused (OutOfOrderSequence), an older epoch is fenced; batches without a
//! producer id, and producers with ids of their own, do not disturb one another.

mod common;

use bytes::{Bytes, BytesMut};
use common::{BACKENDS, small_config, test_dir};
use floodgate::{Error, Log, Offset, TopicConfig};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A batch of `n` records of producer `id` at `epoch`, its first sequence `seq` (`id` -1: not
/// idempotent).
fn batch(id: i64, epoch: i16, seq: i32, n: i32) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: if id < 0 { -1 } else { seq.wrapping_add(i) },
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("{id}/{epoch}/{}", seq.wrapping_add(i)))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

fn append(log: &Log, partition: u32, b: &Bytes) -> floodgate::Result<Offset> {
    let mut producer = log.producer();
    let ack = producer.try_append_batch("t", partition, b)?;
    ack.wait().map(|a| a.offset)
}

fn end(log: &Log, partition: u32) -> Offset {
    log.offsets("t", partition).unwrap().1
}

#[test]
fn retries_are_stored_once_and_gaps_and_fenced_epochs_are_refused() {
    for backend in BACKENDS {
        let dir = test_dir("idempotence");
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        log.create_topic("t", TopicConfig::new(2)).unwrap();
        // Producer 7, epoch 0: seven batches of three records, sequences 0, 3, ..., 18.
        let sent: Vec<Bytes> = (0..7).map(|k| batch(7, 0, 3 * k, 3)).collect();
        let offsets: Vec<Offset> = sent.iter().map(|b| append(&log, 0, b).unwrap()).collect();
        assert_eq!(offsets, (0..7).map(|k| Offset(3 * k)).collect::<Vec<_>>());
        assert_eq!(end(&log, 0), Offset(21));
        // Retries of the last five: their offsets, nothing stored.
        for k in 2..7 {
            assert_eq!(
                append(&log, 0, &sent[k]).unwrap(),
                offsets[k],
                "retry of {k}"
            );
        }
        assert_eq!(end(&log, 0), Offset(21), "retries are not stored");
        // One older than the five kept is out of order, as is a gap.
        assert!(matches!(
            append(&log, 0, &sent[1]),
            Err(Error::OutOfOrderSequence)
        ));
        assert!(matches!(
            append(&log, 0, &batch(7, 0, 24, 1)),
            Err(Error::OutOfOrderSequence)
        ));
        assert_eq!(end(&log, 0), Offset(21));
        // The next in sequence is stored.
        assert_eq!(append(&log, 0, &batch(7, 0, 21, 2)).unwrap(), Offset(21));
        // A new epoch starts at sequence 0, and fences the old one.
        assert!(matches!(
            append(&log, 0, &batch(7, 1, 5, 1)),
            Err(Error::OutOfOrderSequence)
        ));
        assert_eq!(append(&log, 0, &batch(7, 1, 0, 1)).unwrap(), Offset(23));
        assert!(matches!(
            append(&log, 0, &batch(7, 0, 23, 1)),
            Err(Error::ProducerFenced)
        ));
        // Other producers, other partitions and batches without a producer id are their own.
        assert_eq!(append(&log, 0, &batch(8, 0, 40, 1)).unwrap(), Offset(24));
        assert_eq!(append(&log, 1, &batch(7, 0, 100, 1)).unwrap(), Offset(0));
        let plain = batch(-1, -1, 0, 1);
        assert_eq!(append(&log, 0, &plain).unwrap(), Offset(25));
        assert_eq!(
            append(&log, 0, &plain).unwrap(),
            Offset(26),
            "no id: stored again"
        );
        assert_eq!(end(&log, 0), Offset(27));
        // What was stored reads back once each.
        let records = log.read("t", 0, Offset(0), 1 << 20).unwrap();
        let values: Vec<String> = (records.iter())
            .map(|r| String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(values.len(), 27);
        assert_eq!(values[20], "7/0/20");
        assert_eq!(values[21], "7/0/21");
        assert_eq!(values[23], "7/1/0");
        log.close().unwrap();
    }
}

/// Sequences wrap from i32::MAX to 0, as Kafka's producers wrap them.
#[test]
fn sequences_wrap_around() {
    let dir = test_dir("idempotence-wrap");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let near_end = batch(9, 0, i32::MAX - 1, 2);
    assert_eq!(append(&log, 0, &near_end).unwrap(), Offset(0));
    assert_eq!(append(&log, 0, &batch(9, 0, 0, 1)).unwrap(), Offset(2));
    assert_eq!(
        append(&log, 0, &near_end).unwrap(),
        Offset(0),
        "still a retry"
    );
    log.close().unwrap();
}

/// Producer ids are never handed out twice, across restarts.
#[test]
fn producer_ids_are_new_across_restarts() {
    let dir = test_dir("idempotence-ids");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
        for _ in 0..5 {
            seen.push(log.new_producer_id().unwrap());
        }
        log.close().unwrap();
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

/// A retry that crosses a restart (the producer never got its answer) is still known: recovery
/// reads the producers' last batches from the segment it scans, and the writer starts from them.
#[test]
fn retries_across_a_restart_are_stored_once() {
    for backend in BACKENDS {
        let dir = test_dir("idempotence-restart");
        let sent: Vec<Bytes> = (0..4).map(|k| batch(11, 2, 5 * k, 5)).collect();
        {
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            for (k, b) in sent.iter().enumerate() {
                assert_eq!(append(&log, 0, b).unwrap(), Offset(5 * k as u64));
            }
            log.close().unwrap();
        }
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(
            append(&log, 0, &sent[3]).unwrap(),
            Offset(15),
            "the retry's offset"
        );
        assert_eq!(append(&log, 0, &sent[1]).unwrap(), Offset(5));
        assert_eq!(end(&log, 0), Offset(20), "not stored again");
        assert!(matches!(
            append(&log, 0, &batch(11, 2, 21, 1)),
            Err(Error::OutOfOrderSequence)
        ));
        assert!(matches!(
            append(&log, 0, &batch(11, 1, 20, 1)),
            Err(Error::ProducerFenced)
        ));
        assert_eq!(append(&log, 0, &batch(11, 2, 20, 1)).unwrap(), Offset(20));
        log.close().unwrap();
    }
}

/// The files of kind `suffix` in the shard's folder, sorted.
fn shard_files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("shard-000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// A retry of a batch in an older segment, sealed with its index file (which recovery does
/// not scan), is still known after a restart: each seal writes the producers' state beside
/// the index file. Also when a crash left the newest sealed segment without either (recovery
/// scans it from the snapshot before); a damaged snapshot is reported and loses nothing.
#[test]
fn retries_of_batches_in_sealed_segments_are_stored_once_after_a_restart() {
    for backend in BACKENDS {
        let dir = test_dir("idempotence-sealed");
        let config = || small_config(dir.path(), backend);
        let early: Vec<Bytes> = (0..2).map(|k| batch(12, 0, 3 * k, 3)).collect();
        let sent: Vec<Bytes> = (0..200).map(|k| batch(11, 2, 200 * k, 200)).collect();
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("t", TopicConfig::new(2)).unwrap();
            for (k, b) in early.iter().enumerate() {
                assert_eq!(append(&log, 1, b).unwrap(), Offset(3 * k as u64));
            }
            for (k, b) in sent.iter().enumerate() {
                assert_eq!(append(&log, 0, b).unwrap(), Offset(200 * k as u64));
            }
            log.close().unwrap();
        }
        let sealed = shard_files(dir.path(), ".idx").len();
        assert!(
            sealed >= 2,
            "{sealed} sealed segments: the test needs rolls"
        );
        assert_eq!(shard_files(dir.path(), ".producers").len(), sealed);

        let log = Log::open(config()).unwrap();
        assert_eq!(log.recovery_report().segments_scanned, 1, "the newest only");
        // Producer 12's batches lie in the first segment.
        assert_eq!(append(&log, 1, &early[1]).unwrap(), Offset(3));
        assert_eq!(append(&log, 1, &early[0]).unwrap(), Offset(0));
        assert_eq!(end(&log, 1), Offset(6), "not stored again");
        assert!(matches!(
            append(&log, 1, &batch(12, 0, 7, 1)),
            Err(Error::OutOfOrderSequence)
        ));
        assert_eq!(append(&log, 1, &batch(12, 0, 6, 1)).unwrap(), Offset(6));
        assert_eq!(append(&log, 0, &sent[199]).unwrap(), Offset(199 * 200));
        assert_eq!(append(&log, 0, &sent[196]).unwrap(), Offset(196 * 200));
        assert_eq!(end(&log, 0), Offset(40_000));
        log.close().unwrap();

        // As a crash between a roll and the helper's seal leaves it.
        let newest_idx = shard_files(dir.path(), ".idx").pop().unwrap();
        let newest_snapshot = shard_files(dir.path(), ".producers").pop().unwrap();
        std::fs::remove_file(&newest_idx).unwrap();
        std::fs::remove_file(&newest_snapshot).unwrap();
        let log = Log::open(config()).unwrap();
        assert_eq!(log.recovery_report().indexes_rebuilt, vec![newest_idx]);
        assert!(
            newest_snapshot.exists(),
            "written again with the index file"
        );
        assert_eq!(append(&log, 1, &early[1]).unwrap(), Offset(3));
        assert_eq!(append(&log, 0, &sent[198]).unwrap(), Offset(198 * 200));
        assert_eq!((end(&log, 0), end(&log, 1)), (Offset(40_000), Offset(7)));
        log.close().unwrap();

        let mut bytes = std::fs::read(&newest_snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newest_snapshot, &bytes).unwrap();
        let log = Log::open(config()).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.producer_snapshots_damaged.len(), 1);
        assert_eq!(report.producer_snapshots_damaged[0].0, newest_snapshot);
        assert!(
            (report.lines().iter()).any(|l| l.contains("damaged producer snapshot")),
            "{:?}",
            report.lines()
        );
        assert_eq!((end(&log, 0), end(&log, 1)), (Offset(40_000), Offset(7)));
        log.close().unwrap();
    }
}

/// A partition forgets an idempotent producer whose last batch there is older than
/// `producer_id_expiry` (Kafka's `producer.id.expiration.ms`): its next batch is stored as a
/// new producer's, whatever its sequence. One still sending is remembered.
#[test]
fn idle_producers_are_forgotten_after_their_expiry() {
    let zero_dir = test_dir("idempotence-expiry-zero");
    let zero =
        small_config(zero_dir.path(), BACKENDS[0]).producer_id_expiry(std::time::Duration::ZERO);
    let e = Log::open(zero).err().expect("an expiry of zero is refused");
    assert!(e.to_string().contains("at least 1 ms"), "{e}");
    let dir = test_dir("idempotence-expiry");
    let expiry = std::time::Duration::from_millis(300);
    let log = Log::open(small_config(dir.path(), BACKENDS[0]).producer_id_expiry(expiry)).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let (idle, busy) = (batch(7, 0, 0, 2), batch(8, 0, 0, 2));
    assert_eq!(append(&log, 0, &idle).unwrap(), Offset(0));
    assert_eq!(append(&log, 0, &busy).unwrap(), Offset(2));
    assert!(
        matches!(
            append(&log, 0, &batch(7, 0, 40, 1)),
            Err(Error::OutOfOrderSequence)
        ),
        "known: a gap is refused"
    );
    // Producer 8 sends every 50 ms, producer 7 nothing, for more than the expiry.
    let mut seq = 2;
    let until = std::time::Instant::now() + expiry * 3;
    while std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
        append(&log, 0, &batch(8, 0, seq, 1)).unwrap();
        seq += 1;
    }
    // 8 is remembered: a retry of its last batch is a duplicate, a gap refused.
    let last = batch(8, 0, seq - 1, 1);
    let stored = end(&log, 0);
    assert_eq!(append(&log, 0, &last).unwrap(), Offset(stored.0 - 1));
    assert!(matches!(
        append(&log, 0, &batch(8, 0, seq + 5, 1)),
        Err(Error::OutOfOrderSequence)
    ));
    // 7 is forgotten: the batch with a gap is taken as a new producer's first.
    assert_eq!(append(&log, 0, &batch(7, 0, 40, 1)).unwrap(), stored);
    assert_eq!(end(&log, 0), Offset(stored.0 + 1));
}
