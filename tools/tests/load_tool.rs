//! The load tool's JSON contract: one object on stdout with the field names later work relies
//! on, each of the right type.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use serde_json::Value;

/// `floodgate load ARGS --dir DIR --json`.
fn load(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("load")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap()
}

/// Runs a scenario in a fresh directory; it must succeed with exactly one JSON object.
fn run(args: &[&str]) -> Value {
    let base = common::test_dir("loadtool");
    let out = load(&base.path().join("data"), args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn assert_fields(v: &Value, numbers: &[&str], strings: &[&str]) {
    for f in numbers {
        assert!(v[f].is_number(), "{f} is a number in {v}");
    }
    for f in strings {
        assert!(v[f].is_string(), "{f} is a string in {v}");
    }
}

#[test]
fn produce_json_contract() {
    let v = run(&[
        "produce",
        "--messages",
        "3000",
        "--partitions",
        "2",
        "--size",
        "20..300",
        "--window-bytes",
        "4096",
        "--ring-records",
        "8",
        "--verify",
        "--compare-device",
        "--compare-device-bytes",
        "8388608",
    ]);
    assert_eq!(v["scenario"], "produce");
    assert_eq!(v["message_size"], "20..300");
    // 4096 bytes of 160-byte records on average; a ring of 8 makes the producer wait often.
    assert_eq!(
        (v["window_records"].as_u64(), v["ring_records"].as_u64()),
        (Some(25), Some(8))
    );
    for f in [
        "device_write_mb_per_s",
        "device_read_mb_per_s",
        "device_write_ratio",
    ] {
        assert!(v[f].as_f64().is_some_and(|x| x > 0.0), "{f} in {v}");
    }
    assert!(v["env"]["device"].is_string());
    assert_fields(
        &v,
        &[
            "message_bytes",
            "partitions",
            "producers",
            "duration_s",
            "produced",
            "produce_msgs_per_s",
            "produce_mb_per_s",
            "records_per_write",
            "batches_per_write",
            "write_bytes_mean",
            "write_latency_us_mean",
            "flush_latency_us_mean",
            "segment_rolls",
        ],
        &["durability", "io_backend"],
    );
    assert_eq!(v["produced"], 3000);
    assert!(v["writes"].as_u64().is_some_and(|w| w > 0 && w <= 3000));
    assert!(v["flushes"].as_u64().is_some_and(|f| f > 0));
    for p in ["p50", "p99", "p999", "max"] {
        assert!(v["ack_latency_us"][p].is_number(), "ack_latency_us.{p}");
    }
    for f in [
        "checked",
        "missing",
        "duplicated",
        "corrupt",
        "out_of_order",
    ] {
        assert!(v["verify"][f].is_number(), "verify.{f}");
    }
    assert_eq!(v["verify"]["checked"], 3000);
    assert_eq!(v["verify"]["missing"], 0);
    for f in ["kernel", "cpu_model", "file_system"] {
        assert!(v["env"][f].is_string(), "env.{f}");
    }
    assert!(v["env"]["cores"].is_number());
}

#[test]
fn peak_json_contract_and_plot() {
    let plots = common::test_dir("loadtool-plot");
    let svg = plots.path().join("peak.svg");
    let v = run(&[
        "peak",
        "--duration",
        "3",
        "--produce-rate",
        "20000",
        "--consume-rate",
        "5000",
        "--verify",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(v["scenario"], "peak");
    assert_fields(
        &v,
        &[
            "produced",
            "produce_msgs_per_s",
            "consumed",
            "consume_msgs_per_s",
            "consume_mb_per_s",
            "consume_rate_error_pct",
            "backlog_max",
        ],
        &["durability", "io_backend"],
    );
    assert!(v["consumed"].as_u64().unwrap() > 0);
    assert!(
        v["backlog_max"].as_u64().unwrap() > 0,
        "producing faster than consuming builds a backlog"
    );
    // The group's lag at the end, and its time to drain at the consume rate.
    let lag = v["group_lag"].as_u64().unwrap();
    assert!(lag > 0, "{v}");
    let drain = v["time_to_drain_s"].as_f64().unwrap();
    assert!((drain - lag as f64 / 5000.0).abs() < 1e-6, "{v}");
    assert_eq!(v["verify"]["missing"], 0);
    assert_eq!(v["verify"]["corrupt"], 0);
    for f in [
        "produced_per_second",
        "consumed_per_second",
        "ack_latency_p50_us_per_second",
        "ack_latency_p99_us_per_second",
        "ack_latency_max_us_per_second",
    ] {
        assert!(v[f].as_array().is_some_and(|a| !a.is_empty()), "{f}");
    }
    // The plot: an SVG document with the three panels and their lines (produced, consumed,
    // backlog, p50, p99, max).
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") || text.starts_with("<svg"),
        "{}",
        &text[..40]
    );
    assert!(text.trim_end().ends_with("</svg>"));
    for caption in ["throughput", "backlog", "ack latency"] {
        assert!(text.contains(caption), "{caption}");
    }
    assert!(text.matches("<polyline").count() >= 6, "six lines");
}

#[test]
fn consume_json_contract_with_a_group() {
    let base = common::test_dir("loadtool-consume");
    let dir = base.path().join("data");
    let floodgate = |args: &[&str]| {
        let out = load(&dir, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    floodgate(&["produce", "--messages", "5000", "--partitions", "3"]);
    // Two members of the group share the partitions.
    let v = floodgate(&["consume", "--group", "g", "--consumers", "2", "--verify"]);
    assert_eq!(v["consumers"], 2);
    assert_eq!(v["scenario"], "consume");
    assert_fields(
        &v,
        &[
            "consumed",
            "consume_msgs_per_s",
            "consume_mb_per_s",
            "duration_s",
            "group_lag",
        ],
        &["io_backend", "group"],
    );
    assert_eq!(v["consumed"], 5000);
    assert_eq!(v["group_lag"], 0);
    assert_eq!(v["verify"]["corrupt"], 0);
    assert_eq!(v["verify"]["duplicated"], 0);
    // The group committed: a second run has nothing left to consume.
    let again = floodgate(&["consume", "--group", "g"]);
    assert_eq!(again["consumed"], 0);
}

#[test]
fn idle_json_contract() {
    let v = run(&["idle", "--duration", "0.5"]);
    assert_eq!(v["scenario"], "idle");
    assert_fields(
        &v,
        &["idle_cpu_pct_of_one_core", "duration_s", "shards"],
        &[],
    );
}

/// `--verify` checks payloads end to end: a payload changed on disk with its batch checksum
/// recomputed (so the log itself cannot tell) is reported as corrupt, and the run fails.
#[test]
fn verify_catches_a_corrupted_payload() {
    use std::os::unix::fs::FileExt;
    let base = common::test_dir("loadtool-corrupt");
    let dir = base.path().join("data");
    assert!(
        load(&dir, &["produce", "--messages", "2000"])
            .status
            .success()
    );
    let segment = common::segments(&dir, 0)[0].clone();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&segment, 4 << 20, Default::default()).unwrap();
    let topic = common::topic_id(&dir, "load");
    let frame = frames.iter().find(|f| f.topic_id == topic).unwrap().entry;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut bytes = vec![0u8; frame.frame_bytes as usize];
    file.read_exact_at(&mut bytes, frame.pos).unwrap();
    // Flip a byte near the end of the batch (inside the last record's value), then recompute
    // the RecordBatch CRC (over the batch from byte 21; the batch follows the 32-byte frame
    // header, its CRC at batch bytes 17..21, big-endian).
    let batch = &mut bytes[32..];
    let at = batch.len() - 10;
    batch[at] ^= 0x5a;
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    file.write_all_at(&bytes, frame.pos).unwrap();
    file.sync_all().unwrap();
    let out = load(&dir, &["consume", "--verify"]);
    assert!(!out.status.success(), "the run fails on a corrupt payload");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["verify"]["corrupt"].as_u64().unwrap() >= 1, "{v}");
}

/// A record size the log would refuse is refused before the run starts, naming the flag and
/// the limit (it used to be found only after a gigabyte of buffers and up to a minute).
#[test]
fn an_impossible_size_is_refused_before_the_run() {
    let base = common::test_dir("loadtool-size");
    let started = std::time::Instant::now();
    let out = load(
        &base.path().join("data"),
        &["produce", "--messages", "10", "--size", "100000000"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--size 100000000"), "{stderr}");
    assert!(stderr.contains("at most"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(!base.path().join("data").exists(), "no log was made");
}

/// `--verify` on a directory written by more than one run: each record's identity carries its
/// run, so the second run's records are not "duplicates" of the first's, and nothing is out of
/// order; a real duplicate (the same record stored twice) is still caught (it used to report
/// every record of the second run as duplicated).
#[test]
fn verify_is_right_on_a_directory_written_by_several_runs() {
    let base = common::test_dir("loadtool-runs");
    let dir = base.path().join("data");
    for _ in 0..2 {
        let out = load(
            &dir,
            &[
                "produce",
                "--messages",
                "3000",
                "--partitions",
                "2",
                "--verify",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verify"]["missing"], 0, "{v}");
        assert_eq!(v["verify"]["duplicated"], 0, "{v}");
    }
    let out = load(&dir, &["consume", "--verify"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(v["consumed"], 6000, "{v}");
    for field in ["duplicated", "out_of_order", "corrupt"] {
        assert_eq!(v["verify"][field], 0, "{field}: {v}");
    }
    // A record stored twice is a duplicate.
    {
        let log = floodgate::Log::open(floodgate::Config::new(&dir)).unwrap();
        let first = log
            .read("load", 0, floodgate::Offset(0), 1)
            .unwrap()
            .remove(0);
        let mut producer = log.producer();
        let value = first.value.unwrap();
        let copy = floodgate::Record::new(&value).partition(1);
        producer.send("load", copy).unwrap().wait().unwrap();
    }
    let out = load(&dir, &["consume", "--verify"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{v}");
    assert_eq!(v["verify"]["duplicated"], 1, "{v}");
}

/// `--verify` on a log with a damaged batch (its checksum no longer matches): the run fails,
/// the damaged read is counted as corrupt, and the other partitions are still checked whole.
#[test]
fn verify_counts_a_damaged_batch_and_checks_the_rest() {
    let base = common::test_dir("loadtool-damaged");
    let dir = base.path().join("data");
    let first = load(
        &dir,
        &[
            "produce",
            "--messages",
            "150000",
            "--partitions",
            "3",
            "--segment-bytes",
            "8388608",
        ],
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let segment = common::segments(&dir, 0)[0].clone();
    let (frames, _) =
        floodgate::inspect::scan_segment_file(&segment, 4 << 20, Default::default()).unwrap();
    let topic = common::topic_id(&dir, "load");
    // Commits of a fast producer can make frames of a megabyte: a sealed segment holds few.
    let ours: Vec<_> = frames.iter().filter(|f| f.topic_id == topic).collect();
    let victim = ours[ours.len() / 2];
    let mut image = std::fs::read(&segment).unwrap();
    image[(victim.entry.pos + u64::from(victim.entry.frame_bytes) - 3) as usize] ^= 0x40;
    std::fs::write(&segment, &image).unwrap();
    let out = load(
        &dir,
        &[
            "produce",
            "--messages",
            "30",
            "--partitions",
            "3",
            "--verify",
        ],
    );
    assert!(!out.status.success(), "the run fails on a damaged batch");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["verify"]["corrupt"].as_u64().unwrap() >= 1, "{v}");
    // The damaged partition's check ends at the damage: at most its 10 records of this run
    // go uncounted; the two undamaged partitions' records, this run's included, are checked.
    assert!(v["verify"]["missing"].as_u64().unwrap() <= 10, "{v}");
    assert!(
        v["verify"]["checked"].as_u64().unwrap() >= 2 * (150_000 + 30) / 3,
        "{v}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("partition {}", victim.partition)),
        "{stderr}"
    );
}
