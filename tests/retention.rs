//! Retention by size and by age: whole old segments go, offsets never restart, reads below the
//! earliest offset are a clear error, and an interrupted deletion is finished by recovery.

mod common;

use floodgate::Offset;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BACKENDS, copy_dir, payload, segments, small_config, test_dir};
use floodgate::{Error, Log, Record, TopicConfig};

const SEGMENT: u64 = 256 << 10;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends `n` records of 1 KiB to `partition` with `timestamp`, numbered from `first`, and waits
/// for their acks.
fn produce(log: &Log, partition: u32, first: u64, n: u64, timestamp: i64) {
    produce_to(log, "t", partition, first, n, timestamp);
}

/// As [`produce`], to `topic`.
fn produce_to(log: &Log, topic: &str, partition: u32, first: u64, n: u64, timestamp: i64) {
    let mut producer = log.producer();
    let acks: Vec<_> = (first..first + n)
        .map(|i| {
            let value = payload(i, 1024);
            let key = i.to_le_bytes();
            let record = Record::new(&value)
                .key(&key)
                .partition(partition)
                .timestamp(timestamp);
            producer.send(topic, record).unwrap()
        })
        .collect();
    for (i, ack) in (first..).zip(acks) {
        assert_eq!(ack.wait().unwrap().offset, Offset(i));
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `files` (segments of "t" alone, which "t" no longer reads) are deleted; topic
/// "keep" still reads its 20 records (the segment holding them stays).
fn segments_go_and_keep_stays(log: &Log, files: &[std::path::PathBuf]) {
    wait_until("segments nothing reads are deleted", || {
        files.iter().all(|f| !f.exists())
    });
    let keep: Vec<u64> = (log.read("keep", 0, Offset(0), 1 << 20).unwrap().iter())
        .map(|r| r.offset.0)
        .collect();
    assert_eq!(keep, (0..20).collect::<Vec<_>>());
}

/// Every record from the earliest offset on is intact, and just below it is out of range.
fn check_from_earliest(log: &Log, partition: u32) -> (Offset, Offset) {
    let (earliest, next) = log.offsets("t", partition).unwrap();
    let mut offset = earliest;
    while offset < next {
        for r in log.read("t", partition, offset, 64 << 10).unwrap() {
            assert_eq!(r.offset, offset);
            assert_eq!(r.value.as_deref(), Some(&payload(offset.0, 1024)[..]));
            offset += 1;
        }
    }
    if earliest > Offset(0) {
        match log.read("t", partition, earliest.prev().unwrap(), 1 << 10) {
            Err(Error::OffsetOutOfRange {
                earliest: e,
                next: n,
                ..
            }) => assert_eq!((e, n), (earliest, next)),
            other => panic!("reading below the earliest offset: {other:?}"),
        }
    }
    (earliest, next)
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_and_offsets_never_restart() {
    for backend in BACKENDS {
        let dir = test_dir("retain-size");
        let config = || small_config(dir.path(), backend).retention_bytes(4 * SEGMENT);
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(2)).unwrap();
        // Partition 1 has records only at the start: retention deletes all of them.
        produce(&log, 1, 0, 50, now_ms());
        produce(&log, 0, 0, 3000, now_ms());
        wait_until("segments are deleted", || {
            segments(dir.path(), 0).len() <= 5
        });
        let (earliest, next) = check_from_earliest(&log, 0);
        assert!(earliest > Offset(0), "old records were deleted");
        assert_eq!(next, Offset(3000));
        assert_eq!(
            check_from_earliest(&log, 1),
            (Offset(50), Offset(50)),
            "all deleted, none restart"
        );
        drop(log);

        let log = Log::open(config()).unwrap();
        assert_eq!(
            check_from_earliest(&log, 0),
            (Offset(earliest.0), Offset(3000))
        );
        assert_eq!(check_from_earliest(&log, 1), (Offset(50), Offset(50)));
        // New records continue the partition's offsets.
        produce(&log, 1, 50, 5, now_ms());
        assert_eq!(check_from_earliest(&log, 1), (Offset(50), Offset(55)));
    }
}

#[test]
fn retention_by_age_keeps_recent_segments() {
    let dir = test_dir("retain-age");
    let config = small_config(dir.path(), BACKENDS[0]).retention_age(Duration::from_secs(600));
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    // An hour old, then fresh: only segments holding nothing but old records go.
    produce(&log, 0, 0, 2000, now_ms() - 3_600_000);
    produce(&log, 0, 2000, 1000, now_ms());
    wait_until("old segments are deleted", || {
        log.offsets("t", 0).unwrap().0 > Offset(1000)
    });
    let (earliest, next) = check_from_earliest(&log, 0);
    assert!(
        earliest <= Offset(2000),
        "fresh records are kept (earliest {earliest})"
    );
    assert_eq!(next, Offset(3000));
    let fresh = log.offset_for_timestamp("t", 0, now_ms() - 60_000).unwrap();
    assert_eq!(fresh, Some(Offset(2000)));
}

/// A topic's own retention hides its records from sealed segments older than it, survives a
/// restart, and frees a segment's file once no topic reads anything in it or before it; a
/// topic without one keeps everything the log keeps.
#[test]
fn a_topics_own_retention_hides_its_old_records_and_deletes_segments_nothing_reads() {
    let dir = test_dir("retain-topic");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    let ten_minutes = Duration::from_secs(600);
    log.create_topic("t", TopicConfig::new(1).retention_age(ten_minutes))
        .unwrap();
    log.create_topic("keep", TopicConfig::new(1)).unwrap();
    // An hour old: a stretch of "t" only, then "t" beside "keep", then fresh records of "t".
    let old = now_ms() - 3_600_000;
    produce(&log, 0, 0, 2000, old);
    // Every one but the newest holds only records of "t".
    let mut of_t_alone = segments(dir.path(), 0);
    of_t_alone.pop();
    assert!(of_t_alone.len() >= 3, "{of_t_alone:?}");
    produce_to(&log, "keep", 0, 0, 20, old);
    produce(&log, 0, 2000, 500, old);
    produce(&log, 0, 2500, 1000, now_ms());
    wait_until("the topic's old records are no longer read", || {
        log.offsets("t", 0).unwrap().0 >= Offset(2000)
    });
    let (earliest, next) = check_from_earliest(&log, 0);
    assert!(
        earliest <= Offset(2500),
        "fresh records are read (earliest {earliest})"
    );
    assert_eq!(next, Offset(3500));
    // The segments holding only expired records of "t" go; the other topic's records are all
    // read, so the segment holding them stays.
    segments_go_and_keep_stays(&log, &of_t_alone);
    let info = log.list_topics();
    assert_eq!(info[1].name, "t");
    assert_eq!(info[1].retention_age, Some(ten_minutes));
    drop(log);

    let log = Log::open(config()).unwrap();
    assert_eq!(
        check_from_earliest(&log, 0),
        (earliest, next),
        "as before the restart"
    );
    assert_eq!(log.offsets("keep", 0).unwrap(), (Offset(0), Offset(20)));
    assert_eq!(log.list_topics()[1].retention_age, Some(ten_minutes));
    // Without its own retention, the topic keeps what is left.
    log.set_topic_retention("t", None).unwrap();
    produce(&log, 0, 3500, 10, old);
    assert_eq!(log.list_topics()[1].retention_age, None);
    assert_eq!(log.offsets("t", 0).unwrap().0, earliest);
}

/// A topic's own retention by size keeps each of its partitions between its bytes and about a
/// segment more, by whole sealed segments; other topics and partitions keep everything; it
/// survives a restart and changes at runtime.
#[test]
fn a_topics_retention_by_size_keeps_each_partition_near_its_bytes() {
    let dir = test_dir("retain-topic-bytes");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    let limit = 600 << 10;
    log.create_topic("t", TopicConfig::new(2).retention_bytes(limit))
        .unwrap();
    log.create_topic("keep", TopicConfig::new(1)).unwrap();
    produce(&log, 0, 0, 1000, now_ms());
    // Every one but the newest holds only records of partition 0.
    let mut of_t_alone = segments(dir.path(), 0);
    of_t_alone.pop();
    produce(&log, 1, 0, 10, now_ms());
    produce_to(&log, "keep", 0, 0, 20, now_ms());
    produce(&log, 0, 1000, 1500, now_ms());
    wait_until("the partition's oldest records are no longer read", || {
        log.offsets("t", 0).unwrap().0 >= Offset(1000)
    });
    // Each record's frame holds its 1 KiB value and less than 200 bytes more.
    let kept_within_limits = |log: &Log| {
        let (earliest, next) = check_from_earliest(log, 0);
        let kept = next.since(earliest);
        assert!(
            kept * 1200 >= limit,
            "{kept} records kept, under {limit} bytes"
        );
        assert!(
            kept * 1024 <= limit + 3 * SEGMENT,
            "{kept} records kept, far over {limit} bytes"
        );
        earliest
    };
    let earliest = kept_within_limits(&log);
    assert_eq!(check_from_earliest(&log, 1), (Offset(0), Offset(10)));
    segments_go_and_keep_stays(&log, &of_t_alone);
    assert_eq!(log.list_topics()[1].retention_bytes, Some(limit));
    drop(log);

    let log = Log::open(config()).unwrap();
    assert_eq!(
        log.offsets("t", 0).unwrap().0,
        earliest,
        "as before the restart"
    );
    assert_eq!(log.list_topics()[1].retention_bytes, Some(limit));
    // Without its own retention the topic keeps what it has; with a smaller one, less.
    log.set_topic_retention_bytes("t", None).unwrap();
    produce(&log, 0, 2500, 500, now_ms());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(log.offsets("t", 0).unwrap().0, earliest);
    assert_eq!(log.list_topics()[1].retention_bytes, None);
    log.set_topic_retention_bytes("t", Some(limit / 2)).unwrap();
    wait_until("the smaller retention moves the start", || {
        log.offsets("t", 0).unwrap().0 > earliest
    });
    let (earliest, next) = check_from_earliest(&log, 0);
    assert!(next.since(earliest) * 1200 >= limit / 2);
    assert_eq!(check_from_earliest(&log, 1), (Offset(0), Offset(10)));
}

/// Records deleted by request are no longer read, at once and after a restart; their
/// segments go once no partition reads anything in them, and offsets never restart.
#[test]
fn deleted_records_are_no_longer_read_and_their_segments_go_once_nothing_reads_them() {
    let dir = test_dir("delete-records");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config()).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, 1, 0, 10, now_ms());
    produce(&log, 0, 0, 2000, now_ms());
    let mut early = segments(dir.path(), 0);
    early.pop();
    assert!(early.len() >= 3, "{early:?}");
    produce(&log, 0, 2000, 1000, now_ms());
    assert_eq!(
        log.delete_records("t", 0, Offset(2500)).unwrap(),
        Offset(2500)
    );
    assert_eq!(check_from_earliest(&log, 0), (Offset(2500), Offset(3000)));
    // Never down; never past the end.
    assert_eq!(
        log.delete_records("t", 0, Offset(10)).unwrap(),
        Offset(2500)
    );
    match log.delete_records("t", 0, Offset(3001)) {
        Err(Error::OffsetOutOfRange { earliest, next, .. }) => {
            assert_eq!((earliest, next), (Offset(2500), Offset(3000)))
        }
        other => panic!("deleting past the end: {other:?}"),
    }
    assert!(matches!(
        log.delete_records("t", 2, Offset(0)),
        Err(Error::UnknownPartition { .. })
    ));
    // Partition 1's records are still read, so the segment holding them stays (retention
    // looks once a second).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(early[0].exists());
    assert_eq!(log.offsets("t", 1).unwrap(), (Offset(0), Offset(10)));
    assert_eq!(log.delete_records("t", 1, Offset(10)).unwrap(), Offset(10));
    wait_until("segments nothing reads are deleted", || {
        early.iter().all(|f| !f.exists())
    });
    drop(log);

    let log = Log::open(config()).unwrap();
    assert_eq!(check_from_earliest(&log, 0), (Offset(2500), Offset(3000)));
    assert_eq!(log.offsets("t", 1).unwrap(), (Offset(10), Offset(10)));
    produce(&log, 1, 10, 5, now_ms());
    assert_eq!(log.offsets("t", 1).unwrap(), (Offset(10), Offset(15)));
}

/// A topic cannot keep records longer than the log, whose retention deletes shared segments.
#[test]
fn a_topics_retention_longer_than_the_logs_is_refused() {
    let dir = test_dir("retain-topic-long");
    let hour = Duration::from_secs(3600);
    let log = Log::open(small_config(dir.path(), BACKENDS[0]).retention_age(hour)).unwrap();
    match log.create_topic("t", TopicConfig::new(1).retention_age(2 * hour)) {
        Err(Error::TopicRetentionAboveLog { topic, asked, log }) => {
            assert_eq!((topic.as_str(), asked, log), ("t", 2 * hour, Some(hour)))
        }
        other => panic!("a retention above the log's: {other:?}"),
    }
    assert!(log.list_topics().is_empty(), "nothing was created");
    log.create_topic("t", TopicConfig::new(1).retention_age(hour))
        .unwrap();
    assert!(matches!(
        log.set_topic_retention("t", Some(hour + Duration::from_millis(1))),
        Err(Error::TopicRetentionAboveLog { .. })
    ));
    assert!(matches!(
        log.set_topic_retention("t", Some(Duration::ZERO)),
        Err(Error::TopicRetentionAboveLog { .. })
    ));
    assert_eq!(log.list_topics()[0].retention_age, Some(hour));
}

/// The `start-offsets.json` a deletion of shard 0's segments below `files[first_segment]` writes:
/// for every partition with records in the shard (the internal offsets topic's too), the first
/// offset kept, or the offset after the last one deleted when none is kept.
fn start_offsets_after_deleting(files: &[std::path::PathBuf], first_segment: usize) -> String {
    use std::collections::BTreeMap;
    let mut starts: BTreeMap<(u32, u32), (bool, Offset)> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let (frames, _) =
            floodgate::inspect::scan_segment_file(file, 64 << 10, Default::default()).unwrap();
        for f in frames {
            let start = starts
                .entry((f.topic_id, f.partition))
                .or_insert((false, Offset(0)));
            if i < first_segment {
                start.1 = f.entry.last_offset + 1;
            } else if !start.0 {
                *start = (true, f.entry.base_offset);
            }
        }
    }
    let partitions: Vec<String> = starts
        .iter()
        .map(|((topic, partition), (_, start))| format!("[{topic},{partition},{start}]"))
        .collect();
    format!(
        r#"{{"version":1,"first_segment":{first_segment},"partitions":[{}]}}"#,
        partitions.join(",")
    )
}

/// A crash after `start-offsets.json` is written but before the files go: recovery deletes
/// them and starts each partition at its recorded offset.
#[test]
fn recovery_finishes_an_interrupted_deletion() {
    let dir = test_dir("retain-crash");
    let config = || small_config(dir.path(), BACKENDS[0]);
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, 0, 0, 2000, now_ms());
    }
    let files = segments(dir.path(), 0);
    assert!(files.len() > 4);
    // The first frame of segment 2 is where partition 0 starts once segments 0 and 1 go.
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&files[2], 64 << 10, Default::default()).unwrap();
    let t = common::topic_id(dir.path(), "t");
    let first = frames
        .iter()
        .find(|f| f.topic_id == t)
        .unwrap()
        .entry
        .base_offset;
    std::fs::write(
        dir.path().join("shard-000/start-offsets.json"),
        start_offsets_after_deleting(&files, 2),
    )
    .unwrap();
    let log = Log::open(config()).unwrap();
    assert_eq!(segments(dir.path(), 0).len(), files.len() - 2);
    assert!(!files[0].with_extension("idx").exists());
    assert_eq!(check_from_earliest(&log, 0), (first, Offset(2000)));
}

/// Every state a power loss can leave of a deletion of the two oldest segments: the new
/// `start-offsets.json` not yet durable (the old state: no file), or durable (it is replaced with
/// an fsync and a directory fsync before any file goes) with any subset of the four doomed files
/// (two segments, two index files) already unlinked: unlinks are ordered only by the directory
/// fsync after the last. Each state opens with every record from its start offset, dense, none
/// of a doomed segment left, and the next record at the offset after the last.
#[test]
fn every_crash_state_of_a_deletion_recovers() {
    let dir = test_dir("retain-states");
    {
        let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, 0, 0, 2000, now_ms());
    }
    let files = segments(dir.path(), 0);
    assert!(files.len() > 4);
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&files[2], 64 << 10, Default::default()).unwrap();
    let t = common::topic_id(dir.path(), "t");
    let first = frames
        .iter()
        .find(|f| f.topic_id == t)
        .unwrap()
        .entry
        .base_offset;
    let doomed: Vec<_> = files[..2]
        .iter()
        .flat_map(|f| [f.clone(), f.with_extension("idx")])
        .collect();
    assert!(
        doomed.iter().all(|f| f.exists()),
        "sealed segments have index files"
    );
    let relative = |f: &std::path::Path| f.strip_prefix(dir.path()).unwrap().to_owned();
    for state in 0..=(1u32 << doomed.len()) {
        let image = test_dir("retain-state");
        copy_dir(dir.path(), image.path());
        let durable = state < 1 << doomed.len();
        if durable {
            std::fs::write(
                image.path().join("shard-000/start-offsets.json"),
                start_offsets_after_deleting(&files, 2),
            )
            .unwrap();
            for (i, f) in doomed.iter().enumerate() {
                if state & (1 << i) != 0 {
                    std::fs::remove_file(image.path().join(relative(f))).unwrap();
                }
            }
        }
        let log = Log::open(small_config(image.path(), BACKENDS[0])).unwrap();
        let start = if durable { first } else { Offset(0) };
        assert_eq!(
            check_from_earliest(&log, 0),
            (start, Offset(2000)),
            "state {state}"
        );
        if durable {
            for f in &doomed {
                assert!(
                    !image.path().join(relative(f)).exists(),
                    "state {state}: {f:?}"
                );
            }
        }
        let at = log
            .producer()
            .send("t", Record::new(b"next").partition(0))
            .and_then(floodgate::Ack::wait)
            .unwrap();
        assert_eq!(at.offset, Offset(2000), "state {state}");
    }
}

/// Retention overtakes a consumer that has not read the oldest records: by default its poll
/// says so (OffsetOutOfRange); with skip_deleted it goes on from the earliest stored record and
/// counts what it missed.
#[test]
fn a_consumer_overtaken_by_retention_fails_clearly_or_skips_when_asked() {
    let dir = test_dir("retain-consumer");
    let config = small_config(dir.path(), BACKENDS[0]).retention_bytes(3 * SEGMENT);
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut strict = log.consumer("t").build().unwrap();
    let mut lenient = log.consumer("t").skip_deleted(true).build().unwrap();
    produce(&log, 0, 0, 2000, now_ms());
    wait_until("old segments are deleted", || {
        log.offsets("t", 0).unwrap().0 > Offset(0)
    });
    let (earliest, next) = log.offsets("t", 0).unwrap();
    match strict.poll(Duration::from_millis(100)) {
        Err(Error::OffsetOutOfRange {
            offset: Offset(0), ..
        }) => {}
        other => panic!("expected OffsetOutOfRange at 0, got {other:?}"),
    }
    let mut expect = None;
    let mut seen = 0;
    while seen < next - earliest {
        for r in lenient.poll(Duration::from_millis(100)).unwrap() {
            let o = r.record.offset;
            assert_eq!(*expect.get_or_insert(o), o, "dense from where it resumed");
            assert_eq!(r.record.value.as_deref(), Some(&payload(o.0, 1024)[..]));
            expect = Some(o + 1);
            seen += 1;
        }
    }
    assert_eq!(lenient.skipped(), earliest.0);
    assert_eq!(expect, Some(next));
}

/// The same with a consumer of several partitions, which reads the log in position order:
/// the partitions whose records retention deleted fail clearly, or skip to their earliest
/// stored record and go on densely, and the other partitions lose nothing.
#[test]
fn a_consumer_of_many_partitions_overtaken_by_retention_fails_clearly_or_skips() {
    let dir = test_dir("retain-consumer-many");
    let config = small_config(dir.path(), BACKENDS[0]).retention_bytes(3 * SEGMENT);
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    let mut strict = log.consumer("t").build().unwrap();
    let mut lenient = log.consumer("t").skip_deleted(true).build().unwrap();
    // Partition 2 gets records only at the end: retention deletes none of them.
    produce(&log, 0, 0, 1000, now_ms());
    produce(&log, 1, 0, 1000, now_ms());
    produce(&log, 2, 0, 20, now_ms());
    wait_until("old segments are deleted", || {
        log.offsets("t", 0).unwrap().0 > Offset(0) && log.offsets("t", 1).unwrap().0 > Offset(0)
    });
    let mut failed = false;
    for _ in 0..1000 {
        match strict.poll(Duration::from_millis(100)) {
            Err(Error::OffsetOutOfRange {
                offset: Offset(0),
                partition,
                ..
            }) if partition < 2 => {
                failed = true;
                break;
            }
            Ok(records) => assert!(records.iter().all(|r| r.partition == 2)),
            other => panic!("expected OffsetOutOfRange at 0, got {other:?}"),
        }
    }
    assert!(failed, "the strict consumer is told");
    let ranges: Vec<(Offset, Offset)> = (0..3).map(|p| log.offsets("t", p).unwrap()).collect();
    let total: u64 = ranges.iter().map(|(e, n)| n.since(*e)).sum();
    let mut expect = [None; 3];
    let mut seen = 0;
    while seen < total {
        for r in lenient.poll(Duration::from_millis(100)).unwrap() {
            let (p, o) = (r.partition as usize, r.record.offset);
            assert_eq!(*expect[p].get_or_insert(o), o, "partition {p} dense");
            assert_eq!(r.record.value.as_deref(), Some(&payload(o.0, 1024)[..]));
            expect[p] = Some(o + 1);
            seen += 1;
        }
    }
    assert_eq!(
        lenient.skipped(),
        ranges.iter().map(|(e, _)| e.0).sum::<u64>()
    );
    for (p, (earliest, next)) in ranges.iter().enumerate() {
        // A partition retention emptied delivers nothing.
        assert_eq!(expect[p].unwrap_or(*earliest), *next, "partition {p}");
        if p == 2 {
            assert_eq!(*earliest, Offset(0));
        }
    }
}

/// A damaged `start-offsets.json` (one digit of `first_segment` changed) is refused before
/// open deletes anything, whether it points past the newest segment or at records retention
/// never deleted: every segment is still there, and with the file restored every record reads
/// back (open used to delete the segments below it, all of them past the newest).
#[test]
fn a_damaged_start_offsets_file_deletes_nothing() {
    let dir = test_dir("retain-damaged-start");
    let config = || small_config(dir.path(), BACKENDS[0]).retention_bytes(4 * SEGMENT);
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, 0, 0, 3000, now_ms());
        wait_until("segments are deleted", || {
            segments(dir.path(), 0).len() <= 5
        });
    }
    let start = dir.path().join("shard-000/start-offsets.json");
    let good = std::fs::read_to_string(&start).unwrap();
    let files = segments(dir.path(), 0);
    let first: u64 = files[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let newest = first + files.len() as u64 - 1;
    let field = format!("\"first_segment\":{first}");
    assert!(good.contains(&field), "{good}");
    for wrong in [newest + 10, first + 2] {
        let damaged = good.replace(&field, &format!("\"first_segment\":{wrong}"));
        std::fs::write(&start, damaged).unwrap();
        let e = Log::open(config()).err().expect("refused");
        let message = e.to_string();
        assert!(
            matches!(&e, Error::Corrupt { path, .. } if path.ends_with("start-offsets.json")),
            "{message}"
        );
        assert!(message.contains("does not match the segments"), "{message}");
        assert_eq!(segments(dir.path(), 0), files, "nothing deleted ({wrong})");
    }
    std::fs::write(&start, good).unwrap();
    let log = Log::open(config()).unwrap();
    let (earliest, next) = check_from_earliest(&log, 0);
    assert!(earliest > Offset(0));
    assert_eq!(next, Offset(3000));
}
