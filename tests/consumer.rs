//! Consumers: delivery in offset order from every partition, start positions, seek, pause and
//! resume, lag, long-poll (wakes on new data, times out on none), and the rate limit applied.

mod common;

use floodgate::Offset;
use std::time::{Duration, Instant};

use common::{BACKENDS, small_config, test_dir};
use floodgate::{Error, Log, RateLimit, Record, StartAt, TopicConfig};

fn produce(log: &Log, n: u32, partitions: u32) {
    let mut producer = log.producer();
    let acks: Vec<_> = (0..n)
        .map(|i| {
            let v = i.to_le_bytes();
            producer
                .send(
                    "t",
                    Record::new(&v)
                        .partition(i % partitions)
                        .timestamp(1_000 + i64::from(i)),
                )
                .unwrap()
        })
        .collect();
    acks.into_iter().for_each(|a| {
        a.wait().unwrap();
    });
}

fn value_of(r: &floodgate::ConsumerRecord) -> u32 {
    u32::from_le_bytes(r.record.value.as_deref().unwrap().try_into().unwrap())
}

#[test]
fn delivers_everything_in_order_per_partition() {
    for backend in BACKENDS {
        let dir = test_dir("consume");
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        log.create_topic("t", TopicConfig::new(3)).unwrap();
        produce(&log, 3000, 3);
        let mut consumer = log.consumer("t").poll_records_max(100).build().unwrap();
        let mut seen = vec![Vec::new(); 3];
        while seen.iter().map(Vec::len).sum::<usize>() < 3000 {
            let batch = consumer.poll(Duration::from_secs(5)).unwrap();
            assert!(!batch.is_empty() && batch.len() <= 100);
            for r in batch {
                seen[r.partition as usize].push((r.record.offset, value_of(&r)));
            }
        }
        for (p, got) in seen.iter().enumerate() {
            for (i, (offset, value)) in got.iter().enumerate() {
                assert_eq!(*offset, Offset(i as u64), "partition {p} in order");
                assert_eq!(*value, i as u32 * 3 + p as u32);
            }
            assert_eq!(consumer.position(p as u32).unwrap(), Offset(1000));
        }
        assert!(consumer.lag().unwrap().iter().all(|(_, lag)| *lag == 0));
        assert!(consumer.poll(Duration::from_millis(10)).unwrap().is_empty());
    }
}

#[test]
fn long_poll_wakes_on_new_data_and_times_out_on_none() {
    let dir = test_dir("longpoll");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let mut consumer = log.consumer("t").start_at(StartAt::Latest).build().unwrap();
    let started = Instant::now();
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .unwrap()
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it waited for the timeout"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            log.producer()
                .send("t", Record::new(b"late").partition(1))
                .unwrap()
                .wait()
                .unwrap();
        });
        // Woken by the publish, long before the 60 s timeout.
        let got = consumer.poll(Duration::from_secs(60)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].partition, got[0].record.offset), (1, Offset(0)));
    });
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn start_positions_seek_pause_and_resume() {
    let dir = test_dir("positions");
    let log = Log::open(small_config(dir.path(), BACKENDS[1])).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, 200, 2); // partition p holds values p, p+2, ...; timestamps 1000 + value
    let first = |c: &mut floodgate::Consumer| c.poll(Duration::from_secs(5)).unwrap().remove(0);

    let mut c = log
        .consumer("t")
        .partitions(vec![1])
        .start_at(StartAt::Offset(Offset(40)))
        .build()
        .unwrap();
    assert_eq!(first(&mut c).record.offset, Offset(40));
    let mut c = log
        .consumer("t")
        .partitions(vec![0])
        .start_at(StartAt::Timestamp(1_051))
        .build()
        .unwrap();
    let r = first(&mut c);
    assert_eq!(
        (r.record.offset, value_of(&r)),
        (Offset(26), 52),
        "first record at or after ts 1051"
    );
    let mut c = log.consumer("t").start_at(StartAt::Latest).build().unwrap();
    assert!(c.poll(Duration::from_millis(10)).unwrap().is_empty());
    assert_eq!(c.lag().unwrap(), vec![(0, 0), (1, 0)]);
    let e = log
        .consumer("t")
        .start_at(StartAt::Offset(Offset(101)))
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::OffsetOutOfRange {
                offset: Offset(101),
                next: Offset(100),
                ..
            }
        ),
        "{e}"
    );

    let mut c = log.consumer("t").build().unwrap();
    assert_eq!(c.lag().unwrap(), vec![(0, 100), (1, 100)]);
    c.seek(0, Offset(90)).unwrap();
    c.pause(&[1]);
    let mut got = Vec::new();
    while let Some(r) = c
        .poll(Duration::from_millis(50))
        .unwrap()
        .into_iter()
        .next()
    {
        got.push(r.clone());
        got.extend(c.poll(Duration::ZERO).unwrap());
    }
    assert!(
        got.iter().all(|r| r.partition == 0),
        "paused partition 1 delivers nothing"
    );
    assert_eq!(got.first().unwrap().record.offset, Offset(90));
    assert_eq!(c.position(0).unwrap(), Offset(100));
    c.resume(&[1]);
    let r = first(&mut c);
    assert_eq!((r.partition, r.record.offset), (1, Offset(0)));
    assert!(matches!(
        c.seek(0, Offset(101)),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        c.seek(7, Offset(0)),
        Err(Error::UnknownPartition { .. })
    ));
}

#[test]
fn the_rate_limit_holds_back_a_backlog() {
    let dir = test_dir("rate");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    produce(&log, 500, 1);
    // 100 records/s: a burst of one record, then one every 10 ms.
    let mut c = log.consumer("t").max_rate(100.0).build().unwrap();
    let got = c.poll(Duration::from_secs(5)).unwrap();
    assert!(
        !got.is_empty() && got.len() <= 2,
        "{} records despite the limit",
        got.len()
    );
    assert_eq!(
        c.time_to_drain().unwrap().map(|d| d.as_secs()),
        Some(4),
        "~498 left at 100/s"
    );
    c.set_rate_limit(RateLimit {
        msgs_per_s: None,
        bytes_per_s: None,
    })
    .unwrap();
    let mut n = got.len();
    while n < 500 {
        n += c.poll(Duration::from_secs(5)).unwrap().len();
    }
    assert_eq!(c.lag().unwrap(), vec![(0, 0)]);
    let bad = c.set_rate_limit(RateLimit {
        msgs_per_s: Some(0.0),
        bytes_per_s: None,
    });
    assert!(matches!(bad, Err(Error::Config(_))));
}

/// A rate-limited consumer hands records out at most once per paced poll interval, in
/// batches, however often it is polled; with a zero interval, record by record.
#[test]
fn a_paced_consumer_delivers_in_batches() {
    let dir = test_dir("paced");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    produce(&log, 5_000, 1);
    for (interval, rate) in [
        (Duration::from_millis(2), 20_000.0),
        (Duration::ZERO, 2_000.0),
    ] {
        let mut c = log
            .consumer("t")
            .max_rate(rate)
            .paced_poll_interval(interval)
            .build()
            .unwrap();
        let start = Instant::now();
        let (mut polls, mut delivered) = (0u64, 0usize);
        while start.elapsed() < Duration::from_millis(300) {
            let got = c.poll(Duration::from_millis(50)).unwrap();
            polls += u64::from(!got.is_empty());
            delivered += got.len();
        }
        let elapsed = start.elapsed();
        assert!(delivered > 0);
        if interval.is_zero() {
            // Nothing held back: a token (every 0.5 ms) is a record handed out, so batches
            // stay small (more than one only when a wake-up came late).
            assert!(
                delivered as u64 <= 2 * polls,
                "{delivered} records in {polls} polls"
            );
        } else {
            let most = elapsed.as_micros() / interval.as_micros() + 1;
            assert!(u128::from(polls) <= most, "{polls} polls in {elapsed:?}");
        }
    }
}

/// A consumer follows producers closely across segment rolls, falling behind now and then,
/// with a read cache small enough that what it read is evicted while in use: every record
/// arrives intact, once, in order, whether it came from the cache or the disk.
#[test]
fn tailing_reader_sees_every_record_intact() {
    for backend in BACKENDS {
        let dir = test_dir("tail-read");
        let config = small_config(dir.path(), backend).tail_cache_bytes(200 << 10);
        let log = Log::open(config).unwrap();
        log.create_topic("t", TopicConfig::new(2)).unwrap();
        let n = 6000u64;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut producer = log.producer();
                for i in 0..n {
                    let value = common::payload(i, 200 + (i as usize % 300));
                    let key = i.to_le_bytes();
                    let record = Record::new(&value).key(&key).partition((i % 2) as u32);
                    let ack = producer.send("t", record).unwrap();
                    if i.is_multiple_of(64) {
                        ack.wait().unwrap();
                    }
                }
            });
            let mut c = log.consumer("t").fetch_bytes(4 << 10).build().unwrap();
            let mut next = [0u64; 2];
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut polls = 0u32;
            while next.iter().sum::<u64>() < n {
                assert!(Instant::now() < deadline, "stalled at {next:?}");
                polls += 1;
                if polls.is_multiple_of(8) {
                    std::thread::sleep(Duration::from_millis(15));
                }
                for r in c.poll(Duration::from_millis(20)).unwrap() {
                    let p = r.partition as usize;
                    assert_eq!(r.record.offset, Offset(next[p]), "partition {p}");
                    let i =
                        u64::from_le_bytes(r.record.key.as_deref().unwrap().try_into().unwrap());
                    assert_eq!((i % 2, i / 2), (p as u64, next[p]));
                    let want = common::payload(i, 200 + (i as usize % 300));
                    assert_eq!(r.record.value.as_deref(), Some(&want[..]), "record {i}");
                    next[p] += 1;
                }
            }
        });
        assert!(common::segments(dir.path(), 0).len() > 3, "segments rolled");
    }
}

/// A consumer of many partitions reads the shard's log about once, in log order, whatever the
/// partition count: each partition reading its own way through the log read the same regions
/// again for every partition (hundreds of times the data at 10,000 partitions).
#[test]
fn a_consumer_of_many_partitions_reads_the_log_about_once() {
    let dir = test_dir("consumer-log-order");
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .segment_bytes(16 << 20)
            .tail_cache_bytes(32 << 20)
    };
    // About 80 MB of log, more than twice the read cache.
    let partitions = 300u32;
    let n = 400_000u64;
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(partitions)).unwrap();
        let mut producer = log.producer();
        let mut acks = Vec::new();
        for i in 0..n {
            let r = Record::new(&[7u8; 100]).partition((i % u64::from(partitions)) as u32);
            acks.push(producer.send("t", r).unwrap());
        }
        for a in acks {
            a.wait().unwrap();
        }
    }
    // Reopened: nothing in the caches, every frame comes from the disk.
    let log = Log::open(config()).unwrap();
    let mut c = log.consumer("t").build().unwrap();
    let mut got = 0u64;
    while got < n {
        got += c.poll(Duration::from_secs(5)).unwrap().len() as u64;
    }
    let stats = &log.stats()[0];
    let amplification = stats.read_disk_bytes as f64 / stats.read_frame_bytes as f64;
    assert!(
        amplification < 1.2,
        "read {} bytes from disk for {} bytes of frames",
        stats.read_disk_bytes,
        stats.read_frame_bytes
    );
}

/// A consumer of many partitions whose read positions lie at assorted places in sealed
/// segments (found from the index files after a reopen) gets each partition's records from
/// its position on: none before it, none missed, in order; and it reads the log from about the
/// earliest of those positions, not from the start of the segment holding it.
#[test]
fn a_consumer_of_many_partitions_starts_each_at_its_own_position() {
    let dir = test_dir("consumer-placed");
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .segment_bytes(4 << 20)
            .tail_cache_bytes(1 << 20)
    };
    let (partitions, per) = (200u32, 400u64);
    let written = common::produce_numbered(&Log::open(config()).unwrap(), "t", partitions, per);
    assert!(
        common::segments(dir.path(), 0).len() >= 4,
        "segments rolled"
    );
    let log = Log::open(config()).unwrap();
    // Every partition in the second half of the log, one at its end.
    let start = |p: u32| match p {
        7 => per,
        _ => per / 2 + u64::from(p) * 97 % (per / 2),
    };
    let mut c = log.consumer("t").build().unwrap();
    for p in 0..partitions {
        c.seek(p, Offset(start(p))).unwrap();
    }
    let mut next: Vec<u64> = (0..partitions).map(start).collect();
    let want: u64 = (0..partitions).map(|p| per - start(p)).sum();
    common::poll_numbered(&mut c, partitions, &mut next, want);
    assert!(next.iter().all(|&n| n == per), "{next:?}");
    assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    // From the middle on, and the 1 MiB a cursor may start early; a whole segment is a quarter.
    let read = log.stats()[0].read_disk_bytes as f64 / written as f64;
    assert!(read < 0.6, "read {read:.2} of the log");
}

/// A consumer of many partitions in a log it shares with another topic, group commits and a
/// second shard, with frames larger than its reads: every record exactly once, in offset
/// order per partition, across a seek back, a pause and a resume, paced or not.
#[test]
fn a_consumer_of_many_partitions_gets_its_own_records_from_a_shared_log() {
    for paced in [false, true] {
        let dir = test_dir("consumer-shared-log");
        let log = Log::open(small_config(dir.path(), BACKENDS[0]).shards(2)).unwrap();
        log.create_topic("t", TopicConfig::new(6)).unwrap();
        log.create_topic("u", TopicConfig::new(3)).unwrap();
        let mut producer = log.producer();
        let mut acks = Vec::new();
        let value = |i: u32| {
            let mut v = i.to_le_bytes().to_vec();
            v.resize(if i.is_multiple_of(97) { 9_000 } else { 4 }, 0xab);
            v
        };
        for i in 0..6000u32 {
            let v = value(i);
            acks.push(
                producer
                    .send("t", Record::new(&v).partition(i % 6))
                    .unwrap(),
            );
            if i % 3 == 0 {
                let r = Record::new(b"other").partition(i % 3);
                acks.push(producer.send("u", r).unwrap());
            }
            if i == 3000 {
                let mut g = log.consumer("u").group("g").build().unwrap();
                g.commit_offsets(&[(0, Offset(1))]).unwrap();
            }
        }
        for a in acks {
            a.wait().unwrap();
        }
        let mut builder = log.consumer("t").fetch_bytes(1024);
        if paced {
            builder = builder.max_rate(1_000_000.0);
        }
        let mut c = builder.build().unwrap();
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 6];
        let take = |c: &mut floodgate::Consumer, seen: &mut Vec<Vec<u32>>| {
            for r in c.poll(Duration::from_secs(5)).unwrap() {
                let p = r.partition as usize;
                assert_eq!(
                    r.record.offset,
                    Offset(seen[p].len() as u64),
                    "partition {p}"
                );
                let i =
                    u32::from_le_bytes(r.record.value.as_deref().unwrap()[..4].try_into().unwrap());
                assert_eq!(r.record.value.as_deref(), Some(&value(i)[..]));
                assert_eq!(i % 6, p as u32);
                seen[p].push(i);
            }
        };
        while seen.iter().map(Vec::len).sum::<usize>() < 1500 {
            take(&mut c, &mut seen);
        }
        // Back halfway in partition 2: delivered again from there.
        let back = seen[2].len() / 2;
        assert!(
            back > 0,
            "{:?}",
            seen.iter().map(Vec::len).collect::<Vec<_>>()
        );
        c.seek(2, Offset(back as u64)).unwrap();
        seen[2].truncate(back);
        c.pause(&[4]);
        let paused_at = seen[4].len();
        while seen
            .iter()
            .enumerate()
            .filter(|(p, _)| *p != 4)
            .map(|(_, s)| s.len())
            .sum::<usize>()
            < 5000
        {
            take(&mut c, &mut seen);
        }
        assert_eq!(
            seen[4].len(),
            paused_at,
            "a paused partition delivers nothing"
        );
        c.resume(&[4]);
        while seen.iter().map(Vec::len).sum::<usize>() < 6000 {
            take(&mut c, &mut seen);
        }
        for (p, got) in seen.iter().enumerate() {
            assert_eq!(got.len(), 1000, "partition {p}");
            assert_eq!(c.position(p as u32).unwrap(), Offset(1000));
        }
        assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    }
}

/// A damaged record in a sealed segment fails a consumer of many partitions with
/// `Error::Corrupt` naming the segment, when it reaches the damaged batch: never skipped.
#[test]
fn a_consumer_of_many_partitions_fails_clearly_on_a_damaged_batch() {
    let dir = test_dir("consumer-damaged");
    let config = || small_config(dir.path(), BACKENDS[0]);
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(4)).unwrap();
        produce(&log, 40_000, 4);
    }
    let seg = common::segments(dir.path(), 0)[1].clone();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&seg, 64 << 10, Default::default()).unwrap();
    let victim = frames[frames.len() / 2].entry;
    let mut image = std::fs::read(&seg).unwrap();
    image[(victim.pos + u64::from(victim.frame_bytes) - 2) as usize] ^= 0x10;
    std::fs::write(&seg, &image).unwrap();
    let log = Log::open(config()).unwrap();
    let mut c = log.consumer("t").build().unwrap();
    let error = loop {
        match c.poll(Duration::from_millis(200)) {
            Ok(records) => assert!(!records.is_empty(), "stopped before the damage"),
            Err(e) => break e,
        }
    };
    match error {
        Error::Corrupt { path, pos, .. } => assert_eq!((path, pos), (seg, victim.pos)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
