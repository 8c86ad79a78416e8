//! Recovery's decision table, row by row: clean end, a last frame cut at every byte, a torn
//! tail-block rewrite (each 512-byte sector old or new), damage before the tail (error, then
//! repair), a damaged sealed segment, and missing or damaged index files.

mod common;

use floodgate::Offset;
use std::fs;
use std::path::Path;

use common::{
    BACKENDS, checkpoint_file, copy_dir, payload, read_values, segments, small_config, test_dir,
};
use floodgate::{Config, Error, IoBackend, Log, Record, TopicConfig};

/// Sends records one at a time (one commit, one frame each) and returns each frame's value.
fn produce_one_by_one(log: &Log, n: u64, len: usize) -> Vec<Vec<u8>> {
    let mut producer = log.producer();
    (0..n)
        .map(|i| {
            let v = payload(i, len);
            let at = producer.send("t", Record::new(&v)).unwrap().wait().unwrap();
            assert_eq!(at.offset, Offset(i));
            v
        })
        .collect()
}

/// Frame boundaries of topic "t"'s records in a segment (the frames of the internal offsets
/// topic, which records the topic when it is created, are passed over).
fn frame_ends(dir: &Path, image: &[u8]) -> Vec<usize> {
    let t = common::topic_id(dir, "t");
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos + 32 <= image.len() && image[pos..pos + 4] == *b"FGGL" {
        let batch = u32::from_le_bytes(image[pos + 24..pos + 28].try_into().unwrap()) as usize;
        let topic = u32::from_le_bytes(image[pos + 8..pos + 12].try_into().unwrap());
        pos += 32 + batch;
        if topic == t {
            ends.push(pos);
        }
    }
    ends
}

#[test]
fn last_frame_cut_at_every_byte_loses_only_that_frame() {
    for backend in BACKENDS {
        let dir = test_dir("cut");
        let (values, checkpoint);
        {
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let first = produce_one_by_one(&log, 4, 40);
            // The checkpoint as a crash during the last record's write would leave it.
            checkpoint = fs::read(checkpoint_file(dir.path())).unwrap();
            let mut producer = log.producer();
            let last = payload(4, 40);
            producer
                .send("t", Record::new(&last))
                .unwrap()
                .wait()
                .unwrap();
            values = [first, vec![last]].concat();
        }
        let seg = &segments(dir.path(), 0)[0];
        let image = fs::read(seg).unwrap();
        let ends = frame_ends(dir.path(), &image);
        assert_eq!(ends.len(), 5);
        let (start, end) = (ends[3], ends[4]);
        for cut in start..end {
            let mut damaged = image.clone();
            damaged[cut..end].fill(0);
            if damaged == image {
                continue; // the frame ends in zero bytes (no headers): nothing was cut
            }
            fs::write(seg, &damaged).unwrap();
            fs::write(checkpoint_file(dir.path()), &checkpoint).unwrap();
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            let report = log.recovery_report().clone();
            if cut == start {
                assert!(report.torn_tails.is_empty(), "a clean end at {cut}");
            } else {
                assert_eq!(report.torn_tails.len(), 1, "cut at {cut}");
                assert_eq!(report.torn_tails[0].1, start as u64);
            }
            assert_eq!(read_values(&log), values[..4], "cut at {cut}");
            // The log goes on from the cut, with dense offsets.
            let mut producer = log.producer();
            let at = producer
                .send("t", Record::new(b"after"))
                .unwrap()
                .wait()
                .unwrap();
            assert_eq!(at.offset, Offset(4));
            drop(producer);
            drop(log);
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            assert!(
                log.recovery_report().torn_tails.is_empty(),
                "the tear was cleaned up"
            );
            assert_eq!(read_values(&log).len(), 5);
            drop(log);
        }
    }
}

/// The tail block is rewritten by the next commit. Tear that rewrite at every combination of
/// sectors over its first block (each 512-byte sector old or new): every record acknowledged
/// before it survives, and the new record is either whole or absent.
#[test]
fn torn_tail_block_rewrite_never_loses_acknowledged_records() {
    for backend in BACKENDS {
        let dir = test_dir("torn");
        let (old, new, values, checkpoint);
        {
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            // Records of 300 bytes: a frame is ~400 bytes, so frames straddle sectors.
            let first = produce_one_by_one(&log, 7, 300);
            let seg = segments(dir.path(), 0)[0].clone();
            old = fs::read(&seg).unwrap();
            // The checkpoint as a crash during the next write would leave it.
            checkpoint = fs::read(checkpoint_file(dir.path())).unwrap();
            let mut producer = log.producer();
            let last = payload(99, 1500);
            producer
                .send("t", Record::new(&last))
                .unwrap()
                .wait()
                .unwrap();
            new = fs::read(&seg).unwrap();
            values = [first, vec![last]].concat();
        }
        let acked_end = frame_ends(dir.path(), &old).last().copied().unwrap();
        let block = acked_end - acked_end % 4096;
        let sectors: Vec<usize> = (block..block + 8192)
            .step_by(512)
            .filter(|&s| old[s..s + 512] != new[s..s + 512])
            .collect();
        assert!(sectors.len() >= 3, "the rewrite spans several sectors");
        let seg_name = segments(dir.path(), 0)[0].file_name().unwrap().to_owned();
        for mask in 0u32..(1 << sectors.len()) {
            let mut image = old.clone();
            for (i, &s) in sectors.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    image[s..s + 512].copy_from_slice(&new[s..s + 512]);
                }
            }
            let crash = test_dir("torn-image");
            copy_dir(dir.path(), crash.path());
            fs::write(crash.path().join("shard-000").join(&seg_name), &image).unwrap();
            fs::write(checkpoint_file(crash.path()), &checkpoint).unwrap();
            let log = Log::open(small_config(crash.path(), backend)).unwrap();
            let got = read_values(&log);
            assert!(
                got.len() == 7 || got.len() == 8,
                "mask {mask:b}: {} records",
                got.len()
            );
            assert_eq!(got, values[..got.len()], "mask {mask:b}");
        }
    }
}

/// Writes about `bytes` of records in one partition, in batches, then closes.
fn fill(config: Config, bytes: usize) -> Vec<Vec<u8>> {
    let log = Log::open(config).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let mut values = Vec::new();
    let mut acks = Vec::new();
    for i in 0..(bytes / 1000) as u64 {
        let v = payload(i, 1000);
        acks.push(producer.send("t", Record::new(&v)).unwrap());
        values.push(v);
        if acks.len() == 50 {
            acks.drain(..).for_each(|a| {
                a.wait().unwrap();
            });
        }
    }
    acks.drain(..).for_each(|a| {
        a.wait().unwrap();
    });
    values
}

#[test]
fn damage_before_the_tail_is_reported_and_repair_cuts_there() {
    for backend in BACKENDS {
        let dir = test_dir("flip");
        let config = || {
            small_config(dir.path(), backend)
                .segment_bytes(2 << 20)
                .commit_bytes_max(64 << 10)
        };
        let values = fill(config(), 1_500_000);
        let seg = segments(dir.path(), 0)[0].clone();
        let mut image = fs::read(&seg).unwrap();
        let ends = frame_ends(dir.path(), &image);
        let victim = ends[2]; // the fourth frame
        image[victim + 200] ^= 0x04;
        fs::write(&seg, &image).unwrap();
        match Log::open(config()) {
            Err(Error::Corrupt { path, pos, reason }) => {
                assert_eq!(path, seg);
                assert_eq!(pos, victim as u64);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {:?}", other.err()),
        }
        let log = Log::open(config().repair_truncate_damaged(true)).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.repaired.len(), 1);
        let (path, pos, _, dropped) = &report.repaired[0];
        assert_eq!((path, *pos), (&seg, victim as u64));
        let kept = read_values(&log);
        assert_eq!(kept, values[..kept.len()]);
        // Every record after the cut is counted, except those of the damaged frame itself.
        let damaged_frame_records = values.len() as u64 - kept.len() as u64 - dropped;
        assert!(
            damaged_frame_records > 0 && damaged_frame_records <= 64,
            "{report:?}"
        );
        drop(log);
        let log = Log::open(config()).unwrap();
        assert_eq!(read_values(&log), kept, "the repair is durable");
    }
}

#[test]
fn a_hole_of_zeros_before_the_tail_is_damage() {
    let dir = test_dir("hole");
    let config = || {
        small_config(dir.path(), IoBackend::IoUring)
            .segment_bytes(2 << 20)
            .commit_bytes_max(64 << 10)
    };
    fill(config(), 1_000_000);
    let seg = segments(dir.path(), 0)[0].clone();
    let mut image = fs::read(&seg).unwrap();
    let at = frame_ends(dir.path(), &image)[1];
    image[at..at + 4096].fill(0);
    fs::write(&seg, &image).unwrap();
    match Log::open(config()) {
        Err(Error::Corrupt { pos, .. }) => assert_eq!(pos, at as u64),
        other => panic!("expected Corrupt, got {:?}", other.err()),
    }
}

#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    for backend in BACKENDS {
        let dir = test_dir("index");
        let values = fill(small_config(dir.path(), backend), 900_000);
        let segs = segments(dir.path(), 0);
        assert!(segs.len() >= 4, "{} segments", segs.len());
        let idx = |i: usize| segs[i].with_extension("idx");
        fs::remove_file(idx(0)).unwrap();
        let mut damaged = fs::read(idx(1)).unwrap();
        damaged[40] ^= 1;
        fs::write(idx(1), &damaged).unwrap();
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        let rebuilt = &log.recovery_report().indexes_rebuilt;
        assert_eq!(rebuilt, &vec![idx(0), idx(1)]);
        assert_eq!(read_values(&log), values);
        drop(log);
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        assert!(log.recovery_report().indexes_rebuilt.is_empty());
        assert_eq!(
            log.recovery_report().segments_scanned,
            1,
            "only the last segment is scanned once the indexes are back"
        );
        assert_eq!(read_values(&log), values);
    }
}

#[test]
fn damage_in_a_sealed_segment_is_caught_on_read() {
    let dir = test_dir("sealed");
    fill(small_config(dir.path(), IoBackend::IoUring), 700_000);
    let seg = segments(dir.path(), 0)[0].clone();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&seg, 64 << 10, Default::default()).unwrap();
    let t = common::topic_id(dir.path(), "t");
    let first = frames.iter().find(|f| f.topic_id == t).unwrap().entry.pos;
    let mut image = fs::read(&seg).unwrap();
    image[first as usize + 500] ^= 0x80;
    fs::write(&seg, &image).unwrap();
    let log = Log::open(small_config(dir.path(), IoBackend::IoUring)).unwrap();
    match log.read("t", 0, Offset(0), 1 << 20) {
        Err(Error::Corrupt { path, pos, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(pos, first);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn unfinished_segment_preparations_are_removed() {
    let dir = test_dir("prep");
    {
        let log = Log::open(small_config(dir.path(), IoBackend::IoUring)).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce_one_by_one(&log, 3, 100);
    }
    let shard = dir.path().join("shard-000");
    // A crash while the helper zero-filled the next segment, and one after it finished.
    fs::write(shard.join("next.seg.prep.tmp"), vec![0u8; 4096]).unwrap();
    fs::write(shard.join("next.seg.prep"), vec![7u8; 4096]).unwrap();
    // Without prezeroing, no helper makes new ones, so their absence shows recovery removed them.
    let log =
        Log::open(small_config(dir.path(), IoBackend::IoUring).segment_prezero(false)).unwrap();
    assert!(!shard.join("next.seg.prep.tmp").exists());
    assert!(!shard.join("next.seg.prep").exists());
    drop(log);
    fs::write(shard.join("next.seg.prep"), vec![7u8; 4096]).unwrap();
    let log = Log::open(small_config(dir.path(), IoBackend::IoUring)).unwrap();
    assert_eq!(read_values(&log).len(), 3);
    // The log still rolls into fresh segments afterwards.
    let mut producer = log.producer();
    for i in 0..400 {
        producer
            .send("t", Record::new(&payload(i, 1000)))
            .unwrap()
            .wait()
            .unwrap();
    }
    assert!(segments(dir.path(), 0).len() >= 2);
    assert_eq!(read_values(&log).len(), 403);
}

/// A roll renames `next.seg.prep` to the next segment's name without waiting for the rename to
/// be durable. A crash that undoes it leaves the acknowledged records of the new segment in
/// `next.seg.prep`: recovery gives the file its segment name back and loses nothing.
#[test]
fn a_roll_whose_rename_was_lost_keeps_its_records() {
    for backend in BACKENDS {
        let dir = test_dir("lost-rename");
        let values = fill(small_config(dir.path(), backend), 700_000);
        let shard = dir.path().join("shard-000");
        let before = segments(dir.path(), 0);
        assert!(before.len() >= 3, "the fill rolled segments");
        let newest = before.last().unwrap().clone();
        // The crash image: the helper's next preparation never happened (it makes the rename
        // durable before it takes the name), and the newest segment is still the prepared file.
        let _ = fs::remove_file(shard.join("next.seg.prep"));
        fs::rename(&newest, shard.join("next.seg.prep")).unwrap();
        let _ = fs::remove_file(newest.with_extension("idx"));
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(
            log.recovery_report().segments_adopted,
            std::slice::from_ref(&newest)
        );
        assert_eq!(segments(dir.path(), 0), before);
        assert_eq!(
            read_values(&log),
            values,
            "every acknowledged record, in order"
        );
        // The log goes on from there, across more rolls, and reopens cleanly.
        let mut producer = log.producer();
        for i in 0..300u64 {
            let at = producer
                .send("t", Record::new(&payload(i, 1000)))
                .unwrap()
                .wait()
                .unwrap();
            assert_eq!(at.offset, Offset(values.len() as u64 + i));
        }
        drop(producer);
        drop(log);
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        assert!(log.recovery_report().segments_adopted.is_empty());
        assert_eq!(read_values(&log).len(), values.len() + 300);
    }
}

/// A segment file larger than 4 GiB (index positions are 32-bit; `segment_bytes` refuses more)
/// is a clear error naming the file, not a panic; the records stay where they were.
#[test]
fn a_segment_over_4_gib_is_refused() {
    let dir = test_dir("huge-segment");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    produce_one_by_one(&log, 3, 100);
    drop(log);
    let path = segments(dir.path(), 0).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((4 << 30) + 4096).unwrap();
    match Log::open(small_config(dir.path(), BACKENDS[0])) {
        Err(Error::Corrupt {
            path: p, reason, ..
        }) => {
            assert_eq!(p, path);
            assert!(reason.contains("larger than 4294967296"), "{reason}");
        }
        other => panic!("{:?}", other.err()),
    }
    file.set_len(len).unwrap();
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    assert_eq!(read_values(&log).len(), 3);
}

/// `meta.json` gone while segments hold records: open refuses, naming the metadata file, and
/// leaves everything as it was (it used to open a new log, whose first topic took the old
/// topic's id from offset 0, and the directory then never opened again). A new log whose first
/// segment exists but holds nothing yet opens normally.
#[test]
fn segments_without_their_metadata_are_refused_not_reused() {
    for backend in BACKENDS {
        let dir = test_dir("no-meta");
        {
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let mut producer = log.producer();
            for i in 0..100u64 {
                let ack = producer.send("t", Record::new(&i.to_le_bytes())).unwrap();
                ack.wait().unwrap();
            }
        }
        let meta = dir.path().join("meta.json");
        let saved = std::fs::read(&meta).unwrap();
        std::fs::remove_file(&meta).unwrap();
        let e = Log::open(small_config(dir.path(), backend))
            .err()
            .expect("refused");
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Corrupt { path, .. } if path.ends_with("meta.json")),
            "{e}"
        );
        assert!(text.contains("metadata file is missing"), "{text}");
        assert!(!meta.exists(), "nothing was written");
        // With the metadata back, every record is there.
        std::fs::write(&meta, saved).unwrap();
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(log.read("t", 0, Offset(0), 1 << 20).unwrap().len(), 100);
        drop(log);
        // A log that never got its metadata (a crash during its first open) holds only an
        // empty first segment: it opens as new.
        let fresh = test_dir("no-meta-fresh");
        drop(Log::open(small_config(fresh.path(), backend)).unwrap());
        std::fs::remove_file(fresh.path().join("meta.json")).unwrap();
        let log = Log::open(small_config(fresh.path(), backend)).unwrap();
        assert!(log.list_topics().is_empty());
    }
}

/// `meta.json` lost: repair rebuilds it from the log itself. The topics come back with their
/// names, partition counts and placement (a deleted topic stays deleted), every record and
/// the groups' commits are there, and the next topic gets an id no topic ever had. A plain
/// open still refuses.
#[test]
fn a_lost_metadata_file_is_rebuilt_from_the_log_by_repair() {
    let dir = test_dir("meta-rebuild");
    let config = || small_config(dir.path(), BACKENDS[0]).shards(2);
    let saved = {
        let log = Log::open(config()).unwrap();
        log.create_topic("orders", TopicConfig::new(3)).unwrap();
        log.create_topic("gone", TopicConfig::new(2)).unwrap();
        log.create_topic("audit", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let mut acks = Vec::new();
        for i in 0..300u32 {
            let v = i.to_le_bytes();
            acks.push(
                producer
                    .send("orders", Record::new(&v).partition(i % 3))
                    .unwrap(),
            );
            acks.push(
                producer
                    .send("gone", Record::new(&v).partition(i % 2))
                    .unwrap(),
            );
        }
        acks.push(producer.send("audit", Record::new(b"a")).unwrap());
        for a in acks {
            a.wait().unwrap();
        }
        log.delete_topic("gone").unwrap();
        let mut c = log.consumer("orders").group("g").build().unwrap();
        c.commit_offsets(&[(1, Offset(42))]).unwrap();
        drop(c);
        std::fs::read_to_string(dir.path().join("meta.json")).unwrap()
    };
    fs::remove_file(dir.path().join("meta.json")).unwrap();
    assert!(matches!(Log::open(config()), Err(Error::Corrupt { .. })));

    let log = Log::open(config().repair_truncate_damaged(true)).unwrap();
    let report = log.recovery_report().clone();
    assert!(!report.meta_rebuilt.is_empty(), "{report:?}");
    let topics: Vec<(String, u32)> = (log.list_topics().into_iter())
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(
        topics,
        vec![("audit".to_string(), 1), ("orders".to_string(), 3)]
    );
    for p in 0..3 {
        let records = log.read("orders", p, Offset(0), 1 << 20).unwrap();
        assert_eq!(records.len(), 100, "partition {p}");
        for (k, r) in records.iter().enumerate() {
            let i = k as u32 * 3 + p;
            assert_eq!(r.value.as_deref(), Some(&i.to_le_bytes()[..]));
        }
    }
    assert_eq!(log.read("audit", 0, Offset(0), 1 << 20).unwrap().len(), 1);
    assert!(matches!(
        log.read("gone", 0, Offset(0), 1),
        Err(Error::UnknownTopic(_))
    ));
    let c = log.consumer("orders").group("g").build().unwrap();
    assert_eq!(c.committed(1), Some(Offset(42)));
    drop(c);
    // The same metadata as before (ids, placement), and ids are not given again.
    let rebuilt = std::fs::read_to_string(dir.path().join("meta.json")).unwrap();
    let field = |text: &str, key: &str| -> u64 {
        let at = text.find(&format!("\"{key}\"")).unwrap();
        let digits: String = text[at + key.len() + 3..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    assert_eq!(
        field(&rebuilt, "next_topic_id"),
        field(&saved, "next_topic_id")
    );
    log.create_topic("new", TopicConfig::new(1)).unwrap();
    drop(log);
    let log = Log::open(config()).unwrap();
    assert_eq!(log.list_topics().len(), 3, "opens without repair after");
    assert_eq!(
        log.read("orders", 2, Offset(0), 1 << 20).unwrap().len(),
        100
    );
}

/// `meta.json` edited to fewer partitions than the segments hold records of: open refuses,
/// naming the topic and the partition (the extra partitions' records used to be hidden
/// silently). Records of a deleted topic still open as before.
#[test]
fn records_the_metadata_cannot_account_for_are_refused_not_hidden() {
    for backend in BACKENDS {
        let dir = test_dir("meta-fewer");
        {
            let log = Log::open(small_config(dir.path(), backend)).unwrap();
            log.create_topic("gone", TopicConfig::new(1)).unwrap();
            log.create_topic("t", TopicConfig::new(4)).unwrap();
            let mut producer = log.producer();
            let mut acks = Vec::new();
            for i in 0..40u32 {
                acks.push(
                    producer
                        .send("t", Record::new(b"x").partition(i % 4))
                        .unwrap(),
                );
                acks.push(producer.send("gone", Record::new(b"y")).unwrap());
            }
            for ack in acks {
                ack.wait().unwrap();
            }
            log.delete_topic("gone").unwrap();
        }
        // The deleted topic's records are still in the segment, and open accepts them.
        drop(Log::open(small_config(dir.path(), backend)).unwrap());
        let meta = dir.path().join("meta.json");
        let text = fs::read_to_string(&meta).unwrap();
        let fewer = text.replace("\"partitions\": 4", "\"partitions\": 2");
        assert_ne!(text, fewer, "the metadata names the partition count");
        fs::write(&meta, fewer).unwrap();
        let e = Log::open(small_config(dir.path(), backend))
            .err()
            .expect("refused");
        let message = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }), "{message}");
        assert!(message.contains("topic \"t\""), "{message}");
        assert!(message.contains("gives 2 partitions"), "{message}");
        fs::write(&meta, text).unwrap();
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        for p in 0..4 {
            assert_eq!(log.read("t", p, Offset(0), 1 << 20).unwrap().len(), 10);
        }
    }
}
