//! Consumer groups: members share partitions and rebalance, committed offsets survive restarts
//! (and compaction), group-wide rate limits, protect_unconsumed with retention and the disk
//! cap.

mod common;

use floodgate::Offset;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{BACKENDS, small_config, test_dir};
use floodgate::{
    Error, GroupOffset, Log, OFFSET_METADATA_BYTES_MAX, RateLimit, Record, StartAt, TopicConfig,
};

/// Sends `per_partition` records to each of `partitions`; record (p, i) has value "p:i".
fn produce(log: &Log, topic: &str, partitions: u32, per_partition: u64) {
    let mut producer = log.producer();
    let mut acks = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let value = format!("{p}:{i}");
            let record = Record::new(value.as_bytes()).partition(p);
            acks.push(producer.send(topic, record).unwrap());
        }
    }
    for ack in acks {
        ack.wait().unwrap();
    }
}

fn poll_some(c: &mut floodgate::Consumer) -> Vec<(u32, Offset)> {
    c.poll(Duration::from_millis(50))
        .unwrap()
        .iter()
        .map(|r| {
            let want = format!("{}:{}", r.partition, r.record.offset);
            assert_eq!(r.record.value.as_deref(), Some(want.as_bytes()));
            (r.partition, r.record.offset)
        })
        .collect()
}

#[test]
fn members_share_partitions_and_rebalance_on_join_and_leave() {
    let dir = test_dir("group-rebalance");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(6)).unwrap();
    produce(&log, "t", 6, 20);
    let member = || log.consumer("t").group("g").build().unwrap();
    let mut a = member();
    assert_eq!(a.assignment(), vec![0, 1, 2, 3, 4, 5]);
    let mut b = member();
    assert!(
        b.assignment().is_empty(),
        "nothing is free until a gives it up"
    );
    poll_some(&mut a);
    assert_eq!(a.assignment().len(), 3, "a gave up half at its poll");
    poll_some(&mut b);
    let (sa, sb): (HashSet<u32>, HashSet<u32>) = (
        a.assignment().into_iter().collect(),
        b.assignment().into_iter().collect(),
    );
    assert_eq!(sb.len(), 3);
    assert!(sa.is_disjoint(&sb), "{sa:?} {sb:?}");
    // Each member delivers only its own partitions.
    for _ in 0..5 {
        for (p, _) in poll_some(&mut b) {
            assert!(sb.contains(&p));
        }
    }
    drop(b);
    poll_some(&mut a);
    assert_eq!(
        a.assignment(),
        vec![0, 1, 2, 3, 4, 5],
        "b's share came back"
    );
    // A member of another group gets everything; a group member may not pick partitions.
    assert_eq!(
        log.consumer("t")
            .group("h")
            .build()
            .unwrap()
            .assignment()
            .len(),
        6
    );
    assert!(matches!(
        log.consumer("t").group("g").partitions(vec![0]).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(a.set_rate_limit(RateLimit::default()), Ok(())));
    let mut solo = log.consumer("t").build().unwrap();
    assert!(matches!(solo.commit(), Err(Error::NoGroup(_))));
}

/// Threads join and leave while a group drains a topic with auto-commit: every record is
/// delivered at least once, and each redelivery starts at a committed offset.
#[test]
fn group_delivers_every_record_at_least_once_across_rebalances() {
    let dir = test_dir("group-alo");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(8)).unwrap();
    let per_partition = 400u64;
    produce(&log, "t", 8, per_partition);
    let seen: Vec<Vec<(u32, Offset)>> = std::thread::scope(|s| {
        let worker = |stay: Duration, delay: Duration| {
            let log = &log;
            s.spawn(move || {
                std::thread::sleep(delay);
                let mut c = log
                    .consumer("t")
                    .group("g")
                    .auto_commit(Duration::from_millis(20))
                    .max_rate(20_000.0)
                    .build()
                    .unwrap();
                let mut got = Vec::new();
                let until = Instant::now() + stay;
                while Instant::now() < until {
                    got.extend(poll_some(&mut c));
                }
                c.close().unwrap();
                got
            })
        };
        let handles = vec![
            worker(Duration::from_millis(900), Duration::ZERO),
            worker(Duration::from_millis(300), Duration::from_millis(50)),
            worker(Duration::from_millis(400), Duration::from_millis(250)),
        ];
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Whatever is left, a last member drains from the committed offsets.
    let mut last = log.consumer("t").group("g").build().unwrap();
    let mut all: Vec<(u32, Offset)> = seen.into_iter().flatten().collect();
    while log.group_lag("g", "t").unwrap().lag > 0 {
        all.extend(poll_some(&mut last));
        last.commit().unwrap();
    }
    let distinct: HashSet<(u32, Offset)> = all.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        8 * per_partition,
        "every record delivered"
    );
    let lag = log.group_lag("g", "t").unwrap();
    assert!(
        lag.partitions
            .iter()
            .all(|p| p.committed == Some(Offset(per_partition)))
    );
}

#[test]
fn committed_offsets_survive_reopen_and_compaction() {
    for backend in BACKENDS {
        let dir = test_dir("group-reopen");
        let config = || small_config(dir.path(), backend);
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("t", TopicConfig::new(2)).unwrap();
            produce(&log, "t", 2, 100);
            let mut c = log.consumer("t").group("g").build().unwrap();
            // Many commits of the same keys: garbage for compaction.
            for o in 1..=30 {
                c.commit_offsets(&[(0, Offset(o)), (1, Offset(2 * o))])
                    .unwrap();
            }
            assert_eq!(c.committed(0), Some(Offset(30)));
            let lag = log.group_lag("g", "t").unwrap();
            assert_eq!(lag.lag, 70 + 40);
            assert_eq!(lag.members, 1);
            assert!(log.list_topics().iter().all(|t| !t.name.starts_with("__")));
        }
        {
            let log = Log::open(config()).unwrap();
            let lag = log.group_lag("g", "t").unwrap();
            assert_eq!(lag.partitions[0].committed, Some(Offset(30)));
            assert_eq!(lag.partitions[1].committed, Some(Offset(60)));
            assert_eq!(lag.members, 0);
            let mut c = log
                .consumer("t")
                .group("g")
                .start_at(StartAt::Latest)
                .build()
                .unwrap();
            assert_eq!(
                (c.position(0).unwrap(), c.position(1).unwrap()),
                (Offset(30), Offset(60))
            );
            let first = poll_some(&mut c);
            assert!(
                first.contains(&(0, Offset(30))) || first.contains(&(1, Offset(60))),
                "{first:?}"
            );
            // A group with no commits starts where it is told.
            let d = log
                .consumer("t")
                .group("fresh")
                .start_at(StartAt::Latest)
                .build()
                .unwrap();
            assert_eq!(d.position(0).unwrap(), Offset(100));
            drop(d);
            log.delete_group("g").unwrap();
        }
        let log = Log::open(config()).unwrap();
        let lag = log.group_lag("g", "t").unwrap();
        assert_eq!(
            lag.partitions[0].committed, None,
            "deleted groups stay deleted"
        );
        assert!(matches!(
            log.create_topic("__consumer_offsets", TopicConfig::new(1)),
            Err(Error::ReservedTopicName(_))
        ));
    }
}

fn commit(topic: &str, partition: u32, offset: u64, metadata: &str) -> GroupOffset {
    GroupOffset {
        topic: topic.to_owned(),
        partition,
        offset: Offset(offset),
        metadata: metadata.to_owned(),
    }
}

/// Commits made from outside the process's consumers (as the Kafka front's members make them)
/// are the group's commits: a consumer of the group starts from them, their metadata strings
/// round-trip, they survive reopening and compaction, and a bad one commits nothing.
#[test]
fn offsets_committed_by_name_are_the_groups_and_keep_their_metadata() {
    for backend in BACKENDS {
        let dir = test_dir("group-commit-by-name");
        let config = || small_config(dir.path(), backend);
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("t", TopicConfig::new(3)).unwrap();
            log.create_topic("u", TopicConfig::new(1)).unwrap();
            produce(&log, "t", 3, 50);
            assert!(log.group_offsets("g").is_empty());
            for round in 1..=20 {
                let offsets = [
                    commit("t", 0, round, "ü-meta"),
                    commit("t", 2, 2 * round, ""),
                    commit("u", 0, 0, &"m".repeat(OFFSET_METADATA_BYTES_MAX)),
                ];
                log.commit_group_offsets("g", &offsets).unwrap();
            }
            log.commit_group_offsets("other", &[commit("t", 1, 7, "x")])
                .unwrap();
            // Refused whole: a partition that does not exist, metadata too long, a bad name.
            let refused = [
                (
                    vec![commit("t", 0, 1, ""), commit("t", 3, 1, "")],
                    "partition",
                ),
                (
                    vec![commit("t", 0, 1, ""), commit("nope", 0, 1, "")],
                    "topic",
                ),
                (
                    vec![commit(
                        "t",
                        0,
                        1,
                        &"m".repeat(OFFSET_METADATA_BYTES_MAX + 1),
                    )],
                    "metadata",
                ),
            ];
            for (offsets, what) in refused {
                let e = log.commit_group_offsets("g", &offsets).unwrap_err();
                assert!(
                    matches!(
                        (&e, what),
                        (Error::UnknownPartition { .. }, "partition")
                            | (Error::UnknownTopic(_), "topic")
                            | (Error::OffsetMetadataTooLarge { .. }, "metadata")
                    ),
                    "{what}: {e}"
                );
            }
            assert!(matches!(
                log.commit_group_offsets("", &[commit("t", 0, 1, "")]),
                Err(Error::InvalidGroupName { .. })
            ));
            let c = log.consumer("t").group("g").build().unwrap();
            assert_eq!(c.position(0).unwrap(), Offset(20));
            assert_eq!(c.position(2).unwrap(), Offset(40));
            assert_eq!(c.committed(0), Some(Offset(20)));
            assert_eq!(log.list_groups(), vec!["g".to_owned(), "other".to_owned()]);
        }
        let log = Log::open(config()).unwrap();
        let want = vec![
            commit("t", 0, 20, "ü-meta"),
            commit("t", 2, 40, ""),
            commit("u", 0, 0, &"m".repeat(OFFSET_METADATA_BYTES_MAX)),
        ];
        assert_eq!(log.group_offsets("g"), want);
        assert_eq!(log.group_offsets("other"), vec![commit("t", 1, 7, "x")]);
        assert_eq!(log.group_lag("g", "t").unwrap().lag, 30 + 50 + 10);
        log.delete_group("other").unwrap();
        assert_eq!(log.list_groups(), vec!["g".to_owned()]);
        assert!(log.group_offsets("other").is_empty());
    }
}

/// Two members with a group-wide limit of 2,000 msgs/s deliver 2,000/s together.
#[test]
fn group_rate_limit_is_shared_by_members() {
    let dir = test_dir("group-rate");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    produce(&log, "t", 4, 2000);
    let limit = RateLimit {
        msgs_per_s: Some(2000.0),
        bytes_per_s: None,
    };
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let log = &log;
                s.spawn(move || {
                    let mut c = log
                        .consumer("t")
                        .group("g")
                        .group_rate_limit(limit)
                        .build()
                        .unwrap();
                    // Let both join and settle before counting.
                    let settle = Instant::now() + Duration::from_millis(300);
                    while Instant::now() < settle {
                        poll_some(&mut c);
                    }
                    let mut n = 0;
                    let until = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < until {
                        n += poll_some(&mut c).len();
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = counts.iter().sum();
    // The limit is shared: together never more than 2,000/s plus the burst (unshared, two
    // members would deliver 4,000). The lower bound only asks for progress: on a busy machine a
    // member held off the CPU for longer than the burst loses those tokens.
    assert!((800..=2300).contains(&total), "{counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    let lag = log.group_lag("g", "t").unwrap();
    assert_eq!(lag.rate_limit, Some(limit));
    assert!(lag.time_to_drain.is_some());
}

/// With protect_unconsumed, retention keeps what a group has not committed; with a disk cap,
/// producers then get LogFull until the group commits.
#[test]
fn protect_unconsumed_holds_retention_and_the_disk_cap_pushes_back() {
    let dir = test_dir("group-protect");
    let segment = 256u64 << 10;
    let log = Log::open(
        small_config(dir.path(), BACKENDS[0])
            .retention_bytes(2 * segment)
            .protect_unconsumed(true)
            .disk_bytes_max(6 * segment),
    )
    .unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut c = log.consumer("t").group("g").build().unwrap();
    let value = vec![7u8; 1000];
    let mut producer = log.producer();
    let mut sent = 0u64;
    let full = loop {
        match producer.try_send("t", Record::new(&value)) {
            Ok(_) => sent += 1,
            Err(Error::Full) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break e,
        }
        assert!(sent < 10_000, "the cap never pushed back");
    };
    assert!(matches!(full, Error::LogFull { .. }), "{full}");
    assert_eq!(
        log.offsets("t", 0).unwrap().0,
        Offset(0),
        "nothing unconsumed was deleted"
    );
    // The group consumes and commits: retention frees space and producing resumes.
    let mut consumed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        consumed += c.poll(Duration::from_millis(10)).unwrap().len() as u64;
        c.commit().unwrap();
        if let Ok(ack) = producer.try_send("t", Record::new(&value)) {
            break ack;
        }
        assert!(Instant::now() < deadline, "producing never resumed");
    };
    resumed.wait().unwrap();
    assert!(consumed > 0);
    let (earliest, _) = log.offsets("t", 0).unwrap();
    assert!(earliest > Offset(0), "retention deleted consumed segments");
    assert!(
        earliest <= c.committed(0).unwrap(),
        "and nothing unconsumed"
    );
}

/// Any group id a Kafka client can send is a group name (spaces, `:`, `/`, `=`, non-ASCII
/// letters, up to 32,767 bytes), and its commits survive a reopen; an empty or longer name is
/// refused with a clear error before anything is committed under it (a name of 64 KiB or
/// more used to write a key whose commits were lost on reopen). A commit is written whatever
/// the log's `record_bytes_max` (16 KiB here, under the longest name's key).
#[test]
fn group_names_are_validated_and_any_kafka_group_id_survives_reopen() {
    let dir = test_dir("group-names");
    let longest = "g".repeat(floodgate::GROUP_NAME_BYTES_MAX);
    let odd = [
        "a b",
        "grüße",
        "x/y/../z",
        "app:orders=1",
        "..",
        longest.as_str(),
    ];
    {
        let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, "t", 1, 10);
        let huge = "g".repeat(64 << 10);
        for bad in ["", &"g".repeat(floodgate::GROUP_NAME_BYTES_MAX + 1), &huge] {
            let e = log.consumer("t").group(bad).build().err().expect(bad);
            assert!(
                matches!(&e, Error::InvalidGroupName { name } if name == bad),
                "{e}"
            );
            assert!(e.to_string().contains("1 to 32767 bytes"), "{e}");
            let e = log.delete_group(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidGroupName { .. }), "{e}");
            let e = log.group_lag(bad, "t").unwrap_err();
            assert!(matches!(e, Error::InvalidGroupName { .. }), "{e}");
        }
        for name in odd {
            let mut c = log.consumer("t").group(name).build().unwrap();
            let mut got = 0;
            while got < 10 {
                got += c.poll(Duration::from_millis(50)).unwrap().len();
            }
            c.commit().unwrap();
        }
    }
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    for name in odd {
        let lag = log.group_lag(name, "t").unwrap();
        assert_eq!(lag.partitions[0].committed, Some(Offset(10)), "{name:.20}");
        assert_eq!(lag.lag, 0);
    }
    let names = log.list_groups();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

/// Reopening a log whose retention would delete what a group has not committed deletes
/// nothing of it: retention waits until the committed offsets are loaded and the protection
/// floors set (it used to run first, at every open). The group's commits survive too, so a
/// member resumes where it committed.
#[test]
fn reopening_never_deletes_what_a_group_has_not_committed() {
    let dir = test_dir("group-protect-reopen");
    let segment = 256u64 << 10;
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .retention_bytes(2 * segment)
            .protect_unconsumed(true)
    };
    let committed = {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(2)).unwrap();
        let mut c = log.consumer("t").group("g").build().unwrap();
        // Ten segments of records, of which the group commits a few hundred per partition
        // (many commits, so the offsets partition takes a while to load).
        let mut producer = log.producer();
        let value = vec![5u8; 1000];
        let mut acks = Vec::new();
        for i in 0..2600u32 {
            acks.push(
                producer
                    .send("t", Record::new(&value).partition(i % 2))
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.wait().unwrap();
        }
        let mut got = 0;
        while got < 600 {
            got += c.poll(Duration::from_millis(20)).unwrap().len();
            c.commit().unwrap();
        }
        [c.committed(0).unwrap(), c.committed(1).unwrap()]
    };
    for round in 0..5 {
        let log = Log::open(config()).unwrap();
        // Give a premature retention pass time to run.
        std::thread::sleep(Duration::from_millis(100));
        for p in 0..2u32 {
            let (earliest, next) = log.offsets("t", p).unwrap();
            assert!(
                earliest <= committed[p as usize],
                "round {round}, partition {p}: records from {earliest} kept, the group \
                 committed {} (next {next})",
                committed[p as usize]
            );
        }
        let lag = log.group_lag("g", "t").unwrap();
        for p in &lag.partitions {
            assert_eq!(
                p.committed,
                Some(committed[p.partition as usize]),
                "round {round}: the group's commit survives"
            );
        }
        log.close().unwrap();
    }
}

/// One flipped bit in an old `__consumer_offsets` batch (a sealed segment's, not scanned at
/// open) costs that commit only: the log opens, the group falls back to its commit before,
/// and the report names the batch. It used to make the whole log unopenable, even with repair.
#[test]
fn a_damaged_commit_costs_only_that_commit() {
    let dir = test_dir("groups-damaged-commit");
    let config = || small_config(dir.path(), BACKENDS[0]);
    let mut committed = Vec::new();
    {
        let log = Log::open(config()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let value = vec![3u8; 1000];
        let mut c = log.consumer("t").group("g").build().unwrap();
        let mut consumed = 0;
        for target in [100, 300] {
            while consumed < target {
                producer
                    .send("t", Record::new(&value))
                    .unwrap()
                    .wait()
                    .unwrap();
                consumed += c.poll(Duration::from_millis(100)).unwrap().len();
            }
            c.commit().unwrap();
            committed.push(consumed as u64);
        }
        // Enough records after the commits that their segment is sealed.
        for _ in 0..600 {
            producer
                .send("t", Record::new(&value))
                .unwrap()
                .wait()
                .unwrap();
        }
        drop(c);
    }
    let meta = floodgate::inspect::Meta::load(dir.path()).unwrap().unwrap();
    let offsets_topic = meta
        .topics
        .iter()
        .find(|t| t.name == "__consumer_offsets")
        .unwrap()
        .id;
    let segs = common::segments(dir.path(), 0);
    let (seg, frame) = segs
        .iter()
        .flat_map(|seg| {
            let (frames, _) =
                floodgate::inspect::scan_segment_file(seg, 64 << 10, Default::default()).unwrap();
            frames
                .into_iter()
                .filter(|f| f.topic_id == offsets_topic)
                .map(move |f| (seg.clone(), f.entry))
        })
        .last()
        .unwrap();
    assert_ne!(&seg, segs.last().unwrap(), "the commit's segment is sealed");
    let mut image = std::fs::read(&seg).unwrap();
    image[(frame.pos + u64::from(frame.frame_bytes) - 3) as usize] ^= 0x01;
    std::fs::write(&seg, &image).unwrap();

    let log = Log::open(config()).unwrap();
    let damaged = &log.recovery_report().commits_damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!((&damaged[0].path, damaged[0].pos), (&seg, frame.pos));
    let lag = log.group_lag("g", "t").unwrap();
    let (first, second) = (committed[0], committed[1]);
    assert_eq!(
        lag.partitions[0].committed,
        Some(Offset(first)),
        "second was {second}"
    );
    drop(log);
    // The fallback is written again: the next open finds nothing damaged that it needs.
    let log = Log::open(config()).unwrap();
    assert_eq!(
        log.group_lag("g", "t").unwrap().partitions[0].committed,
        Some(Offset(first))
    );
}

/// Auto-commits are written in the background while the member polls: the group's lag goes to
/// zero without a commit call, and a member closing after them commits nothing older.
#[test]
fn auto_commits_land_while_the_member_polls() {
    let dir = test_dir("group-auto-commit");
    let log = Log::open(small_config(dir.path(), BACKENDS[0])).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, "t", 2, 50);
    let mut c = log
        .consumer("t")
        .group("g")
        .auto_commit(Duration::from_millis(20))
        .build()
        .unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < 100 {
        got += poll_some(&mut c).len();
        assert!(Instant::now() < deadline, "{got} records");
    }
    while log.group_lag("g", "t").unwrap().lag > 0 {
        assert!(poll_some(&mut c).is_empty());
        assert!(Instant::now() < deadline, "the auto-commit never landed");
    }
    assert_eq!(c.committed(0), Some(Offset(50)));
    c.close().unwrap();
    assert_eq!(log.group_lag("g", "t").unwrap().lag, 0);
}

/// Members of a group draining a backlog of many partitions each scan the whole log for their
/// share; one held up now and then (here: sleeping between polls) must not fall out of the
/// others' read-ahead and read the log again on its own: together they read it about once.
/// Every record is delivered exactly once.
#[test]
fn members_of_a_group_read_a_backlog_about_once_between_them() {
    let dir = test_dir("group-shared-scan");
    let config = || {
        small_config(dir.path(), BACKENDS[0])
            .segment_bytes(16 << 20)
            .commit_bytes_max(1 << 20)
            .tail_cache_bytes(32 << 20)
    };
    let (partitions, per) = (300u32, 1500u64);
    let written = common::produce_numbered(&Log::open(config()).unwrap(), "t", partitions, per);
    let log = Log::open(config()).unwrap();
    let want = u64::from(partitions) * per;
    let members: Vec<_> = (0..3)
        .map(|_| {
            (log.consumer("t").group("g"))
                .auto_commit(Duration::from_secs(60))
                .build()
                .unwrap()
        })
        .collect();
    let got = std::sync::atomic::AtomicU64::new(0);
    let seen: Vec<Vec<(u32, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (members.into_iter().enumerate())
            .map(|(m, mut c)| {
                let got = &got;
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut polls = 0u64;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while got.load(std::sync::atomic::Ordering::Relaxed) < want {
                        assert!(
                            Instant::now() < deadline,
                            "{seen:?} records",
                            seen = seen.len()
                        );
                        let records = c.poll(Duration::from_millis(20)).unwrap();
                        got.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        seen.extend(records.iter().map(|r| (r.partition, r.record.offset.0)));
                        polls += 1;
                        // The first member is held up every few polls, longer than the others
                        // take to read past the read cache.
                        if m == 0 && polls.is_multiple_of(4) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashSet<(u32, u64)> = seen.iter().flatten().copied().collect();
    assert_eq!(
        seen.iter().map(Vec::len).sum::<usize>() as u64,
        want,
        "none twice"
    );
    assert_eq!(all.len() as u64, want, "every record");
    assert!(
        seen.iter().all(|s| !s.is_empty()),
        "every member took a share"
    );
    let read = log.stats()[0].read_disk_bytes as f64 / written as f64;
    assert!(read < 1.3, "the members read the log {read:.2} times");
}

/// Partitions added to a topic: producers write to them, the topic's group shares them out
/// among its members, they survive a reopen, and a count not above the topic's (or the
/// offsets topic's, or an unknown topic's) is refused with nothing changed.
#[test]
fn partitions_added_to_a_topic_are_shared_by_its_group_and_kept() {
    let dir = test_dir("group-grow");
    let config = small_config(dir.path(), BACKENDS[0]);
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, "t", 2, 5);
    let member = || log.consumer("t").group("g").build().unwrap();
    let (mut a, mut b) = (member(), member());
    let mut seen: HashSet<(u32, Offset)> = HashSet::new();
    for _ in 0..3 {
        seen.extend(poll_some(&mut a));
        seen.extend(poll_some(&mut b));
    }
    assert_eq!(a.assignment().len() + b.assignment().len(), 2);
    let mut producer = log.producer();
    assert!(matches!(
        log.create_partitions("t", 2),
        Err(Error::PartitionCountNotIncreased {
            partitions: 2,
            asked: 2,
            ..
        })
    ));
    assert!(matches!(
        log.create_partitions("missing", 3),
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        log.create_partitions("__consumer_offsets", 8),
        Err(Error::ReservedTopicName(_))
    ));
    log.create_partitions("t", 6).unwrap();
    assert_eq!(
        log.list_topics()
            .iter()
            .find(|t| t.name == "t")
            .unwrap()
            .partitions,
        6
    );
    // Records to the new partitions, from a producer made before the change.
    let mut acks = Vec::new();
    for i in 0..5 {
        for p in 2..6 {
            let value = format!("{p}:{i}");
            let record = Record::new(value.as_bytes()).partition(p);
            acks.push(producer.send("t", record).unwrap());
        }
    }
    for ack in acks {
        ack.wait().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 6 * 5 {
        assert!(Instant::now() < deadline, "{} records seen", seen.len());
        seen.extend(poll_some(&mut a));
        seen.extend(poll_some(&mut b));
    }
    let (sa, sb): (HashSet<u32>, HashSet<u32>) = (
        a.assignment().into_iter().collect(),
        b.assignment().into_iter().collect(),
    );
    assert_eq!((sa.len(), sb.len()), (3, 3), "{sa:?} {sb:?}");
    assert!(sa.is_disjoint(&sb));
    drop((a, b));
    log.close().unwrap();
    let log = Log::open(config).unwrap();
    for p in 2..6 {
        assert_eq!(log.offsets("t", p).unwrap().1, Offset(5), "partition {p}");
    }
    assert!(log.offsets("t", 6).is_err());
    log.close().unwrap();
}
