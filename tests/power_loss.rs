//! Power loss at every kind of moment: the shard writer's writes and flushes are recorded, and
//! for many cut points of the history a crash image is built the way a disk can leave it —
//! everything flushed before the cut is there; every write after the last flush that covers it
//! is dropped, kept, or torn with each 512-byte sector old or new — and then opened. Every
//! record acknowledged before the cut must be there with its bytes, offsets dense (in the
//! spirit of ALICE and CrashMonkey). A failure prints the seed and cut.
//!
//! Two histories: one within a single segment (every cut of a long run of commits), and one
//! across segment rolls, where the newest segment may also have lost its name (a roll renames
//! the prepared file without waiting for the rename to be durable), and each sealed segment's
//! index file is there or not (it is written whole, after the segment's last flush).

mod common;

use floodgate::Offset;
use std::collections::{HashMap, HashSet};
use std::fs;

use common::{Rng, payload, small_config, test_dir};
use floodgate::testing::{IoEvent, IoRecorder};
use floodgate::{IoBackend, Log, Record, TopicConfig};

const SECTOR: usize = 512;

/// Records a history: `records` records of varied sizes over 3 partitions, sent in groups,
/// each group's acks waited for and noted.
fn record_history(
    dir: &std::path::Path,
    rng: &mut Rng,
    segment_bytes: u64,
    records: u64,
) -> Vec<IoEvent> {
    let recorder = IoRecorder::new();
    let config = small_config(dir, IoBackend::IoUring)
        .segment_bytes(segment_bytes)
        .testing_io_recorder(recorder.clone());
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    let mut producer = log.producer();
    let mut n = 0u64;
    while n < records {
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
                offset: at.offset.0,
                hash,
            });
        }
    }
    drop(producer);
    drop(log);
    recorder.events()
}

/// The segment files' inodes, in the order they were first written (segment 0, 1, ...).
fn segment_inodes(events: &[IoEvent]) -> Vec<u64> {
    let mut inodes = Vec::new();
    for e in events {
        if let IoEvent::WriteSubmitted { inode, .. } = e
            && !inodes.contains(inode)
        {
            inodes.push(*inode);
        }
    }
    inodes
}

/// The segment images a power loss at `cut` can leave (one per segment written before it, in
/// segment order), with `rng` choosing the fate of every write not yet covered by a completed
/// flush of its file.
fn crash_images(events: &[IoEvent], cut: usize, rng: &mut Rng, segment_bytes: u64) -> Vec<Vec<u8>> {
    let mut inode_of: HashMap<u64, u64> = HashMap::new();
    let mut done: HashSet<u64> = HashSet::new();
    let mut covered_by: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut durable: HashSet<u64> = HashSet::new();
    for e in &events[..cut] {
        match e {
            IoEvent::WriteSubmitted { id, inode, .. } => {
                inode_of.insert(*id, *inode);
            }
            IoEvent::WriteDone { id } => {
                done.insert(*id);
            }
            IoEvent::FlushSubmitted { id, inode } => {
                let covered = done.iter().filter(|w| inode_of[w] == *inode).copied();
                covered_by.insert(*id, covered.collect());
            }
            IoEvent::FlushDone { id } => durable.extend(covered_by[id].iter().copied()),
            _ => {}
        }
    }
    let inodes = segment_inodes(&events[..cut]);
    let mut images = vec![vec![0u8; segment_bytes as usize]; inodes.len()];
    for e in &events[..cut] {
        let IoEvent::WriteSubmitted {
            id,
            inode,
            pos,
            data,
        } = e
        else {
            continue;
        };
        let image = &mut images[inodes.iter().position(|i| i == inode).unwrap()];
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
    images
}

/// Builds the crash image of every cut point of the history in `dir` (every flush completion
/// and write submission, and a sample of the rest), opens it and checks every record
/// acknowledged before the cut. With `lose_renames`, the newest segment of some images (not
/// segment 0) is left under the prepared file's name. Returns (cut points, records checked).
fn check_every_cut(
    dir: &std::path::Path,
    events: &[IoEvent],
    seed: u64,
    rng: &mut Rng,
    segment_bytes: u64,
    lose_renames: bool,
) -> (usize, u64) {
    let cuts: Vec<usize> = (1..=events.len())
        .filter(|&k| {
            matches!(
                events[k - 1],
                IoEvent::FlushDone { .. } | IoEvent::WriteSubmitted { .. }
            ) || k % 7 == 0
        })
        .collect();
    let mut checked = 0u64;
    let mut with_indexes = 0;
    for &cut in &cuts {
        let images = crash_images(events, cut, rng, segment_bytes);
        let crash = test_dir("power-image");
        fs::copy(dir.join("meta.json"), crash.path().join("meta.json")).unwrap();
        let shard = crash.path().join("shard-000");
        fs::create_dir_all(&shard).unwrap();
        let lost_rename = lose_renames && images.len() > 1 && rng.below(2) == 0;
        let mut indexes = 0;
        for (id, image) in images.iter().enumerate() {
            let name = if lost_rename && id + 1 == images.len() {
                "next.seg.prep".to_string()
            } else {
                format!("{id:020}.seg")
            };
            fs::write(shard.join(name), image).unwrap();
            // A sealed segment's index file: written (temporary file, fsync, rename) after the
            // segment's last flush, so a crash leaves it whole or absent. When present, open
            // trusts it instead of scanning the segment.
            let index = dir.join("shard-000").join(format!("{id:020}.idx"));
            if id + 1 < images.len() && index.exists() && rng.below(2) == 0 {
                fs::copy(&index, shard.join(format!("{id:020}.idx"))).unwrap();
                indexes += 1;
            }
        }
        let log =
            Log::open(small_config(crash.path(), IoBackend::IoUring).segment_bytes(segment_bytes))
                .unwrap_or_else(|e| panic!("seed {seed} cut {cut}: open failed: {e}"));
        with_indexes += usize::from(indexes > 0);
        let mut stored: HashMap<(u32, u64), u64> = HashMap::new();
        for p in 0..3 {
            let (_, end) = log.offsets("t", p).unwrap();
            let mut offset = 0;
            while offset < end.0 {
                for r in log.read("t", p, Offset(offset), 1 << 20).unwrap() {
                    assert_eq!(
                        r.offset,
                        Offset(offset),
                        "seed {seed} cut {cut}: dense offsets"
                    );
                    let v = r.value.unwrap();
                    stored.insert((p, r.offset.0), xxhash_rust::xxh3::xxh3_64(&v));
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
                    "seed {seed} cut {cut} (lost rename: {lost_rename}): acknowledged record \
                     {partition}/{offset}"
                );
            }
        }
    }
    if segment_inodes(events).len() > 1 {
        assert!(
            with_indexes > 10,
            "some images hold index files ({with_indexes})"
        );
    }
    (cuts.len(), checked)
}

fn seed() -> u64 {
    std::env::var("FLOODGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F00D_u64)
}

#[test]
fn every_acknowledged_record_survives_power_loss_at_any_cut() {
    const SEGMENT_BYTES: u64 = 8 << 20;
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = test_dir("power");
    let events = record_history(dir.path(), &mut rng, SEGMENT_BYTES, 800);
    assert_eq!(
        segment_inodes(&events).len(),
        1,
        "every write went to the one segment"
    );
    let flushes = events
        .iter()
        .filter(|e| matches!(e, IoEvent::FlushDone { .. }))
        .count();
    assert!(flushes > 20, "the history has many commits ({flushes})");
    let (cuts, checked) =
        check_every_cut(dir.path(), &events, seed, &mut rng, SEGMENT_BYTES, false);
    assert!(
        checked > 1000,
        "{checked} acknowledged records checked over {cuts} cuts"
    );
    eprintln!("power loss: {cuts} cut points, {checked} acknowledged records checked");
}

/// The same across segment rolls: a sealed segment's writes were all flushed before the roll,
/// the newest segment's unflushed writes meet any fate, and the newest segment's name may be
/// the prepared file's (a roll's rename not yet durable).
#[test]
fn power_loss_across_segment_rolls_and_lost_renames() {
    const SEGMENT_BYTES: u64 = 256 << 10;
    let seed = seed() ^ 0x0123_4567;
    let mut rng = Rng::new(seed);
    let dir = test_dir("power-rolls");
    let events = record_history(dir.path(), &mut rng, SEGMENT_BYTES, 700);
    let segments = segment_inodes(&events).len();
    assert!(segments >= 3, "the history rolls segments ({segments})");
    let (cuts, checked) = check_every_cut(dir.path(), &events, seed, &mut rng, SEGMENT_BYTES, true);
    assert!(
        checked > 1000,
        "{checked} acknowledged records checked over {cuts} cuts"
    );
    eprintln!(
        "power loss across {segments} segments: {cuts} cut points, {checked} acknowledged \
         records checked"
    );
}
