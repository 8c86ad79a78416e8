//! Recovery knows how far the log was durable: damage before that point is lost acknowledged
//! data, refused with the file and position (and cut only by repair, with an account), never
//! taken for a torn tail. The position comes from the shard's checkpoint and from the frames'
//! own claims, so it holds after a clean close and after a crash.

mod common;

use std::fs;
use std::path::Path;

use common::{checkpoint_file, payload, read_values, segments, small_config, test_dir};
use floodgate::{Config, Error, IoBackend, Log, Offset, Record, TopicConfig};

fn config(dir: &Path) -> Config {
    // One 4 MiB segment; commits of at most 64 KiB, so the unflushed window is 264 KiB.
    small_config(dir, IoBackend::IoUring)
        .segment_bytes(4 << 20)
        .commit_bytes_max(64 << 10)
}

/// Writes `n` records of 1000 bytes in one partition, 50 commits' worth waited for at a time
/// (so each commit is built after the one before was flushed), then closes.
fn fill(dir: &Path, n: u64) -> Vec<Vec<u8>> {
    let log = Log::open(config(dir)).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let mut values = Vec::new();
    let mut acks = Vec::new();
    for i in 0..n {
        let v = payload(i, 1000);
        acks.push(producer.send("t", Record::new(&v)).unwrap());
        values.push(v);
        if acks.len() == 50 {
            for a in acks.drain(..) {
                a.wait().unwrap();
            }
        }
    }
    for a in acks.drain(..) {
        a.wait().unwrap();
    }
    values
}

/// Frame start positions in a segment image.
fn frame_starts(image: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while pos + 32 <= image.len() && image[pos..pos + 4] == *b"FGGL" {
        starts.push(pos);
        let batch = u32::from_le_bytes(image[pos + 24..pos + 28].try_into().unwrap()) as usize;
        pos += 32 + batch;
    }
    starts
}

/// Opening must fail with `Corrupt` naming `seg`; returns the position it names.
fn refused(dir: &Path, seg: &Path, case: &str) -> u64 {
    match Log::open(config(dir)) {
        Err(Error::Corrupt { path, pos, reason }) => {
            assert_eq!(path, seg, "{case}: {reason}");
            pos
        }
        Ok(log) => panic!(
            "{case}: opened, keeping {} records; report {:?}",
            read_values(&log).len(),
            log.recovery_report()
        ),
        Err(e) => panic!("{case}: {e}"),
    }
}

/// After a clean close, the newest segment cut short (in the middle, or to nothing), deleted,
/// or with one byte flipped in its last frame: each was acknowledged data, and each is refused.
/// Before the checkpoint, every one of them opened, cut the log silently and gave the lost
/// records' offsets to new records.
#[test]
fn acknowledged_data_missing_from_the_newest_segment_is_refused() {
    let dir = test_dir("durable-cut");
    let values = fill(dir.path(), 2000);
    let seg = segments(dir.path(), 0)[0].clone();
    let image = fs::read(&seg).unwrap();
    let checkpoint = fs::read(checkpoint_file(dir.path())).unwrap();
    let starts = frame_starts(&image);
    let data_end = {
        let last = *starts.last().unwrap();
        last + 32 + u32::from_le_bytes(image[last + 24..last + 28].try_into().unwrap()) as usize
    };
    let restore = || {
        fs::write(&seg, &image).unwrap();
        fs::write(checkpoint_file(dir.path()), &checkpoint).unwrap();
    };
    let middle = starts[starts.len() / 2] + 100;
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: [(&str, Damage); 4] = [
        (
            "cut in the middle",
            Box::new(|| fs::write(&seg, &image[..middle]).unwrap()),
        ),
        ("cut to 0 bytes", Box::new(|| fs::write(&seg, b"").unwrap())),
        (
            "a byte flipped in the last frame",
            Box::new(|| {
                let mut damaged = image.clone();
                damaged[data_end - 10] ^= 0x10;
                fs::write(&seg, &damaged).unwrap();
            }),
        ),
        (
            "the segment deleted",
            Box::new(|| fs::remove_file(&seg).unwrap()),
        ),
    ];
    for (case, damage) in &cases {
        restore();
        damage();
        let pos = refused(dir.path(), &seg, case);
        assert!(pos <= data_end as u64, "{case}: position {pos}");
    }
    // Repair cuts on request and says so; the records before the cut are intact.
    restore();
    fs::write(&seg, &image[..middle]).unwrap();
    let log = Log::open(config(dir.path()).repair_truncate_damaged(true)).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(report.repaired[0].0, seg);
    let kept = read_values(&log);
    assert!(!kept.is_empty() && kept.len() < values.len());
    assert_eq!(kept, values[..kept.len()]);
    drop(log);
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(
        read_values(&log),
        kept,
        "the repaired log opens as it was left"
    );
}

/// After a crash (the checkpoint as it stood a while before), damage that a torn write cannot
/// explain is refused: a byte flipped in a frame that later frames say was flushed before them,
/// and a run of zeros longer than the unflushed window with frames after it. Before, the first
/// was cut as a torn tail and the second taken for the end of the log (recovery looked one
/// block past the window).
#[test]
fn damage_a_crash_cannot_explain_is_refused_after_a_crash() {
    let dir = test_dir("durable-crash");
    let early = test_dir("durable-crash-early");
    // The checkpoint of a log that had only just opened.
    let early_checkpoint = {
        let _log = Log::open(config(early.path())).unwrap();
        fs::read(checkpoint_file(early.path())).unwrap()
    };
    let values = fill(dir.path(), 3000);
    let seg = segments(dir.path(), 0)[0].clone();
    let image = fs::read(&seg).unwrap();
    let starts = frame_starts(&image);
    let crash = |damaged: &[u8]| {
        fs::write(&seg, damaged).unwrap();
        fs::write(checkpoint_file(dir.path()), &early_checkpoint).unwrap();
    };
    // The image as it is opens whole after a "crash": no false alarm.
    crash(&image);
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(read_values(&log), values);
    drop(log);

    // A flipped byte about 150 KiB before the end: inside the unflushed window, but frames
    // written after it was flushed follow.
    let end = image.iter().rposition(|&b| b != 0).unwrap();
    let victim = *starts.iter().rfind(|&&s| s + 150_000 < end).unwrap();
    let mut damaged = image.clone();
    damaged[victim + 100] ^= 0x01;
    crash(&damaged);
    assert_eq!(refused(dir.path(), &seg, "flip"), victim as u64);

    // 400 KiB of zeros (longer than the 264 KiB window) from a frame start in the middle.
    let hole = starts[starts.len() / 3];
    let mut damaged = image.clone();
    damaged[hole..hole + (400 << 10)].fill(0);
    crash(&damaged);
    assert_eq!(refused(dir.path(), &seg, "zeros"), hole as u64);
}

/// A repair that cuts records off never gives their offsets to new records: a gap frame
/// stands for them, readers and consumers pass over it, and a group that had committed past
/// the cut receives the records produced after the repair instead of skipping them.
#[test]
fn offsets_cut_off_by_a_repair_are_never_given_again() {
    let dir = test_dir("durable-gap");
    // Two shards: "t" (the first topic) in shard 1, the group commits in shard 0.
    let config = || config(dir.path()).shards(2);
    let values: Vec<Vec<u8>> = (0..2000).map(|i| payload(i, 1000)).collect();
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        for chunk in values.chunks(50) {
            let acks: Vec<_> = (chunk.iter())
                .map(|v| producer.send("t", Record::new(v)).unwrap())
                .collect();
            for a in acks {
                a.wait().unwrap();
            }
        }
        let mut c = log.consumer("t").group("g").build().unwrap();
        c.commit_offsets(&[(0, Offset(1900))]).unwrap();
    }
    let seg = segments(dir.path(), 1)[0].clone();
    let mut image = fs::read(&seg).unwrap();
    let starts = frame_starts(&image);
    let middle = starts[starts.len() / 2];
    image[middle + 40] ^= 0x10;
    fs::write(&seg, &image).unwrap();
    assert!(matches!(Log::open(config()), Err(Error::Corrupt { .. })));

    let log = Log::open(config().repair_truncate_damaged(true)).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(report.offsets_skipped.len(), 1, "{report:?}");
    let (_, first, last) = report.offsets_skipped[0];
    assert!(first > Offset(0) && first < Offset(1900), "{report:?}");
    assert_eq!(last, Offset(1999), "through the last offset ever given");
    assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(2000)));
    // The recovery journal has a line for the cut and one for the gap.
    let journal = fs::read_to_string(floodgate::layout::recovery_log_path(dir.path())).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2, "{journal}");
    assert!(lines[0].contains("repair cut") && lines[0].contains(&seg.display().to_string()));
    assert!(
        lines[1].contains(&format!("offsets {first}..=1999")),
        "{journal}"
    );
    // New records continue after the gap.
    let mut producer = log.producer();
    let at = producer
        .send("t", Record::new(b"after"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(at.offset, Offset(2000));
    // A read from inside the gap passes over it.
    let read = log.read("t", 0, first, 1 << 20).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        (read[0].offset, read[0].value.as_deref()),
        (Offset(2000), Some(&b"after"[..]))
    );
    // The group resumes at its commit, past the cut, and gets the new record.
    let mut c = log.consumer("t").group("g").build().unwrap();
    assert_eq!(c.position(0).unwrap(), Offset(1900));
    let got = poll_until(&mut c, 1);
    assert_eq!(got, vec![(Offset(2000), b"after".to_vec())]);
    // A consumer from the start gets the records kept, then the new one, and waits past
    // the gap without spinning on it.
    let mut all = log.consumer("t").build().unwrap();
    let kept = first.0 as usize;
    let got = poll_until(&mut all, kept + 1);
    assert_eq!(got.len(), kept + 1);
    for (i, (offset, value)) in got[..kept].iter().enumerate() {
        assert_eq!((*offset, value), (Offset(i as u64), &values[i]));
    }
    assert_eq!(got[kept], (Offset(2000), b"after".to_vec()));
    assert_eq!(all.position(0).unwrap(), Offset(2001));
    drop((c, all, producer));
    drop(log);
    // The gap is part of the log: it opens without repair, the same.
    let log = Log::open(config()).unwrap();
    assert_eq!(log.offsets("t", 0).unwrap(), (Offset(0), Offset(2001)));
    let read = log.read("t", 0, first, 1 << 20).unwrap();
    assert_eq!(read[0].offset, Offset(2000));
}

/// Polls until `n` records came (or 10 s passed): (offset, value) of each.
fn poll_until(c: &mut floodgate::Consumer, n: usize) -> Vec<(Offset, Vec<u8>)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        for r in c.poll(std::time::Duration::from_millis(100)).unwrap() {
            got.push((r.record.offset, r.record.value.unwrap().to_vec()));
        }
    }
    got
}
