//! A real full disk: the log on a small tmpfs (tmpfs takes O_DIRECT since Linux 6.6) fills up.
//! The shard fails with an error naming ENOSPC, nothing acknowledged is lost, and once space
//! is made the log reopens with every acknowledged record and takes new ones; before that, it
//! opens on the full disk to be read. Mounting needs root; elsewhere the test says why it
//! skipped.

mod common;

use floodgate::Offset;
use std::path::Path;
use std::process::Command;

use common::payload;
use floodgate::{Config, Error, Log, Record, TopicConfig};

fn config(dir: &Path) -> Config {
    Config::new(dir)
        .segment_bytes(1 << 20)
        .commit_bytes_max(64 << 10)
        .record_bytes_max(16 << 10)
        .pin_threads(false)
}

#[test]
fn a_full_file_system_fails_the_shard_clearly_and_loses_nothing_acknowledged() {
    let base = common::test_dir("enospc");
    let Some(_mount) = common::mount("tmpfs", Some("size=6m"), base.path()) else {
        return;
    };
    let dir = base.path().join("data");
    let mut acked = Vec::new();
    let failure = {
        let log = Log::open(config(&dir)).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let mut i = 0u64;
        loop {
            assert!(i < 100_000, "6 MiB never filled");
            let sent = producer.send("t", Record::new(&payload(i, 1000)));
            match sent.and_then(|ack| ack.wait()) {
                Ok(at) => {
                    assert_eq!(at.offset, Offset(i), "dense while there is room");
                    acked.push(i);
                }
                Err(e) => break e,
            }
            i += 1;
        }
    };
    let text = failure.to_string();
    eprintln!("full disk: {text} ({} acknowledged)", acked.len());
    assert!(
        matches!(failure, Error::ShardFailed { .. })
            && (text.contains("No space left") || text.contains("ENOSPC")),
        "a full disk fails the shard, saying so: {text}"
    );
    assert!(
        acked.len() > 1000,
        "records were acknowledged before it filled"
    );
    // Reopen on the still-full disk, some index files gone: open needs no new space, so
    // every acknowledged record can be read (the missing index files wait for room).
    for seg in common::segments(&dir, 0).iter().rev().skip(1).take(2) {
        let _ = std::fs::remove_file(seg.with_extension("idx"));
    }
    fill_up(&base.path().join("filler"));
    {
        let log = Log::open(config(&dir)).unwrap_or_else(|e| panic!("opening a full disk: {e}"));
        let report = log.recovery_report();
        assert!(!report.indexes_unwritten.is_empty(), "{report:?}");
        check_acked(&log, &acked);
    }
    // Make room, reopen: every acknowledged record is there, and new ones are taken.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(base.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(grown, "remounting the tmpfs larger");
    let log = Log::open(config(&dir)).unwrap();
    let (earliest, next) = log.offsets("t", 0).unwrap();
    assert_eq!(earliest, Offset(0));
    assert!(
        next >= Offset(acked.len() as u64),
        "{next} < {} acknowledged",
        acked.len()
    );
    check_acked(&log, &acked);
    assert!(log.recovery_report().indexes_unwritten.is_empty());
    let mut producer = log.producer();
    let at = producer
        .send("t", Record::new(b"after"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(at.offset, next);
}

/// Every acknowledged record reads back with its bytes.
fn check_acked(log: &Log, acked: &[u64]) {
    let end = Offset(acked.len() as u64);
    let mut offset = Offset(0);
    while offset < end {
        for r in log.read("t", 0, offset, 64 << 10).unwrap() {
            if r.offset < end {
                assert_eq!(r.value.as_deref(), Some(&payload(r.offset.0, 1000)[..]));
            }
            offset = r.offset.next();
        }
    }
}

/// Writes `path` until the file system has no room left.
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![1u8; 4096];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
}

/// The disk fills while the log runs, and space comes back before the next segment is needed:
/// the sealed segment's index file waits for space instead of failing the shard, and so does
/// the next segment's preparation. Both used to fail the shard for good.
#[test]
fn background_work_waits_for_space_instead_of_failing_the_shard() {
    let base = common::test_dir("enospc-wait");
    let Some(_mount) = common::mount("tmpfs", Some("size=4m"), base.path()) else {
        return;
    };
    let dir = base.path().join("data");
    let small = || config(&dir).segment_bytes(512 << 10);
    let log = Log::open(small()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let mut next = 0u64;
    let mut send = |n: u64| {
        for _ in 0..n {
            let at = producer
                .send("t", Record::new(&payload(next, 1000)))
                .unwrap()
                .wait()
                .unwrap_or_else(|e| panic!("record {next}: {e}"));
            assert_eq!(at.offset, Offset(next));
            next += 1;
        }
    };
    let shard = dir.join("shard-000");
    let segment_count = || common::segments(&dir, 0).len();
    // Into the second segment, with the third prepared.
    send(600);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !shard.join("next.seg.prep").exists() {
        assert!(std::time::Instant::now() < deadline, "no segment prepared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(segment_count(), 2);
    fill_up(&base.path().join("filler"));
    // Past the roll into the prepared segment: its index file and the next preparation meet
    // a full disk, and producing goes on.
    send(500);
    assert_eq!(segment_count(), 3);
    let index = shard.join(format!("{:020}.idx", 1));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !index.exists(),
        "the index file could not have been written"
    );
    std::fs::remove_file(base.path().join("filler")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !index.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the index file waited for ever"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The next roll finds room for a segment.
    send(600);
    assert!(segment_count() >= 4);
    drop(producer);
    drop(log);
    let log = Log::open(small()).unwrap();
    check_acked(&log, &(0..next).collect::<Vec<_>>());
}
