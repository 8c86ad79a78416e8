//! `floodgate repair`: the dry run says what would be cut and dropped and changes nothing;
//! the repair does exactly that, and the log then opens without help.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{BACKENDS, payload, segments, small_config, test_dir};
use floodgate::{Error, Log, Record, TopicConfig};

fn repair(dir: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("repair")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `word` in `text` ("dropping 12 record(s)").
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text}"))
        + word.len();
    text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn dry_run_says_what_repair_then_does() {
    let dir = test_dir("repair");
    let config = || small_config(dir.path(), BACKENDS[0]);
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("orders", TopicConfig::new(2)).unwrap();
        let mut producer = log.producer();
        for i in 0..150u64 {
            let v = payload(i, 900);
            let r = Record::new(&v).partition((i % 2) as u32);
            producer.send("orders", r).unwrap().wait().unwrap();
        }
    }
    assert_eq!(
        stdout_of(&repair(dir.path(), &["--dry-run"])).trim(),
        format!("{}: nothing to repair", dir.path().display())
    );
    // A flipped byte a third of the way into the only segment.
    let seg = segments(dir.path(), 0).pop().unwrap();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&seg, 64 << 10, Default::default()).unwrap();
    let victim = frames[frames.len() / 3].entry;
    let mut image = std::fs::read(&seg).unwrap();
    image[victim.pos as usize + 50] ^= 0x20;
    std::fs::write(&seg, &image).unwrap();

    let dry = stdout_of(&repair(dir.path(), &["--dry-run"]));
    assert!(
        dry.contains(&format!(
            "would cut {} at byte {}",
            seg.display(),
            victim.pos
        )),
        "{dry}"
    );
    let would_drop = number_after(&dry, "dropping");
    assert!(dry.contains("topic id 1 partition 0"), "{dry}");
    assert!(dry.contains("dry run: nothing changed"), "{dry}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        image,
        "the dry run changed nothing"
    );
    match Log::open(config()) {
        Err(Error::Corrupt { pos, .. }) => assert_eq!(pos, victim.pos),
        other => panic!("a plain open refuses the damage: {:?}", other.err()),
    }

    let done = stdout_of(&repair(dir.path(), &[]));
    assert!(done.contains("will cut"), "{done}");
    assert!(
        done.contains(&format!("{would_drop} record(s) dropped")),
        "the repair drops what the dry run said ({would_drop}): {done}"
    );
    let log = Log::open(config()).unwrap();
    let mut kept = 0;
    for p in 0..2 {
        let mut at = floodgate::Offset(0);
        loop {
            let records = log.read("orders", p, at, 1 << 20).unwrap();
            let Some(last) = records.last() else { break };
            at = last.offset.next();
            kept += records.len() as u64;
        }
    }
    // The damaged batch's records are not counted: they could not be read.
    assert!(kept + would_drop < 150 && kept > 0, "kept {kept}");
    // No offset given before is given again: the partitions' next offsets stay where they were.
    let next: u64 = (0..2).map(|p| log.offsets("orders", p).unwrap().1.0).sum();
    assert_eq!(next, 150, "offsets cut off stay taken");
    drop(log);
    assert!(
        stdout_of(&repair(dir.path(), &["--dry-run"])).contains("nothing to repair"),
        "repaired for good"
    );
}

/// `meta.json` lost: the dry run says it would rebuild it from the segments and changes
/// nothing; the repair rebuilds it, and the log then opens without help with its topics.
#[test]
fn a_lost_metadata_file_is_rebuilt_by_repair() {
    let dir = test_dir("repair-meta");
    let config = || small_config(dir.path(), BACKENDS[0]);
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("orders", TopicConfig::new(2)).unwrap();
        let mut producer = log.producer();
        for i in 0..20u64 {
            let v = payload(i, 100);
            let r = Record::new(&v).partition((i % 2) as u32);
            producer.send("orders", r).unwrap().wait().unwrap();
        }
    }
    let meta = dir.path().join("meta.json");
    std::fs::remove_file(&meta).unwrap();
    let dry = stdout_of(&repair(dir.path(), &["--dry-run"]));
    assert!(
        dry.contains("meta.json is missing: would rebuild it from the segments"),
        "{dry}"
    );
    assert!(dry.contains("orders"), "{dry}");
    assert!(!meta.exists(), "a dry run writes nothing");
    let inspect = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(["inspect", "--verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!inspect.status.success());
    let said = String::from_utf8_lossy(&inspect.stderr);
    assert!(
        said.contains("meta.json is missing") && said.contains("floodgate repair"),
        "{said}"
    );
    assert!(matches!(Log::open(config()), Err(Error::Corrupt { .. })));

    let done = stdout_of(&repair(dir.path(), &[]));
    assert!(done.contains("rebuilt meta.json"), "{done}");
    let log = Log::open(config()).unwrap();
    let topics: Vec<(String, u32)> = (log.list_topics().into_iter())
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(topics, vec![("orders".to_string(), 2)]);
    for p in 0..2 {
        let records = log
            .read("orders", p, floodgate::Offset(0), 1 << 20)
            .unwrap();
        assert_eq!(records.len(), 10, "partition {p}");
    }
}

/// A directory of empty shard folders (no meta.json, no records) holds no log to repair.
#[test]
fn repair_of_a_directory_without_a_log_says_so() {
    let dir = test_dir("repair-none");
    std::fs::create_dir_all(dir.path().join("shard-000")).unwrap();
    let out = repair(dir.path(), &["--dry-run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no floodgate log"), "{err}");
}
