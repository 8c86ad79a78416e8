//! `floodgate serve` as a process: it says where it listens, answers the Kafka protocol there
//! and on /metrics, and on SIGTERM (or SIGINT) stops, closes the log and exits 0, leaving a
//! directory the next open takes without repair.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use common::test_dir;

/// An ApiVersions v0 request (correlation id 7, client id "t"), framed.
const API_VERSIONS_V0: [u8; 15] = [0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 7, 0, 1, b't'];

#[test]
fn serve_answers_and_stops_cleanly_on_a_signal() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let dir = test_dir("serve-process");
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--dir",
            data,
        ];
        let (mut child, mut stderr, line) = spawn_serve(&args);
        // "floodgate V serving DIR on ADDR (Kafka protocol; metrics http://ADDR/metrics; ...".
        let addr = line.split(" on ").nth(1).and_then(|s| s.split(' ').next());
        let addr = addr.unwrap_or_else(|| panic!("no address in {line:?}"));
        let metrics = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next());
        let metrics = metrics.unwrap_or_else(|| panic!("no metrics address in {line:?}"));

        let mut kafka = TcpStream::connect(addr).unwrap();
        kafka
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        kafka.write_all(&API_VERSIONS_V0).unwrap();
        let mut head = [0u8; 10];
        kafka.read_exact(&mut head).unwrap();
        assert_eq!(&head[4..8], &[0, 0, 0, 7], "the correlation id comes back");
        assert_eq!(&head[8..10], &[0, 0], "no error");

        let mut http = TcpStream::connect(metrics).unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).unwrap();
        assert!(
            text.contains("floodgate_requests_total{api=\"ApiVersions\"} 1"),
            "{text}"
        );

        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{signal}: {status:?}: {rest}");
        assert!(rest.contains("the log is closed"), "{rest}");
        let log = floodgate::Log::open(floodgate::Config::new(data)).unwrap();
        let report = log.recovery_report();
        assert!(
            report.torn_tails.is_empty() && report.repaired.is_empty(),
            "{report:?}"
        );
    }
}

/// Starts `floodgate serve` with `args`: the process, its stderr, and the first line there.
fn spawn_serve(args: &[&str]) -> (Child, BufReader<ChildStderr>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("serve")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    (child, stderr, line)
}

/// Starts `floodgate serve` with `args`; returns its first line on stderr, then stops it.
fn start_line(args: &[&str]) -> Result<String, String> {
    let (mut child, mut stderr, line) = spawn_serve(args);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    match status.success() {
        true => Ok(line),
        false => Err(line + &rest),
    }
}

#[test]
fn a_config_file_sets_options_and_the_command_line_overrides_them() {
    let dir = test_dir("serve-config");
    let data = dir.path().join("data");
    let config = dir.path().join("serve.json");
    let options = serde_json::json!({
        "dir": data.to_str().unwrap(),
        "listen": "127.0.0.1:0",
        "metrics_listen": "none",
        "default_partitions": 3,
        "auto_create_topics": false,
    });
    std::fs::write(&config, options.to_string()).unwrap();
    let config = config.to_str().unwrap();
    let line = start_line(&["--config", config]).unwrap();
    assert!(line.contains("metrics none"), "{line}");
    assert!(line.contains("durability sync"), "{line}");
    let line = start_line(&["--config", config, "--durability", "interval:20"]).unwrap();
    assert!(line.contains("durability interval:20"), "{line}");
    let err = start_line(&["--config", config, "--durability", "often"]).unwrap_err();
    assert!(err.contains("use sync or interval:MS"), "{err}");
    start_line(&["--config", config, "--producer-id-expiration-ms", "60000"]).unwrap();
    let err = start_line(&["--config", config, "--producer-id-expiration-ms", "0"]).unwrap_err();
    assert!(
        err.contains("producer_id_expiry must be at least 1 ms"),
        "{err}"
    );
    assert!(line.contains(data.to_str().unwrap()), "{line}");
    let line = start_line(&["--config", config, "--metrics-listen", "127.0.0.1:0"]).unwrap();
    assert!(line.contains("metrics http://127.0.0.1:"), "{line}");
    // A name that is no option, and a file that is not an object of options.
    std::fs::write(dir.path().join("typo.json"), r#"{"listn": "127.0.0.1:0"}"#).unwrap();
    let typo = dir.path().join("typo.json");
    let err = start_line(&["--config", typo.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("--listn"), "{err}");
    std::fs::write(dir.path().join("list.json"), "[1, 2]").unwrap();
    let list = dir.path().join("list.json");
    let err = start_line(&["--config", list.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("not a JSON object"), "{err}");
}

/// The Kafka address in `floodgate serve`'s first line.
fn kafka_addr(line: &str) -> String {
    let addr = line.split(" on ").nth(1).and_then(|s| s.split(' ').next());
    addr.unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

/// Runs `floodgate load` with `args`: whether it succeeded, its stdout and its stderr.
/// The JSON report of a `floodgate load` run that must succeed.
fn load_report(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = load(args);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn load(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("load")
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn the_load_tool_produces_and_consumes_over_the_protocol() {
    let dir = test_dir("serve-load");
    let data = dir.path().join("data");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--dir",
        data.to_str().unwrap(),
        "--group-initial-rebalance-delay-ms",
        "300",
    ];
    let (child, _stderr, line) = spawn_serve(&args);
    let mut child = KillOnDrop(child);
    let addr = kafka_addr(&line);

    // Nothing to consume yet: a clear error, not a hang.
    let (ok, _, err) = load(&["consume", "--bootstrap", &addr]);
    assert!(!ok && err.contains("no topic \"load\""), "{err}");

    let report = load_report(&[
        "produce",
        "--bootstrap",
        &addr,
        "--partitions",
        "5",
        "--producers",
        "2",
        "--messages",
        "30000",
        "--size",
        "20..300",
        "--verify",
        "--json",
    ]);
    assert_eq!(report["produced"], 30000, "{report}");
    assert_eq!(report["partitions"], 5, "{report}");
    assert_verified(&report, 30000);

    // An idempotent producer's batches are numbered and stored once each.
    let report = load_report(&[
        "produce",
        "--bootstrap",
        &addr,
        "--idempotent",
        "--messages",
        "20000",
        "--verify",
        "--json",
    ]);
    assert_eq!(report["idempotent"], true, "{report}");
    assert_verified(&report, 20000);
    let (ok, _, err) = load(&[
        "produce",
        "--bootstrap",
        &addr,
        "--idempotent",
        "--in-flight",
        "6",
        "--messages",
        "10",
    ]);
    assert!(!ok && err.contains("--in-flight 5 at most"), "{err}");

    // A second run adds to the topic as it is; a consumer reads both runs whole, paced.
    let (ok, _, err) = load(&[
        "produce",
        "--bootstrap",
        &addr,
        "--partitions",
        "9",
        "--messages",
        "10000",
        "--linger-ms",
        "2",
    ]);
    assert!(ok && err.contains("exists with 5 partitions"), "{err}");
    let report = load_report(&[
        "consume",
        "--bootstrap",
        &addr,
        "--verify",
        "--consume-rate",
        "40000",
        "--json",
    ]);
    assert_eq!(report["consumed"], 60000, "{report}");
    assert_eq!(report["verify"]["duplicated"], 0, "{report}");
    assert_eq!(report["verify"]["corrupt"], 0, "{report}");
    let seconds = report["duration_s"].as_f64().unwrap();
    assert!(
        seconds >= 1.45,
        "60,000 records at 40,000/s took {seconds} s"
    );

    // The mission in small: producers at a peak rate, one consumer drained at a lower one.
    let report = load_report(&[
        "peak",
        "--bootstrap",
        &addr,
        "--duration",
        "3",
        "--produce-rate",
        "20000",
        "--consume-rate",
        "5000",
        "--verify",
        "--json",
    ]);
    let produced = report["produced"].as_u64().unwrap();
    assert!((55_000..=60_100).contains(&produced), "{report}");
    let per_second = report["consumed_per_second"].as_array().unwrap();
    assert!(per_second.len() >= 3, "{report}");
    assert_seconds_at_5000(&per_second[..2], &report);
    assert_verified(&report, produced);

    // The same with the consumer side a group of two members that the server paces, in
    // either group protocol.
    for (group, protocol) in [("logistics", "classic"), ("logistics-kip848", "consumer")] {
        let report = load_report(&[
            "peak",
            "--bootstrap",
            &addr,
            "--group",
            group,
            "--group-protocol",
            protocol,
            "--consumers",
            "2",
            "--duration",
            "4",
            "--produce-rate",
            "20000",
            "--consume-rate",
            "5000",
            "--verify",
            "--json",
        ]);
        assert_eq!(report["group_protocol"], protocol, "{report}");
        assert_eq!(report["pacing"], "server", "{report}");
        let produced = report["produced"].as_u64().unwrap();
        assert_verified(&report, produced);
        let consuming = report["duration_s"].as_f64().unwrap()
            - report["group_assigned_after_s"].as_f64().unwrap();
        let consumed = report["consumed"].as_f64().unwrap();
        assert!(
            (consumed - 5000.0 * consuming).abs() < 500.0 + 0.05 * consumed,
            "{consumed} records in {consuming:.2} s: {report}"
        );
        // Without a rebalance (members that joined together), every whole second at the rate.
        if report["group_rebalances"] == 0 {
            let per_second = report["consumed_per_second"].as_array().unwrap();
            assert_seconds_at_5000(&per_second[..per_second.len() - 1], &report);
        }
    }

    kill(&mut child.0);
    let (ok, _, err) = load(&["produce", "--bootstrap", &addr, "--messages", "10"]);
    assert!(
        !ok && err.contains(&format!("connecting to {addr}")),
        "{err}"
    );
}

/// Each of `seconds` (records consumed in a whole second) is the 5,000/s consume rate
/// within 10%.
fn assert_seconds_at_5000(seconds: &[serde_json::Value], report: &serde_json::Value) {
    for n in seconds {
        let n = n.as_u64().unwrap();
        assert!(
            (4_500..=5_500).contains(&n),
            "{n} consumed in a second: {report}"
        );
    }
}

/// The load tool's report checked `checked` records and found nothing missing, duplicated,
/// corrupt or out of order.
fn assert_verified(report: &serde_json::Value, checked: u64) {
    assert_eq!(report["verify"]["checked"], checked, "{report}");
    for bad in ["missing", "duplicated", "corrupt", "out_of_order"] {
        assert_eq!(report["verify"][bad], 0, "{bad}: {report}");
    }
}

fn kill(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A server process stopped however the test ends (a failed assertion included), so it does
/// not outlive the test holding its output open.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An idempotent confluent-kafka producer (acks=all) through three SIGKILLs of the server and
/// its restarts on the same directory and port: every acknowledged record is stored, and none
/// twice (retries of batches stored before a kill, when a kill comes between a batch's write
/// and its answer, are recognised after the restart; `tests/idempotence.rs` pins that part
/// without depending on when the kill lands). Skipped,
/// saying so, where confluent-kafka is missing (CI installs it and requires it).
#[test]
fn an_idempotent_producer_loses_and_repeats_nothing_across_a_kill() {
    let Some(python) = confluent_python() else {
        return;
    };
    let dir = test_dir("serve-kill");
    let mut server = Restartable::start(&dir.path().join("data"));
    let listen = server.listen.clone();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kafka/tests/clients/confluent_crash.py"
    );
    let mut producer = Command::new(&python)
        .args([script, &listen, "kill-orders", "100000", "20000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(producer.stdout.take().unwrap());
    let mut said = String::new();
    // Mid-stream, three times: after 10,000, 40,000 and 70,000 acks.
    for at in [10_000u64, 40_000, 70_000] {
        read_until(&mut out, &mut said, "the producer", |line| {
            let acked: u64 = (line.split(' ').nth(1))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            acked >= at
        });
        server.kill_and_restart();
    }
    // The server is up for good: the producer may read back what it stored.
    let mut stdin = producer.stdin.take().unwrap();
    stdin.write_all(b"check\n").unwrap();
    drop(stdin);
    out.read_to_string(&mut said).unwrap();
    let mut err = String::new();
    producer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = producer.wait().unwrap();
    assert!(status.success(), "{said}{err}");
    assert!(said.contains("ok: 100000 acked"), "{said}");
    drop(server);
}

/// Reads `out` line by line into `said` until a line is `done`; panics, saying what `who`
/// said, if it ends first.
fn read_until(out: &mut impl BufRead, said: &mut String, who: &str, done: impl Fn(&str) -> bool) {
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{who} ended: {said}");
        *said += &line;
        if done(&line) {
            return;
        }
    }
}

/// The Python interpreter with confluent-kafka (FLOODGATE_PYTHON), or `None`, saying so, where
/// it is missing (CI installs it and requires it).
fn confluent_python() -> Option<String> {
    let python = std::env::var("FLOODGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .status();
    if probe.is_ok_and(|s| s.success()) {
        return Some(python);
    }
    assert!(
        std::env::var_os("FLOODGATE_REQUIRE_KAFKA_CLIENTS").is_none(),
        "confluent-kafka is required (FLOODGATE_REQUIRE_KAFKA_CLIENTS)"
    );
    eprintln!("skipped: {python} has no confluent_kafka (pip install confluent-kafka)");
    None
}

/// `floodgate serve` on a free port and `data`, killed with SIGKILL and started again on the
/// same port and directory at will.
struct Restartable {
    server: KillOnDrop,
    args: Vec<String>,
    listen: String,
    /// Each server's stderr stays open while it runs (it logs closed connections there).
    logs: Vec<BufReader<ChildStderr>>,
}

impl Restartable {
    fn start(data: &std::path::Path) -> Restartable {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let data = data.to_str().unwrap().to_owned();
        let args: Vec<String> = [
            "--listen",
            &listen,
            "--metrics-listen",
            "none",
            "--dir",
            &data,
        ]
        .map(str::to_owned)
        .to_vec();
        let (child, stderr, line) =
            spawn_serve(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(line.contains(&listen), "{line}");
        Restartable {
            server: KillOnDrop(child),
            args,
            listen,
            logs: vec![stderr],
        }
    }

    fn kill_and_restart(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.server.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.server.0.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, stderr, line) = spawn_serve(&args);
        assert!(line.contains(&self.listen), "{line}");
        self.server = KillOnDrop(child);
        self.logs.push(stderr);
    }
}

/// A confluent-kafka group member consuming through a SIGKILL of the server and its restart,
/// in each group protocol: the server lost the group's membership but not its commits, so the
/// member joins again and goes on from them; every record is delivered, and the group's
/// commits end at the partitions' ends.
#[test]
fn a_consuming_group_member_goes_on_from_its_commits_across_a_kill() {
    let Some(python) = confluent_python() else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kafka/tests/clients/confluent_group_crash.py"
    );
    for protocol in ["classic", "consumer"] {
        let dir = test_dir(&format!("serve-kill-group-{protocol}"));
        let mut server = Restartable::start(&dir.path().join("data"));
        let topic = format!("kill-group-{protocol}");
        let mut member = Command::new(&python)
            .args([script, &server.listen, &topic, "10000", protocol])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(member.stdout.take().unwrap());
        let mut said = String::new();
        read_until(&mut out, &mut said, "the member", |line| {
            line.starts_with("consumed 3000")
        });
        server.kill_and_restart();
        out.read_to_string(&mut said).unwrap();
        let mut err = String::new();
        (member.stderr.take().unwrap())
            .read_to_string(&mut err)
            .unwrap();
        let status = member.wait().unwrap();
        assert!(status.success(), "{protocol}: {said}{err}");
        assert!(said.contains("ok: 10000 records"), "{said}");
    }
}
