//! SIGKILL crash test (a bounded run; `floodgate load crash --iterations N` runs long): a child
//! process produces with Sync acks and journals each ack; it is killed at random moments; after
//! each kill the log is reopened and every journaled ack must be present with its exact bytes,
//! with dense offsets.

#[path = "../../tests/common/mod.rs"]
mod common;

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let base = common::test_dir("crash");
    let dir = base.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args([
            "load",
            "crash",
            "--iterations",
            "6",
            "--kill-after-ms-max",
            "600",
            "--json",
        ])
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "crash run failed: {stdout} {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["iterations"], 6);
    assert!(report["acks_checked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["corrupt"], 0, "{report}");
    assert_eq!(report["offset_gaps"], 0, "{report}");
}
