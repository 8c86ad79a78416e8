//! Power loss at every kind of moment: the shard writer's writes and flushes are recorded, and
//! for many cut points of the history a crash image is built the way a disk can leave it —
//! everything flushed before the cut is there; every write after the last flush that covers it
//! is dropped, kept, or torn with each 512-byte sector old or new — and then opened. Every
//! record acknowledged before the cut must be there with its bytes, offsets dense (in the
//! spirit of ALICE and CrashMonkey). A failure prints the seed and cut.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;

use common::{Rng, payload, segments, small_config, test_dir};
use floodgate::io::faults::{IoEvent, IoRecorder};
use floodgate::{IoBackend, Log, Record, TopicConfig};

const SEGMENT_BYTES: u64 = 8 << 20;
const SECTOR: usize = 512;

/// Records a history: records of varied sizes over 3 partitions, sent in groups, each group's
/// acks waited for and noted.
fn record_history(dir: &std::path::Path, rng: &mut Rng) -> Vec<IoEvent> {
    let recorder = IoRecorder::new();
    let config = small_config(dir, IoBackend::IoUring)
        .segment_bytes(SEGMENT_BYTES)
        .testing_io_recorder(recorder.clone());
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    let mut producer = log.producer();
    let mut n = 0u64;
    while n < 800 {
        let group = 1 + rng.below(24);
        let mut acks = Vec::new();
        for _ in 0..group {
            let v = payload(n, 10 + rng.below(1500) as usize);
            let ack = producer
                .send("t", Record::new(&v).partition((n % 3) as u32))
                .unwrap();
            acks.push((ack, xxhash_rust::xxh3::xxh3_64(&v)));
            n += 1;
        }
        for (ack, hash) in acks {
            let at = ack.wait().unwrap();
            recorder.note(IoEvent::Acked {
                partition: at.partition,
                offset: at.offset,
                hash,
            });
        }
    }
    drop(producer);
    drop(log);
    recorder.events()
}

/// The segment image a power loss at `cut` can leave, with `rng` choosing the fate of every
/// write not yet covered by a completed flush.
fn crash_image(events: &[IoEvent], cut: usize, rng: &mut Rng) -> Vec<u8> {
    let mut done: HashSet<u64> = HashSet::new();
    let mut covered_by: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut durable: HashSet<u64> = HashSet::new();
    for e in &events[..cut] {
        match e {
            IoEvent::WriteDone { id } => {
                done.insert(*id);
            }
            IoEvent::FlushSubmitted { id } => {
                covered_by.insert(*id, done.clone());
            }
            IoEvent::FlushDone { id } => durable.extend(covered_by[id].iter().copied()),
            _ => {}
        }
    }
    let mut image = vec![0u8; SEGMENT_BYTES as usize];
    for e in &events[..cut] {
        let IoEvent::WriteSubmitted { id, pos, data, .. } = e else {
            continue;
        };
        let at = *pos as usize;
        if durable.contains(id) {
            image[at..at + data.len()].copy_from_slice(data);
            continue;
        }
        match rng.below(3) {
            0 => {} // lost
            1 => image[at..at + data.len()].copy_from_slice(data),
            _ => {
                for s in (0..data.len()).step_by(SECTOR) {
                    if rng.below(2) == 0 {
                        image[at + s..at + s + SECTOR].copy_from_slice(&data[s..s + SECTOR]);
                    }
                }
            }
        }
    }
    image
}

#[test]
fn every_acknowledged_record_survives_power_loss_at_any_cut() {
    let seed = std::env::var("FLOODGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F00D_u64);
    let mut rng = Rng::new(seed);
    let dir = test_dir("power");
    let events = record_history(dir.path(), &mut rng);
    let seg = &segments(dir.path(), 0);
    assert_eq!(seg.len(), 1, "the history stays in one segment");
    let inodes: HashSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            IoEvent::WriteSubmitted { inode, .. } => Some(*inode),
            _ => None,
        })
        .collect();
    assert_eq!(inodes.len(), 1, "every write went to the one segment");
    let flushes = events
        .iter()
        .filter(|e| matches!(e, IoEvent::FlushDone { .. }))
        .count();
    assert!(flushes > 20, "the history has many commits ({flushes})");
    // Cut points: every flush completion and write submission, and a sample of the rest.
    let cuts: Vec<usize> = (1..=events.len())
        .filter(|&k| {
            matches!(
                events[k - 1],
                IoEvent::FlushDone { .. } | IoEvent::WriteSubmitted { .. }
            ) || k % 7 == 0
        })
        .collect();
    let seg_name = seg[0].file_name().unwrap().to_owned();
    let mut checked = 0u64;
    for &cut in &cuts {
        let image = crash_image(&events, cut, &mut rng);
        let crash = test_dir("power-image");
        fs::copy(dir.path().join("meta.json"), crash.path().join("meta.json")).unwrap();
        fs::create_dir_all(crash.path().join("shard-000")).unwrap();
        fs::write(crash.path().join("shard-000").join(&seg_name), &image).unwrap();
        let log =
            Log::open(small_config(crash.path(), IoBackend::IoUring).segment_bytes(SEGMENT_BYTES))
                .unwrap_or_else(|e| panic!("seed {seed} cut {cut}: open failed: {e}"));
        let mut stored: HashMap<(u32, u64), u64> = HashMap::new();
        for p in 0..3 {
            let (_, end) = log.offsets("t", p).unwrap();
            let mut offset = 0;
            while offset < end {
                for r in log.read("t", p, offset, 1 << 20).unwrap() {
                    assert_eq!(r.offset, offset, "seed {seed} cut {cut}: dense offsets");
                    let v = r.value.unwrap();
                    stored.insert((p, r.offset), xxhash_rust::xxh3::xxh3_64(&v));
                    offset += 1;
                }
            }
        }
        for e in &events[..cut] {
            if let IoEvent::Acked {
                partition,
                offset,
                hash,
            } = e
            {
                checked += 1;
                assert_eq!(
                    stored.get(&(*partition, *offset)),
                    Some(hash),
                    "seed {seed} cut {cut}: acknowledged record {partition}/{offset}"
                );
            }
        }
    }
    assert!(
        checked > 1000,
        "{checked} acknowledged records checked over {} cuts",
        cuts.len()
    );
    eprintln!(
        "power loss: {} cut points, {checked} acknowledged records checked",
        cuts.len()
    );
}
