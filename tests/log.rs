//! Append, close, reopen and read back, across segment rolls, partitions and shards, on both
//! I/O backends; and the errors a user can provoke.

mod common;

use floodgate::Offset;
use std::collections::HashMap;
use std::time::Duration;

use common::{BACKENDS, payload, segments, small_config, test_dir};
use floodgate::{Durability, Error, Log, Record, ShardStats, TopicConfig};

/// Sends `n` records numbered from `first` round-robin over partitions and returns
/// (partition, offset) → record number.
fn produce(log: &Log, topic: &str, first: u64, n: u64) -> HashMap<(u32, u64), u64> {
    let mut producer = log.producer();
    let mut acks = Vec::new();
    for i in first..first + n {
        let value = payload(i, 20 + (i as usize * 37) % 3000);
        let key = i.to_le_bytes();
        let ack = producer
            .send(topic, Record::new(&value).key(&key).header("n", Some(&key)))
            .unwrap();
        acks.push((i, ack));
    }
    acks.into_iter()
        .map(|(i, ack)| {
            let at = ack.wait().unwrap();
            ((at.partition, at.offset.0), i)
        })
        .collect()
}

/// Reads every partition from its earliest offset and checks each record against `expect`.
fn check_all(log: &Log, topic: &str, partitions: u32, expect: &HashMap<(u32, u64), u64>) {
    let mut seen = 0;
    for p in 0..partitions {
        let (earliest, next) = log.offsets(topic, p).unwrap();
        assert_eq!(earliest, Offset(0));
        let mut offset = 0;
        while offset < next.0 {
            let records = log.read(topic, p, Offset(offset), 64 << 10).unwrap();
            assert!(!records.is_empty(), "no progress at {p}/{offset}");
            for r in records {
                assert_eq!(r.offset, Offset(offset), "offsets are dense");
                let i = expect[&(p, offset)];
                assert_eq!(r.key.as_deref(), Some(&i.to_le_bytes()[..]));
                let want = payload(i, 20 + (i as usize * 37) % 3000);
                assert_eq!(r.value.as_deref(), Some(&want[..]), "record {i}");
                assert_eq!(r.headers.len(), 1);
                assert_eq!(r.headers[0].0, "n");
                offset += 1;
                seen += 1;
            }
        }
    }
    assert_eq!(seen, expect.len());
}

#[test]
fn append_reopen_read_across_rolls_partitions_and_shards() {
    for backend in BACKENDS {
        let dir = test_dir("append");
        let config = || small_config(dir.path(), backend).shards(2);
        let mut expect;
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("orders", TopicConfig::new(5)).unwrap();
            expect = produce(&log, "orders", 0, 3000);
            assert_eq!(expect.len(), 3000, "every ack is unique");
            check_all(&log, "orders", 5, &expect);
            log.close().unwrap();
        }
        assert!(common::segments(dir.path(), 0).len() > 2, "segments rolled");
        {
            let log = Log::open(config()).unwrap();
            assert_eq!(log.recovery_report().torn_tails.len(), 0);
            check_all(&log, "orders", 5, &expect);
            expect.extend(produce(&log, "orders", 3000, 500));
            check_all(&log, "orders", 5, &expect);
        }
        let log = Log::open(config()).unwrap();
        check_all(&log, "orders", 5, &expect);
    }
}

/// `Log::stats` counts each shard writer's records, batches, writes, flushes and rolls, and
/// starts from zero at each open.
#[test]
fn writer_stats_count_what_the_writer_did() {
    for backend in BACKENDS {
        let dir = test_dir("stats");
        let config = small_config(dir.path(), backend).shards(2);
        let log = Log::open(config.clone()).unwrap();
        assert!(log.stats().iter().all(|s| *s == ShardStats::default()));
        log.create_topic("orders", TopicConfig::new(5)).unwrap();
        // Creating the topic records it in the internal offsets topic.
        let internal: u64 = log.stats().iter().map(|s| s.records).sum();
        produce(&log, "orders", 0, 3000);
        let stats = log.stats();
        assert_eq!(stats.len(), 2);
        let records: u64 = stats.iter().map(|s| s.records).sum();
        assert_eq!(records, internal + 3000);
        let mut total = ShardStats::default();
        for s in &stats {
            total += *s;
        }
        assert_eq!(total.records, internal + 3000);
        assert_eq!(total.writes, stats[0].writes + stats[1].writes);
        assert_eq!(
            total.flush_nanos,
            stats[0].flush_nanos + stats[1].flush_nanos
        );
        for s in &stats {
            assert!(s.batches >= s.writes && s.batches <= s.records, "{s:?}");
            assert!(
                s.writes > 0 && s.flushes > 0 && s.flushes <= s.writes,
                "{s:?}"
            );
            assert_eq!(s.write_bytes % 4096, 0, "{s:?}");
            assert!(s.write_bytes >= s.records * 20, "{s:?}");
            assert!(s.write_nanos > 0 && s.flush_nanos > 0, "{s:?}");
        }
        drop(log);
        let rolled = common::segments(dir.path(), 0).len() as u64 - 1;
        assert!(rolled > 0, "segments rolled");
        assert_eq!(stats[0].rolls, rolled);
        let log = Log::open(config).unwrap();
        assert!(
            log.stats().iter().all(|s| *s == ShardStats::default()),
            "{:?}",
            log.stats()
        );
        produce(&log, "orders", 3000, 10);
        assert_eq!(log.stats().iter().map(|s| s.records).sum::<u64>(), 10);
    }
}

#[test]
fn interval_durability_acks_and_reads_back() {
    for backend in BACKENDS {
        let dir = test_dir("interval");
        let config = small_config(dir.path(), backend)
            .durability(Durability::Interval(Duration::from_millis(5)));
        let log = Log::open(config.clone()).unwrap();
        log.create_topic("t", TopicConfig::new(2)).unwrap();
        let expect = produce(&log, "t", 0, 1000);
        check_all(&log, "t", 2, &expect);
        drop(log);
        let log = Log::open(config).unwrap();
        check_all(&log, "t", 2, &expect);
    }
}

#[test]
fn ack_is_a_future() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let dir = test_dir("future");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let mut ack = std::pin::pin!(producer.send("t", Record::new(b"x")).unwrap());
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let at = loop {
        match ack.as_mut().poll(&mut cx) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending => std::thread::park_timeout(Duration::from_secs(1)),
        }
    };
    assert_eq!((at.partition, at.offset), (0, Offset(0)));
}

#[test]
fn topics_create_list_delete() {
    let dir = test_dir("topics");
    let log = Log::open(small_config(dir.path(), BACKENDS[1])).unwrap();
    log.create_topic("b", TopicConfig::new(3)).unwrap();
    log.create_topic("a", TopicConfig::new(1)).unwrap();
    assert!(matches!(
        log.create_topic("a", TopicConfig::new(1)),
        Err(Error::TopicExists(_))
    ));
    let names: Vec<_> = log
        .list_topics()
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(names, vec![("a".into(), 1), ("b".into(), 3)]);
    let mut producer = log.producer();
    producer
        .send("a", Record::new(b"old"))
        .unwrap()
        .wait()
        .unwrap();
    log.delete_topic("a").unwrap();
    assert!(matches!(log.delete_topic("a"), Err(Error::UnknownTopic(_))));
    assert!(matches!(
        log.read("a", 0, Offset(0), 100),
        Err(Error::UnknownTopic(_))
    ));
    // A new topic of the same name starts empty: the old records are not resurrected.
    log.create_topic("a", TopicConfig::new(1)).unwrap();
    assert_eq!(log.offsets("a", 0).unwrap(), (Offset(0), Offset(0)));
    drop(producer);
    drop(log);
    let log = Log::open(small_config(dir.path(), BACKENDS[1])).unwrap();
    assert_eq!(log.offsets("a", 0).unwrap(), (Offset(0), Offset(0)));
    assert_eq!(log.list_topics().len(), 2);
}

#[test]
fn user_errors_are_clear() {
    let dir = test_dir("errors");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    let second = Log::open(small_config(dir.path(), BACKENDS[0]));
    match second {
        Err(Error::Locked { holder, dir: d }) => {
            assert_eq!(holder, format!("pid {}", std::process::id()));
            assert_eq!(d, dir.path());
        }
        other => panic!("second open: {:?}", other.err()),
    }
    for bad in ["", "a b", "..", "x/y"] {
        let e = log.create_topic(bad, TopicConfig::new(1)).unwrap_err();
        assert!(matches!(e, Error::InvalidTopicName { .. }), "{e}");
    }
    assert!(matches!(
        log.create_topic("zero", TopicConfig::new(0)),
        Err(Error::InvalidPartitionCount { .. })
    ));
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let mut producer = log.producer();
    let big = vec![7u8; 16 << 10];
    let e = producer.send("t", Record::new(&big)).unwrap_err();
    assert!(
        matches!(e, Error::RecordTooLarge { max, .. } if max == 16 << 10),
        "{e}"
    );
    assert!(matches!(
        producer.send("nope", Record::new(b"x")),
        Err(Error::UnknownTopic(_))
    ));
    let e = producer
        .send("t", Record::new(b"x").partition(2))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnknownPartition {
                partition: 2,
                partitions: 2,
                ..
            }
        ),
        "{e}"
    );
    for _ in 0..3 {
        producer
            .send("t", Record::new(b"x").partition(1))
            .unwrap()
            .wait()
            .unwrap();
    }
    assert_eq!(log.read("t", 1, Offset(3), 100).unwrap(), vec![]);
    let e = log.read("t", 1, Offset(4), 100).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OffsetOutOfRange {
                offset: Offset(4),
                earliest: Offset(0),
                next: Offset(3),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("earliest offset is 0 and the next offset is 3"),
        "{e}"
    );
    assert!(matches!(
        log.read("t", 9, Offset(0), 100),
        Err(Error::UnknownPartition { .. })
    ));
    // Nothing oversized was written.
    assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(0)));
    // Segments above 4 GiB are refused (index positions are 32-bit).
    let other = test_dir("errors-config");
    let e = Log::open(small_config(other.path(), BACKENDS[0]).segment_bytes((4 << 30) + 4096))
        .err()
        .expect("refused");
    assert!(
        matches!(&e, Error::Config(m) if m.contains("at most 4294967296")),
        "{e}"
    );
    // A rewrite window too small to share between a segment's runs, or not whole blocks.
    for window in [4096, (64 << 10) + 100] {
        let config = small_config(other.path(), BACKENDS[0]).rewrite_window_bytes(window);
        let e = Log::open(config).err().expect("refused");
        assert!(
            matches!(&e, Error::Config(m) if m.contains("rewrite_window_bytes")),
            "{e}"
        );
    }
}

/// Sealed segments' index entries leave memory once their index file is written, and reads,
/// time lookups and recovery go through the files (with an index cache too small to hold them).
#[test]
fn index_memory_is_freed_when_segments_seal() {
    let dir = test_dir("index-memory");
    let partitions = 200u32;
    let n = 8000u64;
    let config = || small_config(dir.path(), BACKENDS[0]).index_cache_bytes(4 << 10);
    let check = |log: &Log| {
        for p in 0..partitions {
            let (earliest, next) = log.offsets("t", p).unwrap();
            assert_eq!(
                (earliest, next),
                (Offset(0), Offset(n / u64::from(partitions)))
            );
            let mut offset = 0;
            while offset < next.0 {
                for r in log.read("t", p, Offset(offset), 2 << 10).unwrap() {
                    let i = offset * u64::from(partitions) + u64::from(p);
                    assert_eq!(r.offset, Offset(offset));
                    assert_eq!(r.timestamp, 1_000_000 + i as i64);
                    assert_eq!(r.value.as_deref(), Some(&payload(i, 500)[..]));
                    offset += 1;
                }
            }
            let ts = 1_000_000 + (n / 2) as i64;
            // The first offset o of partition p with o × partitions + p ≥ n / 2.
            let want = (n / 2 - u64::from(p)).div_ceil(u64::from(partitions));
            assert_eq!(
                log.offset_for_timestamp("t", p, ts).unwrap(),
                Some(Offset(want))
            );
        }
    };
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(partitions)).unwrap();
        let mut producer = log.producer();
        let acks: Vec<_> = (0..n)
            .map(|i| {
                let value = payload(i, 500);
                let record = Record::new(&value)
                    .partition((i % u64::from(partitions)) as u32)
                    .timestamp(1_000_000 + i as i64);
                producer.send("t", record).unwrap()
            })
            .collect();
        for ack in acks {
            ack.wait().unwrap();
        }
        assert!(
            common::segments(dir.path(), 0).len() > 10,
            "segments rolled"
        );
        // The helper thread writes index files in the background.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.index_entries_in_memory() > 1000 {
            assert!(
                std::time::Instant::now() < deadline,
                "index entries stayed in memory"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        check(&log);
    }
    let log = Log::open(config()).unwrap();
    assert!(log.index_entries_in_memory() <= 1000);
    check(&log);
}

#[test]
fn offset_for_timestamp() {
    let dir = test_dir("time");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    for (i, ts) in [1000i64, 2000, 1500, 3000, 4000].into_iter().enumerate() {
        let v = [i as u8];
        producer
            .send("t", Record::new(&v).timestamp(ts))
            .unwrap()
            .wait()
            .unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp("t", 0, 0).unwrap(),
        Some(Offset(0))
    );
    assert_eq!(
        log.offset_for_timestamp("t", 0, 1200).unwrap(),
        Some(Offset(1))
    );
    assert_eq!(
        log.offset_for_timestamp("t", 0, 2500).unwrap(),
        Some(Offset(3))
    );
    assert_eq!(
        log.offset_for_timestamp("t", 0, 4000).unwrap(),
        Some(Offset(4))
    );
    assert_eq!(log.offset_for_timestamp("t", 0, 4001).unwrap(), None);
    let records = log.read("t", 0, Offset(0), 1 << 20).unwrap();
    let times: Vec<_> = records.iter().map(|r| r.timestamp).collect();
    assert_eq!(times, vec![1000, 2000, 1500, 3000, 4000]);
}

#[test]
fn routing_by_key_is_stable_and_keyless_records_are_sticky() {
    use floodgate::producer::{STICKY_BYTES, partition_for_key};
    // xxh3_64 with seed 0, modulo the partition count: pinned, so keys never move between
    // releases.
    assert_eq!(
        partition_for_key(b"user-9", 8),
        (xxhash_rust::xxh3::xxh3_64(b"user-9") % 8) as u32
    );
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    let dir = test_dir("routing");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    let mut producer = log.producer();
    for i in 0..50u32 {
        let key = format!("key-{i}");
        let at = producer
            .send("t", Record::new(b"v").key(key.as_bytes()))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(at.partition, partition_for_key(key.as_bytes(), 4));
    }
    // Keyless: runs of STICKY_BYTES of values per partition, then the next partition.
    let value = vec![0u8; 1000];
    let per_run = STICKY_BYTES.div_ceil(1000);
    let parts: Vec<u32> = (0..per_run * 3)
        .map(|_| {
            producer
                .send("t", Record::new(&value))
                .unwrap()
                .wait()
                .unwrap()
                .partition
        })
        .collect();
    let runs: Vec<&[u32]> = parts.chunk_by(|a, b| a == b).collect();
    assert!(runs.len() >= 3, "keyless records moved on: {parts:?}");
    for run in &runs[1..runs.len() - 1] {
        assert_eq!(
            run.len(),
            per_run,
            "a full run sticks to one partition: {parts:?}"
        );
    }
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1][0],
            (pair[0][0] + 1) % 4,
            "the next run goes to the next partition"
        );
    }
}

/// Large commits lend their write buffer to the tail cache instead of copying it, and the
/// buffer is reused once the cache and every reader let go. Records read from the cache stay
/// intact while later commits recycle buffers, and everything reads back after a reopen.
#[test]
fn records_read_from_shared_commit_buffers_stay_intact() {
    for backend in BACKENDS {
        let dir = test_dir("shared-buffers");
        let config = || small_config(dir.path(), backend).tail_cache_bytes(256 << 10);
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let mut acks = Vec::new();
        let mut held = Vec::new();
        let mut next = 0u64;
        for round in 0..40u64 {
            // 60 records of 1,000 bytes in one batch: commits fill most of a 64 KiB buffer.
            let values: Vec<Vec<u8>> = (next..next + 60).map(|i| payload(i, 1000)).collect();
            producer
                .send_batch("t", values.iter().map(|v| Record::new(v)), &mut acks)
                .unwrap();
            for ack in acks.drain(..) {
                ack.wait().unwrap();
            }
            // Read the fresh records (from the tail cache) and keep some of them.
            let records = log.read("t", 0, Offset(next), 1 << 20).unwrap();
            assert_eq!(records.len(), 60, "round {round}");
            for (r, v) in records.iter().zip(&values) {
                assert_eq!(r.value.as_deref(), Some(&v[..]));
            }
            if round % 5 == 0 {
                held.push((next, records));
            }
            next += 60;
        }
        // Later commits went through buffers the cache gave back; what readers hold is intact.
        for (first, records) in &held {
            for (k, r) in records.iter().enumerate() {
                let i = first + k as u64;
                assert_eq!(r.offset, Offset(i));
                assert_eq!(r.value.as_deref(), Some(&payload(i, 1000)[..]));
            }
        }
        drop(producer);
        drop(log);
        let log = Log::open(config()).unwrap();
        let mut offset = 0;
        while offset < next {
            for r in log.read("t", 0, Offset(offset), 1 << 20).unwrap() {
                assert_eq!(r.value.as_deref(), Some(&payload(offset, 1000)[..]));
                offset += 1;
            }
        }
    }
}

/// The writer puts commits in the tail cache only while some reader reads near the newest
/// data: not while nobody reads, nor for a reader far behind; a reader at the end turns it on,
/// and what it then reads is intact.
#[test]
fn tail_cache_fills_only_while_a_reader_is_near_the_newest_data() {
    for backend in BACKENDS {
        let dir = test_dir("tail-interest");
        let config = || small_config(dir.path(), backend).tail_cache_bytes(64 << 10);
        let cached = |log: &Log| log.stats().iter().map(|s| s.tail_cached_bytes).sum::<u64>();
        let send = |log: &Log, first: u64, n: u64| {
            let mut producer = log.producer();
            for i in first..first + n {
                let value = payload(i, 1000);
                producer
                    .send("t", Record::new(&value))
                    .unwrap()
                    .wait()
                    .unwrap();
            }
        };
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        send(&log, 0, 300);
        assert_eq!(cached(&log), 0, "nobody reads");
        drop(log);

        // A reader 300 KB behind, with a 64 KiB cache, would not find the commits there.
        let log = Log::open(config()).unwrap();
        assert_eq!(log.read("t", 0, Offset(0), 1).unwrap().len(), 1);
        send(&log, 300, 20);
        assert_eq!(cached(&log), 0, "the only reader is far behind");

        // A reader at the end.
        assert!(log.read("t", 0, Offset(320), 1 << 20).unwrap().is_empty());
        send(&log, 320, 30);
        assert!(cached(&log) >= 30 * 1000, "{}", cached(&log));
        let records = log.read("t", 0, Offset(320), 1 << 20).unwrap();
        assert_eq!(records.len(), 30);
        for (k, r) in records.iter().enumerate() {
            assert_eq!(r.offset, Offset(320 + k as u64));
            assert_eq!(r.value.as_deref(), Some(&payload(320 + k as u64, 1000)[..]));
        }
    }
}

/// Reopening with a smaller `segment_bytes` than the active segment already holds: the next
/// commit rolls to a new segment of the new size (the room left used to wrap around, so the
/// segment never rolled and grew without bound), and every record reads back.
#[test]
fn a_smaller_segment_size_on_reopen_rolls_at_the_next_commit() {
    for backend in BACKENDS {
        let dir = test_dir("shrink-segments");
        let config =
            |segment_bytes: u64| small_config(dir.path(), backend).segment_bytes(segment_bytes);
        let value = vec![3u8; 1000];
        let send = |log: &Log, n: u64| {
            let mut producer = log.producer();
            let acks: Vec<_> = (0..n)
                .map(|_| producer.send("t", Record::new(&value)).unwrap())
                .collect();
            for ack in acks {
                ack.wait().unwrap();
            }
        };
        {
            let log = Log::open(config(1 << 20)).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            send(&log, 700); // about 700 KiB into the first 1 MiB segment
        }
        {
            let log = Log::open(config(256 << 10)).unwrap();
            send(&log, 1000);
            assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(1700)));
        }
        let files = segments(dir.path(), 0);
        assert!(files.len() >= 4, "rolled into 256 KiB segments: {files:?}");
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= 1 << 20, "{} grew to {len} bytes", f.display());
        }
        let log = Log::open(config(256 << 10)).unwrap();
        let records = log.read("t", 0, Offset(0), 1 << 30).unwrap();
        assert_eq!(records.len(), 1700);
        assert!(
            records
                .iter()
                .all(|r| r.value.as_deref() == Some(&value[..]))
        );
    }
}

/// Deleting the `LOCK` file does not open the directory to a second log: the directory itself
/// is locked too (a second log used to lock a new `LOCK` file and both wrote the same log).
#[test]
fn a_deleted_lock_file_does_not_let_a_second_log_in() {
    let dir = test_dir("lock-deleted");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    let e = Log::open(small_config(dir.path(), BACKENDS[0]))
        .err()
        .expect("refused");
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    drop(log);
    Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
}
