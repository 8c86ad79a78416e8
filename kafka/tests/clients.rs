//! Real Kafka clients against the server: kcat (librdkafka; Debian's is 2.0.2, the old
//! librdkafka the server must satisfy) produces and consumes through it, and what it wrote is
//! there after a restart; confluent-kafka for Python (the current librdkafka) produces keyed
//! records with headers to several partitions and reads them back, and its admin client
//! manages topics; the Java client (kafka-clients) produces and consumes (`tests/clients/`).
//! Consumer groups of each: kcat's balanced consumer (`-G`), confluent-kafka members that
//! join, leave and crash, and the Java client's group with synchronous commits.
//! `.ci/run` installs both and sets FLOODGATE_REQUIRE_KAFKA_CLIENTS, which makes a missing
//! client a failure; elsewhere these tests say they skipped. FLOODGATE_PYTHON names the Python
//! that has confluent-kafka (default `python3`).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{serve, stop, test_dir};
use floodgate_kafka::ServerConfig;
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

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
        // Sent uncompressed to a topic with a codec of its own: stored in that codec, and
        // librdkafka decompresses what floodgate compressed.
        for (codec, bits) in [
            (floodgate::Codec::Gzip, 1),
            (floodgate::Codec::Snappy, 2),
            (floodgate::Codec::Lz4, 3),
            (floodgate::Codec::Zstd, 4),
        ] {
            let topic = format!("r-{}", codec.name());
            let config = floodgate::TopicConfig::new(1).compression(codec);
            log.create_topic(&topic, config).unwrap();
            kcat(
                addr,
                &["-P", "-t", &topic, "-z", "none", "-X", "linger.ms=100"],
                &lines,
            );
            let args = ["-C", "-t", &topic, "-e", "-q"];
            assert_eq!(kcat(addr, &args, ""), lines, "{codec:?}");
            let (batches, _) = log
                .read_batches(&topic, 0, floodgate::Offset(0), 64 << 20, false)
                .unwrap();
            assert!(
                batches.iter().all(|b| b[22] & 0x07 == bits),
                "{codec:?}: every batch recompressed"
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

/// kcat's balanced consumer (`-G`, librdkafka 2.0.2): two members share three partitions and
/// read what is produced once both are in the group, between them; the group's commits make
/// the next run read only what came after.
#[test]
fn kcat_group_members_share_partitions_and_resume_from_commits() {
    if !kcat_available() {
        return;
    }
    let dir = test_dir("kafka-kcat-group");
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 3);
    let addr = server.local_addr();
    log.create_topic("g-orders", floodgate::TopicConfig::new(3))
        .unwrap();
    // Members that run until stopped, committing often. The records are produced only once
    // both hold partitions: a kcat can take seconds to start beside the other clients' tests
    // on a loaded 2-core machine, and one that joined after the other had read everything
    // read nothing.
    let start_member = || {
        let args = [
            "-b",
            &addr.to_string(),
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "auto.commit.interval.ms=100",
            "-q",
            "g-orders",
        ]
        .map(str::to_owned);
        Command::new("kcat")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kcat starts")
    };
    let members = [start_member(), start_member()];
    let mut client = common::Client::connect(addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut r = DescribeGroupsRequest::default();
        r.groups = vec![GroupId(StrBytes::from_static_str("kcat-group"))];
        let response: DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, 5, &r);
        let group = &response.groups[0];
        let assigned = group
            .members
            .iter()
            .filter(|m| !m.member_assignment.is_empty());
        if group.group_state.as_str() == "Stable" && assigned.count() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the members did not both join: {group:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A thousand records into each partition: keyless records all went to one partition when
    // produced within librdkafka's sticky-partitioning window, and one member read nothing.
    for p in 0..3 {
        let input: String = (p * 1000..(p + 1) * 1000)
            .map(|i| format!("{i}\n"))
            .collect();
        let partition = p.to_string();
        kcat(
            addr,
            &[
                "-P",
                "-t",
                "g-orders",
                "-p",
                &partition,
                "-X",
                "linger.ms=5",
            ],
            &input,
        );
    }
    let committed = || -> u64 {
        log.group_offsets("kcat-group")
            .iter()
            .map(|c| c.offset.0)
            .sum()
    };
    while committed() < 3000 {
        assert!(
            std::time::Instant::now() < deadline,
            "committed {}",
            committed()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Stopped as a user stops it (Ctrl-C): it leaves the group and prints what it read.
    let outputs = members.map(|member| {
        let pid = member.id().to_string();
        let stopped = Command::new("kill").args(["-INT", &pid]).status();
        assert!(stopped.is_ok_and(|s| s.success()), "kill -INT {pid}");
        let out = member.wait_with_output().expect("kcat ends");
        String::from_utf8(out.stdout).expect("utf-8 output")
    });
    let mut all: Vec<u32> = (outputs.iter().flat_map(|o| o.lines()))
        .map(|l| l.parse().unwrap())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..3000).collect::<Vec<u32>>());
    assert!(
        outputs.iter().all(|o| !o.is_empty()),
        "both members read: {} and {} bytes",
        outputs[0].len(),
        outputs[1].len()
    );
    assert_eq!(committed(), 3000);
    kcat(addr, &["-P", "-t", "g-orders"], "after\n");
    let again = kcat(
        addr,
        &[
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-q",
            "g-orders",
        ],
        "",
    );
    assert!(
        again == "after\n",
        "only what came after the commits: {} bytes",
        again.len()
    );
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

/// Runs `confluent_groups.py` with group protocol `protocol` against a server whose topics
/// have six partitions (`tweak` sets its group timings), then checks that group `group`
/// committed the end of every partition.
fn confluent_groups(protocol: &str, group: &str, tweak: impl FnOnce(&mut ServerConfig)) {
    let python = python();
    let probe = ["-c", "import confluent_kafka"];
    if !client_available(&python, &probe, "pip install confluent-kafka") {
        return;
    }
    let dir = test_dir(&format!("kafka-python-groups-{protocol}"));
    let (log, server) = serve(dir.path(), |c| {
        c.default_partitions = 6;
        tweak(c);
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/confluent_groups.py"
    );
    let addr = server.local_addr().to_string();
    let topic = format!("py-{protocol}-orders");
    run_to_success(Command::new(&python).args([script, &addr, &topic, "6", "30000", protocol]));
    let committed = log.group_offsets(group);
    assert_eq!(committed.len(), 6);
    assert!(
        committed
            .iter()
            .all(|c| c.offset == floodgate::Offset(5000)),
        "{committed:?}"
    );
    stop(log, server);
}

/// A group of confluent-kafka consumers: two, then three members share six partitions; one
/// leaves and one in another process is killed, and the others take their partitions; every
/// record is delivered at least once and the group's commits end at the partitions' ends.
#[test]
fn confluent_kafka_groups_rebalance_as_members_come_leave_and_crash() {
    confluent_groups("classic", "py-group", |c| {
        c.groups.initial_rebalance_delay = std::time::Duration::from_millis(300);
        c.groups.min_session = std::time::Duration::from_secs(1);
    });
}

/// The same with the consumer group protocol of KIP-848 (`group.protocol=consumer`): the
/// server assigns the partitions, members take them at their heartbeats (every second), and a
/// killed member is removed when the server's session timeout runs out.
#[test]
fn confluent_kafka_consumer_protocol_groups_rebalance_as_members_come_leave_and_crash() {
    // The script's SESSION_MS.
    confluent_groups("consumer", "py-group-consumer", |c| {
        c.groups.consumer_session = std::time::Duration::from_secs(2);
    });
}

/// The classpath of kafka-clients and slf4j-api (`.ci/run` fetches them from Maven Central), if
/// the Java client can run here.
fn java_classpath() -> Option<String> {
    let classpath = std::env::var("FLOODGATE_KAFKA_CLIENTS_CP").unwrap_or_default();
    let probe = ["-cp", classpath.as_str(), "-version"];
    if classpath.is_empty() || !client_available("java", &probe, "FLOODGATE_KAFKA_CLIENTS_CP") {
        assert!(
            std::env::var_os("FLOODGATE_REQUIRE_KAFKA_CLIENTS").is_none(),
            "FLOODGATE_KAFKA_CLIENTS_CP is required and not set"
        );
        eprintln!("skipped: FLOODGATE_KAFKA_CLIENTS_CP names no kafka-clients jar");
        return None;
    }
    Some(classpath)
}

#[test]
fn the_java_client_produces_to_two_partitions_and_reads_back() {
    let Some(classpath) = java_classpath() else {
        return;
    };
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

/// Runs `Groups.java` with group protocol `protocol` against a server whose topics have four
/// partitions, then checks that group `group` committed the end of every partition.
fn java_groups(protocol: &str, group: &str, tweak: impl FnOnce(&mut ServerConfig)) {
    let Some(classpath) = java_classpath() else {
        return;
    };
    let dir = test_dir(&format!("kafka-java-groups-{protocol}"));
    let (log, server) = serve(dir.path(), |c| {
        c.default_partitions = 4;
        tweak(c);
    });
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/java/Groups.java"
    );
    let addr = server.local_addr().to_string();
    let topic = format!("java-{protocol}-orders");
    let args = [
        "-cp", &classpath, program, &addr, &topic, "4", "4000", protocol,
    ];
    run_to_success(Command::new("java").args(args));
    let committed = log.group_offsets(group);
    assert_eq!(committed.len(), 4, "{committed:?}");
    assert!(
        committed
            .iter()
            .all(|c| c.offset == floodgate::Offset(1000))
    );
    stop(log, server);
}

/// The Java client's consumer group: two members share four partitions, commit with metadata,
/// and the one left takes the other's partitions when it closes.
#[test]
fn the_java_clients_consumer_group_shares_partitions_and_commits() {
    java_groups("classic", "java-group", |c| {
        c.groups.initial_rebalance_delay = std::time::Duration::from_millis(500);
    });
}

/// The same with the consumer protocol of KIP-848 (`group.protocol=consumer`, the Java
/// client's new consumer): the server assigns, and the member left takes the other's
/// partitions at its next heartbeat.
#[test]
fn the_java_clients_consumer_protocol_group_shares_partitions_and_commits() {
    java_groups("consumer", "java-group-consumer", |_| {});
}

/// librdkafka's own test suite (Debian's librdkafka 2.0.2 source, built by
/// `.ci/librdkafka-tests`, whose output FLOODGATE_LIBRDKAFKA_TESTS names) against the server:
/// the tests in `tests/clients/librdkafka-tests.txt`, two at a time, as `test-runner` runs
/// them against a broker (`-L`: those that need one; `-K`: not its own known issues; `-Q`:
/// quick mode). Run on its own by `.ci/run` (`-- --ignored`): its clients would share the
/// machine's two cores with the other tests' and miss their timeouts.
#[test]
#[ignore = "run alone: .ci/run runs it with FLOODGATE_LIBRDKAFKA_TESTS set"]
fn librdkafkas_own_test_suite_passes() {
    let Some(tests) = std::env::var_os("FLOODGATE_LIBRDKAFKA_TESTS") else {
        assert!(
            std::env::var_os("FLOODGATE_REQUIRE_KAFKA_CLIENTS").is_none(),
            "FLOODGATE_LIBRDKAFKA_TESTS is required (FLOODGATE_REQUIRE_KAFKA_CLIENTS)"
        );
        eprintln!("skipped: FLOODGATE_LIBRDKAFKA_TESTS is not set (.ci/librdkafka-tests)");
        return;
    };
    let tests = std::path::PathBuf::from(tests);
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/librdkafka-tests.txt"
    ))
    .unwrap();
    let selected: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(selected.len() > 50, "{} tests listed", selected.len());
    let dir = test_dir("kafka-librdkafka-suite");
    // librdkafka's test clusters have 4 partitions a topic; its tests produce to partition 1+
    // of topics they let auto-create.
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 4);
    let conf = dir.path().join("test.conf");
    std::fs::write(
        &conf,
        format!(
            "metadata.broker.list={}\ntest.timeout.multiplier=2\n",
            server.local_addr()
        ),
    )
    .unwrap();
    let output = dir.path().join("test-runner.log");
    let out_file = std::fs::File::create(&output).unwrap();
    let mut child = Command::new(tests.join("test-runner"))
        .args(["-Q", "-p2", "-L", "-K"])
        .current_dir(&tests)
        .env("TESTS", selected.join(","))
        .env("RDKAFKA_TEST_CONF", &conf)
        .env("TEST_KAFKA_VERSION", "4.1.0")
        .env("LD_LIBRARY_PATH", "../src:../src-cpp")
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("test-runner starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let printed = std::fs::read_to_string(&output).unwrap_or_default();
    let lines: Vec<&str> = printed.lines().collect();
    let failed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("FAILED") || l.contains("TIMED OUT"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(80)..];
    assert!(
        status.success() && printed.contains("ALL TESTS PASSED"),
        "test-runner: {status}\n{}\n...\n{}",
        failed.join("\n"),
        tail.join("\n")
    );
    stop(log, server);
}
