//! Real Kafka clients against the server: kcat (librdkafka; Debian's is 2.0.2, the old
//! librdkafka the server must satisfy) produces and consumes through it, and what it wrote is
//! there after a restart; confluent-kafka for Python (the current librdkafka) produces keyed
//! records with headers to several partitions and reads them back, and its admin client
//! manages topics; the Java client (kafka-clients) produces and consumes (`tests/clients/`).
//! `.ci/run` installs both and sets FLOODGATE_REQUIRE_KAFKA_CLIENTS, which makes a missing
//! client a failure; elsewhere these tests say they skipped. FLOODGATE_PYTHON names the Python
//! that has confluent-kafka (default `python3`).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{serve, stop, test_dir};

/// Whether `program args` runs here; panics when CI requires the client and it does not.
fn client_available(program: &str, args: &[&str], install: &str) -> bool {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("FLOODGATE_REQUIRE_KAFKA_CLIENTS").is_none(),
            "{program} {args:?} is required (FLOODGATE_REQUIRE_KAFKA_CLIENTS) and fails"
        );
        eprintln!("skipped: {program} {args:?} fails ({install})");
    }
    found
}

fn kcat_available() -> bool {
    client_available("kcat", &["-V"], "apt-get install kcat")
}

/// Runs a client program, which checks what it reads itself; fails with its output if it does.
fn run_to_success(command: &mut Command) {
    let out = command.output().expect("the client program starts");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python() -> String {
    std::env::var("FLOODGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs kcat against `addr` with `args`, feeding it `input`; returns its standard output.
fn kcat(addr: SocketAddr, args: &[&str], input: &str) -> String {
    let mut child = Command::new("kcat")
        .arg("-b")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("kcat takes its input");
    let out = child.wait_with_output().expect("kcat ends");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn kcat_produces_and_consumes_through_the_server_and_across_a_restart() {
    if !kcat_available() {
        return;
    }
    let dir = test_dir("kafka-kcat");
    let input: String = (0..2000)
        .map(|i| format!("key{}:value-{i}\n", i % 7))
        .collect();
    let expected: Vec<String> = (0..2000)
        .map(|i| format!("0 {i} key{} value-{i}", i % 7))
        .collect();
    let consume = |addr: SocketAddr, from: &str| -> Vec<String> {
        let args = [
            "-C",
            "-t",
            "orders",
            "-o",
            from,
            "-e",
            "-q",
            "-f",
            "%p %o %k %s\\n",
        ];
        kcat(addr, &args, "").lines().map(str::to_owned).collect()
    };
    {
        let (log, server) = serve(dir.path(), |_| {});
        let addr = server.local_addr();
        // The topic is auto-created by the producer's metadata request.
        let args = [
            "-P",
            "-t",
            "orders",
            "-K:",
            "-X",
            "acks=all",
            "-X",
            "linger.ms=5",
        ];
        kcat(addr, &args, &input);
        assert_eq!(consume(addr, "beginning"), expected);
        assert_eq!(consume(addr, "1500"), expected[1500..]);
        let listing = kcat(addr, &["-L", "-t", "orders"], "");
        assert!(
            listing.contains("topic \"orders\" with 1 partitions"),
            "{listing}"
        );
        let end = kcat(addr, &["-Q", "-t", "orders:0:-1"], "");
        assert!(end.contains("offset 2000"), "{end}");
        stop(log, server);
    }
    // Compressed by librdkafka with each codec: stored as sent, read back whole.
    {
        let (log, server) = serve(dir.path(), |_| {});
        let addr = server.local_addr();
        let lines: String = (0..3000).map(|i| format!("order-number-{i}\n")).collect();
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let topic = format!("z-{codec}");
            kcat(
                addr,
                &["-P", "-t", &topic, "-z", codec, "-X", "linger.ms=100"],
                &lines,
            );
            let args = ["-C", "-t", &topic, "-e", "-q"];
            assert_eq!(kcat(addr, &args, ""), lines, "{codec}");
            // librdkafka sends a batch uncompressed when compressing does not shrink it: some,
            // not all, are compressed.
            let (batches, _) = log
                .read_batches(&topic, 0, floodgate::Offset(0), 64 << 20, false)
                .unwrap();
            let codec_of = |b: &bytes::Bytes| b[22] & 0x07;
            assert!(
                batches.iter().any(|b| codec_of(b) != 0),
                "{codec} compressed"
            );
        }
        stop(log, server);
    }
    // After a restart on the same directory: all of it, and more appended after it.
    let (log, server) = serve(dir.path(), |_| {});
    let addr = server.local_addr();
    assert_eq!(consume(addr, "beginning"), expected);
    kcat(addr, &["-P", "-t", "orders", "-K:"], "late:after-restart\n");
    let all = consume(addr, "beginning");
    assert_eq!(all.len(), 2001);
    assert_eq!(all[2000], "0 2000 late after-restart");
    stop(log, server);
}

#[test]
fn confluent_kafka_produces_to_several_partitions_and_reads_back() {
    let python = python();
    let probe = ["-c", "import confluent_kafka"];
    if !client_available(&python, &probe, "pip install confluent-kafka") {
        return;
    }
    let dir = test_dir("kafka-python");
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 3);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/confluent_roundtrip.py"
    );
    let addr = server.local_addr().to_string();
    run_to_success(Command::new(&python).args([script, &addr, "py-orders", "5000"]));
    assert_eq!(
        log.offsets("py-orders", 0).unwrap().1,
        floodgate::Offset(1667)
    );
    stop(log, server);
}

#[test]
fn the_java_client_produces_to_two_partitions_and_reads_back() {
    // The classpath of kafka-clients and slf4j-api (`.ci/run` fetches them from Maven Central).
    let classpath = std::env::var("FLOODGATE_KAFKA_CLIENTS_CP").unwrap_or_default();
    let probe = ["-cp", classpath.as_str(), "-version"];
    if classpath.is_empty() || !client_available("java", &probe, "FLOODGATE_KAFKA_CLIENTS_CP") {
        assert!(
            std::env::var_os("FLOODGATE_REQUIRE_KAFKA_CLIENTS").is_none(),
            "FLOODGATE_KAFKA_CLIENTS_CP is required and not set"
        );
        eprintln!("skipped: FLOODGATE_KAFKA_CLIENTS_CP names no kafka-clients jar");
        return;
    }
    let dir = test_dir("kafka-java");
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 2);
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/java/Roundtrip.java"
    );
    let addr = server.local_addr().to_string();
    let args = ["-cp", &classpath, program, &addr, "java-orders", "2000"];
    run_to_success(Command::new("java").args(args));
    assert_eq!(
        log.offsets("java-orders", 1).unwrap().1,
        floodgate::Offset(1000)
    );
    stop(log, server);
}
