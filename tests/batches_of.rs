//! A read of many partitions at once (`Log::read_batches_of`, what a Kafka fetch naming many
//! partitions does) answers each partition as its own read (`Log::read_batches`) would: the same
//! batches from the one holding its offset, within its byte limit and the read's, never past
//! what is acknowledged while producers append, each partition's error its own (unknown
//! partition, offset out of range, a damaged batch), the others unharmed.

mod common;

use bytes::Bytes;
use common::{BACKENDS, Rng, payload, small_config, test_dir};
use floodgate::{BatchesAsk, Error, Log, Offset, PartitionBatches, Record, TopicConfig};

const PARTITIONS: u32 = 12;

/// The last offset of a stored RecordBatch v2: its base offset plus its last offset delta.
fn last_offset(batch: &[u8]) -> u64 {
    let base = u64::from_be_bytes(batch[0..8].try_into().unwrap());
    base + u64::from(u32::from_be_bytes(batch[23..27].try_into().unwrap()))
}

fn base_offset(batch: &[u8]) -> u64 {
    u64::from_be_bytes(batch[0..8].try_into().unwrap())
}

/// Fills topic "t" (12 partitions over 2 shards) with records of random sizes sent in bursts, so
/// each partition's batches lie interleaved with the others' and with topic "u"'s, over many
/// segments.
fn fill(log: &Log, rng: &mut Rng, records: u64) {
    log.create_topic("t", TopicConfig::new(PARTITIONS)).unwrap();
    log.create_topic("u", TopicConfig::new(2)).unwrap();
    let mut producer = log.producer();
    let mut acks = Vec::new();
    for i in 0..records {
        let value = payload(i, 20 + rng.below(400) as usize);
        let ack = match rng.below(5) {
            0 => producer.send("u", Record::new(&value).partition(i as u32 % 2)),
            _ => producer.send(
                "t",
                Record::new(&value).partition(rng.below(PARTITIONS.into()) as u32),
            ),
        };
        acks.push(ack.unwrap());
        if rng.below(50) == 0 {
            for ack in acks.drain(..) {
                ack.wait().unwrap();
            }
        }
    }
    for ack in acks {
        ack.wait().unwrap();
    }
}

/// Partition `p`'s batches from the one holding `offset` to its end, read on their own.
fn whole(log: &Log, p: u32, offset: Offset) -> Vec<Bytes> {
    log.read_batches("t", p, offset, usize::MAX, false)
        .unwrap()
        .0
}

fn ask(partition: u32, offset: u64, bytes_max: usize) -> BatchesAsk {
    BatchesAsk {
        partition,
        offset: Offset(offset),
        bytes_max,
        read_ahead: false,
    }
}

fn bytes_of(answer: &PartitionBatches) -> usize {
    answer.batches.iter().map(Bytes::len).sum()
}

#[test]
fn each_partition_gets_what_its_own_read_returns_within_the_limits() {
    for backend in BACKENDS {
        let dir = test_dir("batches-of");
        let config = small_config(dir.path(), backend).shards(2);
        let seed = 0x5eed_0001;
        let mut rng = Rng::new(seed);
        let log = Log::open(config).unwrap();
        fill(&log, &mut rng, 6_000);
        let ranges: Vec<(Offset, Offset)> = (0..PARTITIONS)
            .map(|p| log.offsets("t", p).unwrap())
            .collect();
        for round in 0..60 {
            // Some of the partitions (a partition named twice, now and then), each from a
            // random offset in its range (its end included), with random limits.
            let mut asks = Vec::new();
            for p in 0..PARTITIONS {
                if rng.below(4) == 0 {
                    continue;
                }
                let (earliest, end) = ranges[p as usize];
                let offset = earliest.0 + rng.below(end.0 - earliest.0 + 1);
                let bytes_max = [1, 300, 4_000, usize::MAX][rng.below(4) as usize];
                asks.push(ask(p, offset, bytes_max));
                if rng.below(10) == 0 {
                    asks.push(ask(
                        p,
                        earliest.0 + rng.below(end.0 - earliest.0),
                        usize::MAX,
                    ));
                }
            }
            let total_max = [1, 10_000, 100_000, usize::MAX][rng.below(4) as usize];
            let read = log.read_batches_of("t", &asks, total_max);
            let context = format!("seed {seed:#x}, round {round}, limit {total_max}, {asks:?}");
            assert_eq!(read.len(), asks.len(), "{context}");
            let mut total = 0;
            let mut largest = 0;
            for (ask, answer) in asks.iter().zip(&read) {
                let answer = answer.as_ref().unwrap();
                let (earliest, end) = ranges[ask.partition as usize];
                assert_eq!((answer.earliest, answer.end), (earliest, end), "{context}");
                let all = whole(&log, ask.partition, ask.offset);
                // A prefix of what the partition holds from the batch holding the offset.
                assert!(answer.batches.len() <= all.len(), "{context}");
                assert_eq!(answer.batches[..], all[..answer.batches.len()], "{context}");
                let next = answer
                    .batches
                    .last()
                    .map_or(ask.offset.0, |b| last_offset(b) + 1);
                assert_eq!(answer.next, Offset(next), "{context}");
                if answer.batches.len() > 1 {
                    assert!(bytes_of(answer) <= ask.bytes_max, "{context}");
                }
                // With no limit binding, everything up to the end.
                if ask.bytes_max == usize::MAX && total_max == usize::MAX {
                    assert_eq!(answer.batches, all, "{context}");
                    assert_eq!(answer.next, end, "{context}");
                }
                total += bytes_of(answer);
                largest = largest.max(answer.batches.iter().map(Bytes::len).max().unwrap_or(0));
            }
            // The read's limit is passed by at most one batch (the first always comes whole),
            // and something comes while any partition asked for has something.
            assert!(
                total <= total_max || total - largest < total_max,
                "{context}"
            );
            let any = asks
                .iter()
                .any(|a| a.offset < ranges[a.partition as usize].1);
            assert_eq!(total > 0, any, "{context}");
        }
    }
}

/// A reader following every partition in small reads (each going on where the last one
/// stopped, as a consumer's fetches do) gets each partition's batches once, in order, over
/// many segments; one that now and then jumps back or ahead in a partition gets that
/// partition's batches from there.
#[test]
fn reads_that_go_on_where_the_last_stopped_see_every_batch_once() {
    let dir = test_dir("batches-of-follow");
    let log = Log::open(small_config(dir.path(), BACKENDS[0]).shards(2)).unwrap();
    let mut rng = Rng::new(0x5eed_0002);
    fill(&log, &mut rng, 6_000);
    let ends: Vec<Offset> = (0..PARTITIONS)
        .map(|p| log.offsets("t", p).unwrap().1)
        .collect();
    let mut next = vec![Offset(0); PARTITIONS as usize];
    let mut got: Vec<Vec<Bytes>> = vec![Vec::new(); PARTITIONS as usize];
    let mut rounds = 0;
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        rounds += 1;
        assert!(rounds < 10_000, "stuck at {next:?}");
        // Now and then a partition jumps to a random offset: what it got is dropped and it
        // starts over from the batch holding that offset.
        if rng.below(20) == 0 {
            let p = rng.below(PARTITIONS.into()) as usize;
            let at = Offset(rng.below(ends[p].0));
            let batches = whole(&log, p as u32, at);
            let first = base_offset(&batches[0]);
            got[p] = whole(&log, p as u32, Offset(0))
                .into_iter()
                .take_while(|b| base_offset(b) < first)
                .collect();
            next[p] = at;
        }
        let asks: Vec<BatchesAsk> = (0..PARTITIONS)
            .filter(|&p| next[p as usize] < ends[p as usize])
            .map(|p| ask(p, next[p as usize].0, 2_000))
            .collect();
        let read = log.read_batches_of("t", &asks, 8_000);
        for (ask, answer) in asks.iter().zip(read) {
            let answer = answer.unwrap();
            let p = ask.partition as usize;
            for batch in answer.batches {
                if got[p]
                    .last()
                    .is_some_and(|b| last_offset(b) >= base_offset(&batch))
                {
                    // The batch holding an offset jumped to, already had.
                    assert_eq!(got[p].last(), Some(&batch), "partition {p}");
                    continue;
                }
                got[p].push(batch);
            }
            next[p] = answer.next;
        }
    }
    for p in 0..PARTITIONS {
        assert_eq!(got[p as usize], whole(&log, p, Offset(0)), "partition {p}");
    }
}

#[test]
fn errors_are_per_partition() {
    let dir = test_dir("batches-of-errors");
    let log = Log::open(small_config(dir.path(), BACKENDS[0]).shards(2)).unwrap();
    fill(&log, &mut Rng::new(7), 2_000);
    let (_, end0) = log.offsets("t", 0).unwrap();
    let (_, end2) = log.offsets("t", 2).unwrap();
    let asks = [
        ask(0, 0, usize::MAX),
        ask(PARTITIONS, 0, usize::MAX),
        ask(2, end2.0 + 1, usize::MAX),
        ask(4, 3, usize::MAX),
        ask(2, end2.0, usize::MAX),
        ask(6, 0, usize::MAX),
    ];
    let read = log.read_batches_of("t", &asks, usize::MAX);
    assert_eq!(read[0].as_ref().unwrap().batches, whole(&log, 0, Offset(0)));
    assert_eq!(read[0].as_ref().unwrap().next, end0);
    assert!(
        matches!(read[1], Err(Error::UnknownPartition { .. })),
        "{:?}",
        read[1]
    );
    match &read[2] {
        Err(Error::OffsetOutOfRange {
            partition: 2,
            offset,
            earliest: Offset(0),
            next,
            ..
        }) => assert_eq!((*offset, *next), (Offset(end2.0 + 1), end2)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(read[3].as_ref().unwrap().batches, whole(&log, 4, Offset(3)));
    // Caught up: nothing, and where it stands.
    let caught_up = read[4].as_ref().unwrap();
    assert!(caught_up.batches.is_empty());
    assert_eq!((caught_up.next, caught_up.end), (end2, end2));
    assert_eq!(read[5].as_ref().unwrap().batches, whole(&log, 6, Offset(0)));
    // An unknown topic fails every ask.
    let read = log.read_batches_of("absent", &asks[..2], usize::MAX);
    assert!(
        read.iter()
            .all(|r| matches!(r, Err(Error::UnknownTopic(_)))),
        "{read:?}"
    );
}

#[test]
fn reads_while_producers_append_never_pass_what_is_acknowledged() {
    for backend in BACKENDS {
        let dir = test_dir("batches-of-live");
        // Batches are compared byte for byte with what the partitions hold at the end: a
        // rewrite of a sealed segment meanwhile would hold the same records in other batches.
        let config = small_config(dir.path(), backend).rewrite_sealed_segments(false);
        let log = std::sync::Arc::new(Log::open(config).unwrap());
        log.create_topic("t", TopicConfig::new(PARTITIONS)).unwrap();
        const RECORDS: u64 = 12_000;
        let producing = {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut producer = log.producer();
                let mut acks = Vec::new();
                for i in 0..RECORDS {
                    let value = payload(i, 100);
                    let record = Record::new(&value).partition(i as u32 % PARTITIONS);
                    acks.push(producer.send("t", record).unwrap());
                    if acks.len() == 200 {
                        for a in acks.drain(..) {
                            a.wait().unwrap();
                        }
                    }
                }
                for a in acks {
                    a.wait().unwrap();
                }
            })
        };
        // A reader following every partition from the start, as a fetching consumer does.
        let mut next = vec![0u64; PARTITIONS as usize];
        let mut values: Vec<Vec<Bytes>> = vec![Vec::new(); PARTITIONS as usize];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while next.iter().sum::<u64>() < RECORDS {
            assert!(std::time::Instant::now() < deadline, "stuck at {next:?}");
            let asks: Vec<BatchesAsk> = (0..PARTITIONS)
                .map(|p| ask(p, next[p as usize], 16 << 10))
                .collect();
            for (p, answer) in log
                .read_batches_of("t", &asks, 64 << 10)
                .into_iter()
                .enumerate()
            {
                let answer = answer.unwrap();
                for batch in &answer.batches {
                    assert_eq!(base_offset(batch), next[p], "partition {p}: contiguous");
                    assert!(
                        last_offset(batch) < answer.end.0,
                        "partition {p}: past the end: base {} last {} end {:?} next {:?} n {}",
                        base_offset(batch),
                        last_offset(batch),
                        answer.end,
                        answer.next,
                        answer.batches.len()
                    );
                    next[p] = last_offset(batch) + 1;
                    values[p].push(batch.clone());
                }
                assert_eq!(answer.next, Offset(next[p]));
            }
        }
        producing.join().unwrap();
        // What was read is what the partitions hold.
        for (p, got) in values.iter().enumerate() {
            assert_eq!(*got, whole(&log, p as u32, Offset(0)), "partition {p}");
        }
    }
}

/// A damaged batch ends its partition's answer before it, or fails it if it comes first, with
/// `Error::Corrupt` naming the segment and position; the other partitions are read whole.
#[test]
fn a_damaged_batch_fails_only_its_partition() {
    let dir = test_dir("batches-of-damage");
    let config = || small_config(dir.path(), BACKENDS[0]);
    {
        let log = Log::open(config()).unwrap();
        fill(&log, &mut Rng::new(11), 4_000);
    }
    let seg = common::segments(dir.path(), 0)[1].clone();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&seg, 64 << 10, Default::default()).unwrap();
    let t = common::topic_id(dir.path(), "t");
    let victim = *frames
        .iter()
        .filter(|f| f.topic_id == t && f.entry.base_offset > Offset(0))
        .nth(3)
        .unwrap();
    let mut image = std::fs::read(&seg).unwrap();
    image[(victim.entry.pos + u64::from(victim.entry.frame_bytes) - 2) as usize] ^= 0x10;
    std::fs::write(&seg, &image).unwrap();
    let log = Log::open(config()).unwrap();
    let damaged = victim.partition;
    let other = (damaged + 1) % PARTITIONS;
    let at = victim.entry.base_offset;
    let corrupt = |r: &floodgate::Result<PartitionBatches>| match r {
        Err(Error::Corrupt { path, pos, .. }) => assert_eq!((path, *pos), (&seg, victim.entry.pos)),
        other => panic!("expected Corrupt, got {other:?}"),
    };
    // From before the damage: the batches before it, then (asked from there) the error.
    let read = log.read_batches_of(
        "t",
        &[ask(damaged, 0, usize::MAX), ask(other, 0, usize::MAX)],
        usize::MAX,
    );
    let before = read[0].as_ref().unwrap();
    assert_eq!(before.next, at);
    assert!(before.batches.iter().all(|b| last_offset(b) < at.0));
    assert_eq!(
        read[1].as_ref().unwrap().batches,
        whole(&log, other, Offset(0))
    );
    let read = log.read_batches_of(
        "t",
        &[ask(other, 0, usize::MAX), ask(damaged, at.0, usize::MAX)],
        usize::MAX,
    );
    assert_eq!(
        read[0].as_ref().unwrap().batches,
        whole(&log, other, Offset(0))
    );
    corrupt(&read[1]);
    // Read on its own, the same error.
    corrupt(&log.read_batches_of("t", &[ask(damaged, at.0, 1)], 1)[0]);
}
