//! Rewriting sealed segments (`Config::rewrite_sealed_segments`): each partition's records of
//! a segment put together, consecutive batches merged. Readers see the same records at the
//! same offsets before, during and after, across a reopen and across a crash in the middle of
//! putting the new files in place.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{BACKENDS, small_config, test_dir};
use floodgate::inspect::{RepairAction, plan_repair};
use floodgate::{Log, Offset};

const PARTITIONS: u32 = 200;
const PER: u64 = 300;

/// Checks that partition `p`'s records read one by one through its index are `0..PER`, as
/// `produce_numbered` sent them.
fn check_partitions(log: &Log) {
    for p in 0..PARTITIONS {
        let mut next = 0u64;
        while next < PER {
            let records = log.read("t", p, Offset(next), 4096).unwrap();
            assert!(!records.is_empty(), "partition {p} at {next}");
            let from = next;
            for r in records.iter().filter(|r| r.offset.0 >= from) {
                assert_eq!(r.offset, Offset(next), "partition {p}");
                let v = r.value.as_deref().unwrap();
                let i = u64::from_le_bytes(v[..8].try_into().unwrap());
                assert_eq!(i, next * u64::from(PARTITIONS) + u64::from(p));
                next += 1;
            }
        }
    }
}

/// Consumes every partition with one consumer (the log-order scan): every record once, in
/// order per partition.
fn consume_all(log: &Log) {
    let mut c = log.consumer("t").build().unwrap();
    let mut next = vec![0u64; PARTITIONS as usize];
    common::poll_numbered(&mut c, PARTITIONS, &mut next, u64::from(PARTITIONS) * PER);
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
}

/// Bytes of the segment files of shard 0 in `dir`.
fn segment_bytes_on_disk(dir: &Path) -> u64 {
    common::segments(dir, 0)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// A log in `dir` filled by `produce_numbered` (`PARTITIONS` x `PER`), its sealed segments
/// rewritten, closed and opened again (nothing of it in memory), and its segments' bytes.
fn rewritten_and_reopened(dir: &Path) -> (Log, u64) {
    let config = || small_config(dir, BACKENDS[0]).rewrite_sealed_segments(true);
    let log = Log::open(config()).unwrap();
    common::produce_numbered(&log, "t", PARTITIONS, PER);
    log.wait_for_rewrites();
    let stats = log.stats()[0];
    assert!(stats.rewrites_done >= 10, "{stats:?}");
    log.close().unwrap();
    (Log::open(config()).unwrap(), segment_bytes_on_disk(dir))
}

fn index_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("shard-000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    v.sort();
    v
}

#[test]
fn rewritten_segments_hold_the_same_records_in_fewer_batches() {
    for backend in BACKENDS {
        let dir = test_dir("rewrite");
        let config = || small_config(dir.path(), backend).rewrite_sealed_segments(true);
        let log = Log::open(config()).unwrap();
        let written = common::produce_numbered(&log, "t", PARTITIONS, PER);
        // Readers read while the segments are rewritten and replaced under them (the rewrites
        // start once the writer is quiet), until every rewrite is done.
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                log.wait_for_rewrites();
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                consume_all(&log);
                check_partitions(&log);
                if finished {
                    break;
                }
            }
        });
        let stats = log.stats()[0];
        assert!(stats.rewrites_done >= 2, "{stats:?}");
        assert_eq!(stats.rewrites_failed, 0, "{stats:?}");
        assert!(
            stats.rewrite_write_bytes < stats.rewrite_read_bytes,
            "{stats:?}"
        );
        consume_all(&log);
        check_partitions(&log);
        log.close().unwrap();
        // The log is smaller, and reads the same after a reopen.
        let on_disk = segment_bytes_on_disk(dir.path());
        assert!(
            on_disk < written,
            "{on_disk} bytes of segments, {written} written"
        );
        let log = Log::open(config()).unwrap();
        consume_all(&log);
        check_partitions(&log);
        log.close().unwrap();
    }
}

/// A crash after a rewrite was decided (its index file in place) and before its renames:
/// the open finishes it. A crash before: the open deletes what the rewrite left.
#[test]
fn an_open_finishes_a_decided_rewrite_and_drops_an_undecided_one() {
    let dir = test_dir("rewrite-crash");
    let plain = small_config(dir.path(), BACKENDS[0]);
    common::produce_numbered(&Log::open(plain.clone()).unwrap(), "t", PARTITIONS, PER);
    let before = test_dir("rewrite-crash-before");
    common::copy_dir(dir.path(), before.path());
    let log = Log::open(plain.clone().rewrite_sealed_segments(true)).unwrap();
    log.wait_for_rewrites();
    assert!(log.stats()[0].rewrites_done >= 2);
    log.close().unwrap();
    // The first rewritten segment as if the crash came before its renames: its new files
    // under their temporary names, the old ones back in place.
    let idx = index_files(dir.path())[0].clone();
    let seg = idx.with_extension("seg");
    let with = |p: &Path, ext: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(ext);
        std::path::PathBuf::from(s)
    };
    std::fs::rename(&seg, with(&seg, ".rw")).unwrap();
    std::fs::rename(&idx, with(&idx, ".rw")).unwrap();
    let old = |p: &Path| before.path().join(p.strip_prefix(dir.path()).unwrap());
    std::fs::copy(old(&seg), &seg).unwrap();
    std::fs::copy(old(&idx), &idx).unwrap();
    // A dry run of repair says what the open will do, and a plain open does it.
    let plan = plan_repair(dir.path()).unwrap();
    assert_eq!(
        plan,
        vec![RepairAction::FinishRewrite {
            segment: seg.clone()
        }]
    );
    assert!(!plan[0].needs_repair());
    let log = Log::open(plain.clone()).unwrap();
    assert_eq!(log.recovery_report().rewrites_finished, vec![seg.clone()]);
    assert!(!with(&seg, ".rw").exists() && !with(&idx, ".rw").exists());
    consume_all(&log);
    check_partitions(&log);
    log.close().unwrap();
    // An undecided rewrite: a segment written, no index file for it.
    std::fs::write(with(&seg, ".rw"), vec![7u8; 8192]).unwrap();
    assert_eq!(
        plan_repair(dir.path()).unwrap(),
        vec![RepairAction::DropRewrite {
            path: with(&seg, ".rw")
        }]
    );
    let log = Log::open(plain).unwrap();
    assert!(log.recovery_report().rewrites_finished.is_empty());
    assert!(!with(&seg, ".rw").exists());
    check_partitions(&log);
    log.close().unwrap();
}

/// Merged batches stay within the largest frame the log holds (`record_bytes_max` plus a
/// record's prefix and a frame's headers): recovery and `inspect --verify` refuse longer
/// frames, and readers size their buffers by it. One partition of 900-byte records merges
/// into batches as large as the bound allows, whether the segment is grouped in one pass or
/// two.
#[test]
fn merged_batches_stay_within_the_largest_frame() {
    // In one pass, and in two (runs of 64 KiB read in pieces smaller than a merged batch).
    for window in [floodgate::config::REWRITE_WINDOW_BYTES_DEFAULT, 64 << 10] {
        merged_batches_stay_within_the_largest_frame_with(window);
    }
}

fn merged_batches_stay_within_the_largest_frame_with(window: usize) {
    use floodgate::inspect::{Known, ScanEnd, scan_segment_file};
    use floodgate::segment::format::{FRAME_OVERHEAD_BYTES, RECORD_PREFIX_BYTES_MAX};
    let dir = test_dir("rewrite-frame-max");
    let record_bytes_max = 16 << 10;
    let config = small_config(dir.path(), BACKENDS[0])
        .record_bytes_max(record_bytes_max)
        .rewrite_window_bytes(window);
    let log = Log::open(config.rewrite_sealed_segments(true)).unwrap();
    log.create_topic("t", floodgate::TopicConfig::new(1))
        .unwrap();
    let mut producer = log.producer();
    // A batch each: every send waits for its ack.
    for i in 0..700u64 {
        let v = common::payload(i, 900);
        let ack = producer.send("t", floodgate::Record::new(&v)).unwrap();
        ack.wait().unwrap();
    }
    log.wait_for_rewrites();
    assert!(log.stats()[0].rewrites_done >= 2, "{:?}", log.stats()[0]);
    log.close().unwrap();
    let frame_max = record_bytes_max + RECORD_PREFIX_BYTES_MAX + FRAME_OVERHEAD_BYTES;
    let mut largest = 0;
    for seg in common::segments(dir.path(), 0) {
        let (frames, end) = scan_segment_file(&seg, 64 << 10, Known::default()).unwrap();
        assert!(matches!(end, ScanEnd::Clean { .. }), "{seg:?}: {end:?}");
        largest = largest.max(
            frames
                .iter()
                .map(|f| f.entry.frame_bytes)
                .max()
                .unwrap_or(0),
        );
    }
    assert!(largest as usize <= frame_max, "{largest} > {frame_max}");
    assert!(largest > 8 << 10, "batches merged: largest frame {largest}");
}

/// A segment holding a record or two of each partition merges into about as many batches:
/// its rewrite is given up from its index file, before any of it is read (the segment stays
/// as it was, counted as skipped, and marked so that the next open does not try again), and
/// every record reads as before.
#[test]
fn a_segment_whose_batches_do_not_merge_is_left_as_it_was() {
    let dir = test_dir("rewrite-few-merge");
    let config = || small_config(dir.path(), BACKENDS[0]).rewrite_sealed_segments(true);
    let log = Log::open(config()).unwrap();
    let partitions = 3000;
    common::produce_numbered(&log, "t", partitions, 1);
    log.wait_for_rewrites();
    let stats = log.stats()[0];
    assert_eq!(stats.rewrites_done, 0, "{stats:?}");
    assert!(stats.rewrites_skipped >= 2, "{stats:?}");
    assert_eq!(stats.rewrite_write_bytes, 0, "{stats:?}");
    assert_eq!(stats.rewrite_read_bytes, 0, "{stats:?}");
    let check = |log: &Log| {
        for p in 0..partitions {
            let read = log.read("t", p, Offset(0), 1 << 20).unwrap();
            assert_eq!(read.len(), 1, "partition {p}");
        }
    };
    check(&log);
    log.close().unwrap();
    let log = Log::open(config()).unwrap();
    log.wait_for_rewrites();
    let stats = log.stats()[0];
    assert_eq!(stats.rewrites_skipped, 0, "tried again: {stats:?}");
    assert_eq!(stats.rewrite_read_bytes, 0, "{stats:?}");
    check(&log);
    log.close().unwrap();
}

/// A consumer of some partitions reads only their stretches of the rewritten segments (each
/// holds every partition's records together), not the whole log: a quarter of the partitions
/// costs well under half of the log's bytes from the disk. A partition paused meanwhile is
/// read whole once resumed, and a group of 3 then reads every record once.
#[test]
fn a_consumer_of_some_partitions_reads_only_their_stretches_of_rewritten_segments() {
    let dir = test_dir("rewrite-stretches");
    let (log, on_disk) = rewritten_and_reopened(dir.path());
    let quarter: Vec<u32> = (0..PARTITIONS / 4).collect();
    let mut c = log
        .consumer("t")
        .partitions(quarter.clone())
        .build()
        .unwrap();
    let mut next = vec![0u64; PARTITIONS as usize];
    let read_before = log.stats()[0].read_disk_bytes;
    c.pause(&[7]);
    let others = (quarter.len() as u64 - 1) * PER;
    common::poll_numbered(&mut c, PARTITIONS, &mut next, others);
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    c.resume(&[7]);
    common::poll_numbered(&mut c, PARTITIONS, &mut next, PER);
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    assert!(quarter.iter().all(|&p| next[p as usize] == PER), "{next:?}");
    let read = log.stats()[0].read_disk_bytes - read_before;
    assert!(
        read * 2 < on_disk,
        "read {read} bytes of a log of {on_disk} for a quarter of its partitions"
    );
    drop(c);
    // A group of 3, all members in before the first poll: each partition read by one, from
    // its start, to its end.
    let mut members: Vec<_> = (0..3)
        .map(|_| log.consumer("t").group("g").build().unwrap())
        .collect();
    let mut next = vec![0u64; PARTITIONS as usize];
    let mut got = 0u64;
    while got < u64::from(PARTITIONS) * PER {
        let mut polled = 0;
        for m in &mut members {
            for r in m.poll(Duration::from_millis(10)).unwrap() {
                common::check_numbered(&r, PARTITIONS, &mut next);
                polled += 1;
            }
        }
        assert!(polled > 0, "{got} records, then none");
        got += polled;
    }
    for m in &mut members {
        assert!(m.poll(Duration::from_millis(10)).unwrap().is_empty());
    }
    drop(members);
    log.close().unwrap();
}

/// A read of many partitions at once (`Log::read_batches_of`, a Kafka fetch) reads only their
/// stretches of the rewritten segments too, and hands every batch of each in order.
#[test]
fn a_read_of_some_partitions_batches_reads_only_their_stretches_of_rewritten_segments() {
    let dir = test_dir("rewrite-stretches-batches");
    let (log, on_disk) = rewritten_and_reopened(dir.path());
    let read_before = log.stats()[0].read_disk_bytes;
    // Every other partition of the last quarter.
    let wanted: Vec<u32> = (PARTITIONS * 3 / 4..PARTITIONS).step_by(2).collect();
    let mut next = vec![0u64; PARTITIONS as usize];
    while wanted.iter().any(|&p| next[p as usize] < PER) {
        let asks: Vec<floodgate::BatchesAsk> = (wanted.iter())
            .filter(|&&p| next[p as usize] < PER)
            .map(|&p| floodgate::BatchesAsk {
                partition: p,
                offset: Offset(next[p as usize]),
                bytes_max: 64 << 10,
                read_ahead: true,
            })
            .collect();
        let answers = log.read_batches_of("t", &asks, 1 << 20);
        let mut moved = false;
        for (ask, answer) in asks.iter().zip(answers) {
            let p = ask.partition as usize;
            for batch in answer.unwrap().batches {
                let base = u64::from_be_bytes(batch[0..8].try_into().unwrap());
                let delta = u32::from_be_bytes(batch[23..27].try_into().unwrap());
                assert!(
                    base <= next[p],
                    "partition {p}: batch at {base}, next {}",
                    next[p]
                );
                let last = base + u64::from(delta);
                if last >= next[p] {
                    next[p] = last + 1;
                    moved = true;
                }
            }
        }
        assert!(moved, "no partition moved on: {next:?}");
    }
    assert!(wanted.iter().all(|&p| next[p as usize] == PER));
    let read = log.stats()[0].read_disk_bytes - read_before;
    assert!(
        read * 2 < on_disk,
        "read {read} bytes of a log of {on_disk} for an eighth of its partitions"
    );
    log.close().unwrap();
}

/// A segment larger than the rewrite's memory (`Config::rewrite_window_bytes`) is grouped in
/// two passes: each partition's records of the whole segment end up in one batch, not one per
/// window; readers see the same records before and after a reopen; the first pass's file is
/// gone, and one left by a crash is deleted by the next open.
#[test]
fn a_segment_larger_than_the_rewrite_window_holds_each_partition_in_one_batch() {
    use floodgate::inspect::{Known, ScanEnd, scan_segment_file};
    let dir = test_dir("rewrite-two-passes");
    let window = 64 << 10;
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .rewrite_sealed_segments(true)
            .rewrite_window_bytes(window)
    };
    let log = Log::open(config()).unwrap();
    let written = common::produce_numbered(&log, "t", PARTITIONS, PER);
    log.wait_for_rewrites();
    let stats = log.stats()[0];
    assert!(stats.rewrites_done >= 2, "{stats:?}");
    assert_eq!(stats.rewrites_failed, 0, "{stats:?}");
    consume_all(&log);
    check_partitions(&log);
    log.close().unwrap();
    assert!(segment_bytes_on_disk(dir.path()) < written);
    let segments = common::segments(dir.path(), 0);
    let mut rewritten = 0;
    for seg in &segments[..segments.len() - 1] {
        let (frames, end) = scan_segment_file(seg, 64 << 10, Known::default()).unwrap();
        assert!(matches!(end, ScanEnd::Clean { .. }), "{seg:?}: {end:?}");
        let mut partitions: Vec<(u32, u32)> =
            frames.iter().map(|f| (f.topic_id, f.partition)).collect();
        let frame_count = partitions.len();
        partitions.sort_unstable();
        partitions.dedup();
        // The segment was written with a window and more of each partition's records: one
        // frame per window would be several per partition.
        let size = std::fs::metadata(seg).unwrap().len();
        if frame_count < PARTITIONS as usize * 2 {
            assert_eq!(frame_count, partitions.len(), "{seg:?} ({size} bytes)");
            rewritten += 1;
        }
    }
    assert!(rewritten >= 2, "{rewritten} of {} segments", segments.len());
    let shard = dir.path().join("shard-000");
    let runs_files = |shard: &Path| {
        (std::fs::read_dir(shard).unwrap())
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".seg.runs")
            })
            .count()
    };
    assert_eq!(runs_files(&shard), 0);
    // A crash in the middle of a first pass leaves its runs file: the next open deletes it.
    let leftover = shard.join(format!("{:020}.seg.runs", 1));
    std::fs::write(&leftover, vec![7u8; 8192]).unwrap();
    assert_eq!(
        plan_repair(dir.path()).unwrap(),
        vec![RepairAction::DropRewrite {
            path: leftover.clone()
        }]
    );
    let log = Log::open(config()).unwrap();
    assert!(!leftover.exists());
    consume_all(&log);
    check_partitions(&log);
    log.close().unwrap();
}

/// Batches that never merge (compressed ones, as Kafka clients send them) are found in the
/// first window: the rest of the segment is not read, nothing is written, the segment is left
/// as it was and marked, and its records read as before.
#[test]
fn a_segment_of_compressed_batches_is_left_as_it_was_after_its_first_window() {
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let dir = test_dir("rewrite-compressed");
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .rewrite_sealed_segments(true)
            .rewrite_window_bytes(64 << 10)
    };
    let log = Log::open(config()).unwrap();
    let partitions = 20u32;
    log.create_topic("t", floodgate::TopicConfig::new(partitions))
        .unwrap();
    let mut producer = log.producer();
    let batches = 4000u32;
    let mut acks = Vec::new();
    for i in 0..batches {
        let record = KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: None,
            value: Some(common::payload(u64::from(i), 100).into()),
            headers: IndexMap::new(),
        };
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Gzip,
        };
        RecordBatchEncoder::encode(&mut buf, &[record], &options).unwrap();
        acks.push(producer.append_batch("t", i % partitions, &buf).unwrap());
    }
    for ack in acks {
        ack.wait().unwrap();
    }
    log.wait_for_rewrites();
    let stats = log.stats()[0];
    assert_eq!(stats.rewrites_done, 0, "{stats:?}");
    assert!(stats.rewrites_skipped >= 2, "{stats:?}");
    assert_eq!(stats.rewrite_write_bytes, 0, "{stats:?}");
    let sealed = common::segments(dir.path(), 0).len() as u64 - 1;
    assert!(
        stats.rewrite_read_bytes <= sealed * (64 << 10),
        "read past the first window: {stats:?}"
    );
    let check = |log: &Log| {
        for p in 0..partitions {
            let read = log.read("t", p, Offset(0), 1 << 20).unwrap();
            assert_eq!(read.len() as u32, batches / partitions, "partition {p}");
        }
    };
    check(&log);
    log.close().unwrap();
    let log = Log::open(config()).unwrap();
    log.wait_for_rewrites();
    assert_eq!(log.stats()[0].rewrite_read_bytes, 0);
    check(&log);
    log.close().unwrap();
}
