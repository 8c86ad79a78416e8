//! The command line against the library: a second process is refused a locked directory,
//! committed offsets survive SIGKILLs of a committing `load consume` process, and `floodgate
//! groups` shows the groups' lag.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{BACKENDS, small_config, test_dir};
use std::time::Duration;

use floodgate::Log;

#[test]
fn another_process_is_refused_with_the_holder_named() {
    let dir = test_dir("lock-process");
    let _log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(["load", "produce", "--messages", "1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let holder = format!(
        "locked by another floodgate instance (pid {})",
        std::process::id()
    );
    assert!(stderr.contains(&holder), "{stderr}");
}

/// A child process consumes as a group member and commits as it goes; it is SIGKILLed at
/// random moments. Every offset it committed before the kill is there after reopening, the
/// committed offsets never go back, and a last run drains the rest with nothing lost.
#[test]
fn committed_offsets_survive_sigkill_of_the_committing_process() {
    use std::process::{Command, Stdio};
    let base = test_dir("group-kill");
    let dir = base.path().join("data");
    let bin = env!("CARGO_BIN_EXE_floodgate");
    let status = Command::new(bin)
        .args([
            "load",
            "produce",
            "--messages",
            "300000",
            "--partitions",
            "4",
        ])
        .args(["--segment-bytes", "4194304", "--json"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let journal = base.path().join("commits");
    let consume = |extra: &[&str]| {
        let mut c = Command::new(bin);
        c.args([
            "load",
            "consume",
            "--group",
            "g",
            "--commit-interval-ms",
            "10",
        ])
        .args(extra)
        .arg("--dir")
        .arg(&dir)
        .arg("--commit-journal")
        .arg(&journal);
        c
    };
    let mut rng = common::Rng::new(0x6b69_6c6c);
    let mut floor = [0u64; 4];
    for round in 0..4 {
        let _ = std::fs::remove_file(&journal);
        let mut child = consume(&["--consume-rate", "200000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700 + rng.below(500)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        let mut journaled = [0u64; 4];
        for line in std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
        {
            let mut it = line.split(' ').map(|w| w.parse::<u64>().unwrap());
            let (p, offset) = (it.next().unwrap() as usize, it.next().unwrap());
            journaled[p] = journaled[p].max(offset);
        }
        assert!(
            journaled.iter().any(|&o| o > 0),
            "round {round}: nothing committed"
        );
        let log = Log::open(floodgate::Config::new(&dir)).unwrap();
        let lag = log.group_lag("g", "load").unwrap();
        for p in lag.partitions {
            let i = p.partition as usize;
            let committed = p.committed.unwrap_or_default().0;
            assert!(
                committed >= journaled[i],
                "round {round}: {p:?} < {journaled:?}"
            );
            assert!(committed >= floor[i], "committed offsets never go back");
            assert!(committed <= p.next.0);
            floor[i] = committed;
        }
    }
    // The last run drains the rest, checking every record.
    let out = consume(&["--verify", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["group_lag"], 0, "{report}");
    assert_eq!(report["verify"]["corrupt"], 0);
    let drained = report["consumed"].as_u64().unwrap();
    assert_eq!(drained, 300_000 - floor.iter().sum::<u64>(), "{report}");
}

/// Ctrl-C (SIGINT) or SIGTERM during a load run removes its temporary data directory and says
/// so (the directory, gigabytes after a peak run, used to stay behind).
#[test]
fn an_interrupted_load_run_removes_its_temporary_directory() {
    use std::process::{Command, Stdio};
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let tmp = test_dir("interrupt");
        let child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args(["load", "produce", "--rate", "2000", "--duration", "60"])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let made = || {
            std::fs::read_dir(tmp.path())
                .unwrap()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("floodgate-load-")
                })
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while made() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no data directory made"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal as i32), "{stderr}");
        assert!(
            stderr.contains("removed the temporary data directory"),
            "{stderr}"
        );
        assert_eq!(made(), 0, "{signal}: the temporary directory is gone");
    }
}

/// A load run on tmpfs is warned about: nothing there survives a reboot. Skips (saying why)
/// where `/dev/shm` is not a tmpfs.
#[test]
fn a_data_directory_on_tmpfs_is_warned_about() {
    let shm = std::path::Path::new("/dev/shm");
    let is_tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !is_tmpfs {
        eprintln!("skipped: /dev/shm is not a tmpfs here");
        return;
    }
    let dir = shm.join(format!("floodgate-test-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args([
            "load",
            "produce",
            "--messages",
            "100",
            "--backend",
            "portable",
            "--json",
        ])
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is on tmpfs"), "{stderr}");
    assert!(stderr.contains("survives a reboot"), "{stderr}");
}

/// The command line's errors name its own flags, not the library's `Config` methods: a data
/// directory without O_DIRECT (a ramfs) is told to use `--backend portable`. Mounting needs
/// root; elsewhere the test says why it skipped.
#[test]
fn errors_name_the_command_lines_flags() {
    let base = test_dir("cli-ramfs");
    let Some(mount) = common::mount("ramfs", None, base.path()) else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(["load", "produce", "--messages", "10", "--dir"])
        .arg(base.path().join("data"))
        .output()
        .unwrap();
    drop(mount);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("O_DIRECT"), "{stderr}");
    assert!(stderr.contains("--backend portable"), "{stderr}");
    assert!(!stderr.contains("Config::"), "{stderr}");
}

/// `floodgate groups DIR` shows each group's lag by topic and partition, as text and JSON;
/// names a group it does not know; and while the log is open elsewhere says where to look.
#[test]
fn groups_shows_each_groups_lag() {
    let dir = test_dir("cli-groups");
    let commit = |topic: &str, partition: u32, offset: u64| floodgate::GroupOffset {
        topic: topic.to_owned(),
        partition,
        offset: floodgate::Offset(offset),
        metadata: String::new(),
    };
    let groups = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .arg("groups")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    {
        let log = Log::open(floodgate::Config::new(dir.path())).unwrap();
        log.create_topic("t", floodgate::TopicConfig::new(2))
            .unwrap();
        let mut producer = log.producer();
        let acks: Vec<_> = (0..10)
            .map(|i| {
                let r = floodgate::Record::new(b"r").partition(i % 2);
                producer.send("t", r).unwrap()
            })
            .collect();
        for a in acks {
            a.wait().unwrap();
        }
        log.commit_group_offsets("logistics", &[commit("t", 0, 3)])
            .unwrap();
        let out = groups(&[]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("/metrics"), "{stderr}");
        log.close().unwrap();
    }
    let out = groups(&["--partitions"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("logistics  t: lag 7 records"), "{text}");
    assert!(text.contains("  1: committed -, end 5, lag 5"), "{text}");
    let out = groups(&["--json", "--group", "logistics"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["groups"][0]["topics"][0]["lag"], 7);
    assert_eq!(v["groups"][0]["topics"][0]["partitions"][0]["committed"], 3);
    let out = groups(&["--group", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no group \"nobody\""));
}
