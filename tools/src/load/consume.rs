//! Consuming the load topic: the consumer loop, group members, commits and their journal,
//! and `load consume`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodgate::{Config, Log};
use serde_json::json;

use super::*;
use crate::error::CliResult;
use crate::outln;

/// What a consumer loop saw.
#[derive(Default)]
pub(crate) struct ConsumeStats {
    pub(crate) consumed: u64,
    pub(crate) bytes: u64,
    /// What was found checking each record, with `verify`.
    pub(crate) check: ConsumedCheck,
    /// Records delivered in each second since the consumer started.
    pub(crate) per_second: Vec<u64>,
    /// Whole seconds it ran (those of `per_second` that measure a full second).
    pub(crate) whole_seconds: usize,
    /// CPU time the consumer threads spent (their own, not the library's helpers').
    pub(crate) cpu: Duration,
}

/// How a scenario's consumers run.
pub(crate) struct ConsumeOptions<'a> {
    /// Records per second (0: unlimited).
    pub(crate) rate: f64,
    /// Consume as a member of this group: the rate is the group's, positions are committed
    /// every `commit_interval` (and when partitions move or the consumer stops).
    pub(crate) group: Option<&'a str>,
    pub(crate) commit_interval: Duration,
    /// After each commit, append `partition offset` lines of the committed positions here.
    pub(crate) commit_journal: Option<&'a Path>,
}

/// Consumes the load topic with `log.consumer` as `options` say, until `stop` says so; counts
/// into `consumed` as it goes. With `verify`, checks every payload.
pub(crate) fn consume_loop(
    log: &Log,
    options: &ConsumeOptions<'_>,
    start: Instant,
    verify: bool,
    expected: usize,
    consumed: &AtomicU64,
    stop: &dyn Fn(&floodgate::Consumer) -> bool,
) -> CliResult<ConsumeStats> {
    let mut builder = log.consumer(TOPIC);
    let limit = floodgate::RateLimit {
        msgs_per_s: (options.rate > 0.0).then_some(options.rate),
        bytes_per_s: None,
    };
    builder = match options.group {
        Some(group) if options.rate > 0.0 => builder
            .group(group)
            .group_rate_limit(limit)
            .fetch_bytes(floodgate::consumer::FETCH_BYTES_RATE_LIMITED),
        Some(group) => builder.group(group),
        None if options.rate > 0.0 => builder.max_rate(options.rate),
        None => builder,
    };
    if options.group.is_some() {
        builder = builder.auto_commit(options.commit_interval);
    }
    // The set is sized up front: growing a set of millions of entries stalls the consumer for
    // tens of milliseconds, long enough to miss its rate.
    let mut stats = ConsumeStats {
        check: ConsumedCheck::new(if verify { expected } else { 0 }),
        ..ConsumeStats::default()
    };
    let mut consumer = builder.build()?;
    // This member's seconds count from when its rate limit started (at its build), not from
    // the run's start: building it took 2-10 ms, which a limiter starting empty never makes
    // up, and the first second fell 0.15-1.03% short for it.
    let start = start.max(Instant::now());
    let mut journal = match options.commit_journal {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut next_commit = Instant::now() + options.commit_interval;
    let cpu_start = thread_cpu();
    while !stop(&consumer) {
        let records = consumer
            .poll(Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
        let second = start.elapsed().as_secs() as usize;
        if stats.per_second.len() <= second {
            stats.per_second.resize(second + 1, 0);
        }
        stats.per_second[second] += records.len() as u64;
        consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
        for r in records {
            stats.consumed += 1;
            let value = r.record.value.unwrap_or_default();
            stats.bytes += value.len() as u64;
            if !verify {
                continue;
            }
            stats.check.check(r.partition, &value);
        }
        // Auto-commit commits in the background; a journal needs to know what was committed,
        // so with one the loop commits itself. Both at once wrote every partition's offset
        // twice a second, and the paced consumer waited for one of them.
        if journal.is_some() && Instant::now() >= next_commit {
            next_commit = Instant::now() + options.commit_interval;
            commit_and_journal(&mut consumer, journal.as_mut())?;
        }
    }
    stats.whole_seconds = start.elapsed().as_secs() as usize;
    if options.group.is_some() {
        commit_and_journal(&mut consumer, journal.as_mut())?;
    }
    stats.cpu = thread_cpu() - cpu_start;
    Ok(stats)
}

/// Runs `members` consumers (group members when more than one) and merges what they saw: a
/// record two members both delivered counts as duplicated.
#[expect(
    clippy::too_many_arguments,
    reason = "the run's settings, its start, its verification and its stop condition"
)]
pub(crate) fn consume_members(
    log: &Log,
    options: &ConsumeOptions<'_>,
    members: u32,
    start: Instant,
    verify: bool,
    expected: usize,
    consumed: &AtomicU64,
    stop: &(dyn Fn(&floodgate::Consumer) -> bool + Sync),
) -> CliResult<ConsumeStats> {
    if members > 1 && options.group.is_none() {
        return Err("more than one consumer needs --group (members share the partitions)".into());
    }
    let results: Vec<CliResult<ConsumeStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..members.max(1))
            .map(|_| {
                s.spawn(move || consume_loop(log, options, start, verify, expected, consumed, stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("consumer thread"))
            .collect()
    });
    let mut all = ConsumeStats {
        whole_seconds: usize::MAX,
        ..ConsumeStats::default()
    };
    for r in results {
        let r = r?;
        all.whole_seconds = all.whole_seconds.min(r.whole_seconds);
        all.consumed += r.consumed;
        all.bytes += r.bytes;
        all.check.corrupt += r.check.corrupt;
        all.check.duplicated += r.check.duplicated;
        all.check.out_of_order += r.check.out_of_order;
        all.cpu += r.cpu;
        if all.per_second.len() < r.per_second.len() {
            all.per_second.resize(r.per_second.len(), 0);
        }
        for (a, b) in all.per_second.iter_mut().zip(&r.per_second) {
            *a += b;
        }
        let before = all.check.seen.len() + r.check.seen.len();
        all.check.seen.extend(r.check.seen);
        all.check.duplicated += (before - all.check.seen.len()) as u64;
    }
    Ok(all)
}

/// Commits the consumer's positions; then journals them (`partition offset` lines).
pub(crate) fn commit_and_journal(
    consumer: &mut floodgate::Consumer,
    journal: Option<&mut std::fs::File>,
) -> CliResult {
    consumer.commit().map_err(|e| format!("commit: {e}"))?;
    if let Some(journal) = journal {
        use std::io::Write;
        let mut lines = String::new();
        for p in consumer.assignment() {
            let position = consumer.position(p)?;
            lines.push_str(&format!("{p} {position}\n"));
        }
        journal
            .write_all(lines.as_bytes())
            .map_err(|e| format!("commit journal: {e}"))?;
    }
    Ok(())
}

/// How long the peak scenario's consumers run past its producers.
pub(crate) const CONSUMER_OVERRUN: Duration = Duration::from_millis(100);

/// The worst deviation from `rate` over the whole seconds in `per_second` (the last, partial
/// one excluded), in percent.
pub(crate) fn rate_error_pct(per_second: &[u64], whole_seconds: usize, rate: f64) -> f64 {
    per_second
        .iter()
        .take(whole_seconds)
        .map(|&n| (n as f64 - rate).abs() / rate * 100.0)
        .fold(0.0, f64::max)
}

pub(crate) fn consume(args: ConsumeArgs) -> CliResult {
    if let Some(bootstrap) = args.bootstrap.clone() {
        return super::wire_consume::wire_consume(args, &bootstrap);
    }
    let dir = args
        .dir
        .clone()
        .expect("clap asks for --dir without --bootstrap");
    let backend = parse_backend(&args.backend)?;
    if !dir.join("meta.json").exists() {
        return Err(format!("{} holds no floodgate log", dir.display()).into());
    }
    let device = args.device.measure(&dir)?;
    let config = Config::new(&dir).shards(args.shards).io_backend(backend);
    let log = Log::open(config)?;
    let consumed = AtomicU64::new(0);
    let reads_before = read_totals(&log);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let stored = log
        .consumer(TOPIC)
        .build()
        .and_then(|c| c.lag())
        .map_or(0, |l| l.iter().map(|(_, n)| *n as usize).sum());
    // Drain what is stored now: the consumers stop when together they consumed the backlog
    // at the start (asking each partition's lag after every poll cost more than the poll at
    // 10,000 partitions).
    let backlog = match &args.group {
        Some(g) => log.group_lag(g, TOPIC)?.lag,
        None => stored as u64,
    };
    let members = args.consumers;
    let consumed_ref = &consumed;
    let stop = move |_: &floodgate::Consumer| consumed_ref.load(Ordering::Relaxed) >= backlog;
    let options = ConsumeOptions {
        rate: args.consume_rate,
        group: args.group.as_deref(),
        commit_interval: Duration::from_millis(args.commit_interval_ms),
        commit_journal: args.commit_journal.as_deref(),
    };
    let stats = consume_members(
        &log,
        &options,
        members,
        start,
        args.verify,
        stored,
        &consumed,
        &stop,
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu_start;
    let (disk, frames) = read_totals(&log);
    let (disk, frames) = (disk - reads_before.0, frames - reads_before.1);
    let whole = stats.whole_seconds.min(stats.per_second.len());
    let group_lag = match &args.group {
        Some(g) => Some(log.group_lag(g, TOPIC)?),
        None => None,
    };
    let error = (args.consume_rate > 0.0)
        .then(|| rate_error_pct(&stats.per_second, whole, args.consume_rate));
    let mut report = json!({
        "scenario": "consume",
        "io_backend": backend.name(),
        "consume_rate": args.consume_rate,
        "duration_s": elapsed,
        "consumed": stats.consumed,
        "consume_msgs_per_s": stats.consumed as f64 / elapsed,
        "consume_mb_per_s": stats.bytes as f64 / 1e6 / elapsed,
        "consume_rate_error_pct": error,
        "read_disk_bytes": disk,
        "read_amplification": (frames > 0).then(|| disk as f64 / frames as f64),
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "consumer_cpu_ns_per_msg": stats.cpu.as_nanos() as f64 / stats.consumed.max(1) as f64,
        "group": args.group,
        "consumers": args.consumers,
        "group_lag": group_lag.as_ref().map(|g| g.lag),
        "time_to_drain_s": group_lag
            .as_ref()
            .and_then(|g| g.time_to_drain)
            .map(|d| d.as_secs_f64()),
        "verify": if args.verify { json!({
            "checked": stats.consumed, "corrupt": stats.check.corrupt,
            "duplicated": stats.check.duplicated, "out_of_order": stats.check.out_of_order,
        }) } else { serde_json::Value::Null },
        "env": env_json(&dir, &fs_type(&dir)),
    });
    let consume_mb = report["consume_mb_per_s"].as_f64();
    merge_json(&mut report, device_json(device, None, consume_mb));
    if args.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load consume: {} records in {elapsed:.2} s: {:.0} msgs/s, {:.1} MB/s; \
             read {:.1} MB from the device, {:.2} times the frames consumed",
            stats.consumed,
            report["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["consume_mb_per_s"].as_f64().unwrap_or(0.0),
            disk as f64 / 1e6,
            report["read_amplification"].as_f64().unwrap_or(0.0)
        );
        print_device(&report);
    }
    let c = &stats.check;
    if c.corrupt + c.duplicated + c.out_of_order > 0 {
        return Err("consume found errors".into());
    }
    Ok(())
}

/// Bytes the log's readers read from the device, and bytes of frames they were handed, so
/// far (over every shard): read amplification is the first over the second.
pub(crate) fn read_totals(log: &Log) -> (u64, u64) {
    log.stats().iter().fold((0, 0), |(d, f), s| {
        (d + s.read_disk_bytes, f + s.read_frame_bytes)
    })
}

/// What a consumer checks of each record it is handed: intact, not seen before, in order per
/// producer within its partition.
#[derive(Default)]
pub(crate) struct ConsumedCheck {
    /// Every record checked.
    pub(crate) seen: HashSet<RecordId>,
    /// The last sequence number of each (partition, run, producer).
    last_seq: HashMap<(u32, u32, u32), u64>,
    pub(crate) corrupt: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
}

impl ConsumedCheck {
    /// Room for `expected` records up front: growing a set of millions stalls a paced
    /// consumer for tens of milliseconds.
    pub(crate) fn new(expected: usize) -> ConsumedCheck {
        ConsumedCheck {
            seen: HashSet::with_capacity(expected),
            last_seq: HashMap::new(),
            corrupt: 0,
            duplicated: 0,
            out_of_order: 0,
        }
    }

    pub(crate) fn check(&mut self, partition: u32, value: &[u8]) {
        self.check_sized(partition, value, |_| true);
    }

    /// As [`ConsumedCheck::check`], a record whose length `size_ok` refuses counting as
    /// corrupt.
    pub(crate) fn check_sized(
        &mut self,
        partition: u32,
        value: &[u8],
        size_ok: impl FnOnce(RecordId) -> bool,
    ) {
        let checked =
            RecordId::read(value).filter(|(id, sum)| size_ok(*id) && id.checks_out(*sum, value));
        let Some((id, _)) = checked else {
            self.corrupt += 1;
            return;
        };
        if !self.seen.insert(id) {
            self.duplicated += 1;
        }
        if self
            .last_seq
            .insert((partition, id.run, id.producer), id.seq)
            .is_some_and(|prev| prev > id.seq)
        {
            self.out_of_order += 1;
        }
    }
}
