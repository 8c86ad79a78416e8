//! Recovery knows how far the log was durable: damage before that point is lost acknowledged
//! data, refused with the file and position (and cut only by repair, with an account), never
//! taken for a torn tail. The position comes from the shard's checkpoint and from the frames'
//! own claims, so it holds after a clean close and after a crash.

mod common;

use std::fs;
use std::path::Path;

use common::{checkpoint_file, payload, read_values, segments, small_config, test_dir};
use floodgate::{Config, Error, IoBackend, Log, Record, TopicConfig};

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
