//! `floodgate inspect`: a summary of a data directory; `--verify` passes on a healthy log and
//! fails, naming file and position, on a flipped bit.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{BACKENDS, payload, segments, small_config, test_dir};
use floodgate::{Log, Record, TopicConfig};

/// `floodgate inspect DIR EXTRA...`.
fn inspect(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("inspect")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `inspect --verify`, checks it passes, and returns what it printed.
fn verify_passes(dir: &std::path::Path) -> String {
    let out = inspect(dir, &["--verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A log with topic "orders" of `partitions` partitions and `n` records of 900 bytes spread
/// over them, closed.
fn fill(dir: &std::path::Path, partitions: u32, n: u64) {
    let log = Log::open(small_config(dir, BACKENDS[0])).unwrap();
    log.create_topic("orders", TopicConfig::new(partitions))
        .unwrap();
    let mut producer = log.producer();
    for i in 0..n {
        let v = payload(i, 900);
        let r = Record::new(&v).partition((i % u64::from(partitions)) as u32);
        producer.send("orders", r).unwrap().wait().unwrap();
    }
}

#[test]
fn inspect_verify_passes_then_catches_a_flipped_bit() {
    let dir = test_dir("inspect");
    fill(dir.path(), 2, 600);
    let inspect = |extra: &[&str]| inspect(dir.path(), extra);
    let stdout = verify_passes(dir.path());
    assert!(stdout.contains("topic \"orders\""), "{stdout}");
    assert!(stdout.contains("orders/0: offsets 0..300"), "{stdout}");
    assert!(
        stdout.contains("every frame, record and index entry checks out"),
        "{stdout}"
    );
    let dump = inspect(&["--dump"]);
    assert!(
        String::from_utf8_lossy(&dump.stdout).contains("offset 299"),
        "dump lists records"
    );

    let seg = segments(dir.path(), 0)[0].clone();
    let mut image = std::fs::read(&seg).unwrap();
    image[3000] ^= 0x20;
    std::fs::write(&seg, &image).unwrap();
    let out = inspect(&["--verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "damage must fail --verify");
    assert!(stderr.contains(&seg.display().to_string()), "{stderr}");
    assert!(stderr.contains("at byte"), "{stderr}");
}

/// After a crash that undid a roll's rename, the newest segment's records are in
/// `next.seg.prep`: inspect says so and counts them with the rest.
#[test]
fn inspect_counts_a_prepared_file_that_holds_frames() {
    let dir = test_dir("inspect-prep");
    fill(dir.path(), 1, 700);
    let shard = dir.path().join("shard-000");
    let newest = segments(dir.path(), 0).last().unwrap().clone();
    let _ = std::fs::remove_file(shard.join("next.seg.prep"));
    std::fs::rename(&newest, shard.join("next.seg.prep")).unwrap();
    let stdout = verify_passes(dir.path());
    assert!(stdout.contains("next.seg.prep holds frames"), "{stdout}");
    assert!(stdout.contains("orders/0: offsets 0..700"), "{stdout}");
}

/// `inspect --dump | head`: when the reader goes away, inspect stops quietly (it used to panic
/// on the broken pipe and exit 101).
#[test]
fn a_closed_pipe_ends_the_dump_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = test_dir("inspect-pipe");
    fill(dir.path(), 4, 3000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("inspect")
        .arg(dir.path())
        .arg("--dump")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // like `head` exiting after its lines
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `inspect --verify` fails on a `meta.json` that gives a topic fewer partitions than the
/// segments hold records of, as open does (it used to say the log checks out).
#[test]
fn verify_fails_on_records_the_metadata_cannot_account_for() {
    let dir = test_dir("inspect-meta-fewer");
    fill(dir.path(), 4, 200);
    verify_passes(dir.path());
    let meta = dir.path().join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let fewer = text.replace("\"partitions\": 4", "\"partitions\": 2");
    assert_ne!(text, fewer);
    std::fs::write(&meta, fewer).unwrap();
    let out = inspect(dir.path(), &["--verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("meta.json gives 2 partitions"), "{stderr}");
}

/// The newest segment cut short after a clean close: acknowledged records are gone, and
/// `--verify` says so (it said "checks out" and the next open cut the log silently), as it
/// does for the deleted segment.
#[test]
fn verify_fails_on_a_newest_segment_cut_short_or_missing() {
    let dir = test_dir("inspect-cut");
    fill(dir.path(), 2, 200);
    let stdout = verify_passes(dir.path());
    assert!(stdout.contains("closed cleanly"), "{stdout}");
    let seg = segments(dir.path(), 0).pop().unwrap();
    let image = std::fs::read(&seg).unwrap();
    let data_end = image.iter().rposition(|&b| b != 0).unwrap();
    std::fs::write(&seg, &image[..data_end / 2]).unwrap();
    let out = inspect(dir.path(), &["--verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("acknowledged records are damaged or missing"),
        "{stderr}"
    );
    std::fs::remove_file(&seg).unwrap();
    let out = inspect(dir.path(), &["--verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("segment 0 is missing"), "{stderr}");
}

/// A damaged `start-offsets.json`, which open refuses, fails `--verify` too (it used to pass).
#[test]
fn verify_fails_on_a_damaged_start_offsets_file() {
    let dir = test_dir("inspect-start");
    {
        let config = small_config(dir.path(), BACKENDS[0]).retention_bytes(4 * (256 << 10));
        let log = Log::open(config).unwrap();
        log.create_topic("orders", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        for i in 0..3000 {
            let v = payload(i, 900);
            producer
                .send("orders", Record::new(&v))
                .unwrap()
                .wait()
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while segments(dir.path(), 0).len() > 6 {
            assert!(std::time::Instant::now() < deadline, "retention never ran");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    verify_passes(dir.path());
    let start = dir.path().join("shard-000/start-offsets.json");
    let good = std::fs::read_to_string(&start).unwrap();
    let damaged = good.replace("\"first_segment\":", "\"first_segment\":9");
    assert_ne!(damaged, good);
    std::fs::write(&start, damaged).unwrap();
    let out = inspect(dir.path(), &["--verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("start-offsets.json"), "{stderr}");
    std::fs::write(&start, good).unwrap();
    verify_passes(dir.path());
}

/// `--json` prints one JSON object: shards with their checkpoint and segments, partitions
/// with their offsets, and the damage `--verify` found (exit 1 then, as in text).
#[test]
fn json_output_says_the_same() {
    let dir = test_dir("inspect-json");
    fill(dir.path(), 2, 600);
    let parse = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let out = inspect(dir.path(), &["--verify", "--json"]);
    assert!(out.status.success());
    let v = parse(&out);
    assert_eq!(v["damage"], serde_json::json!([]));
    assert_eq!(v["shards"][0]["checkpoint"]["clean"], true);
    let p0 = &v["partitions"][0];
    assert_eq!(
        (&p0["topic"], &p0["partition"], &p0["first"], &p0["next"]),
        (
            &serde_json::json!("orders"),
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::json!(300)
        )
    );
    let seg = segments(dir.path(), 0).pop().unwrap();
    let mut image = std::fs::read(&seg).unwrap();
    image[200] ^= 1;
    std::fs::write(&seg, &image).unwrap();
    let out = inspect(dir.path(), &["--verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = parse(&out);
    let damage = v["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(
        damage[0].as_str().unwrap().contains("at byte 0"),
        "{damage:?}"
    );
}
