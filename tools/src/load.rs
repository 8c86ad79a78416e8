//! The load tool: produce at a target rate (open loop) or as fast as possible, measure
//! acknowledgement latency from each record's intended send time (so a stall is not hidden by
//! coordinated omission), and optionally read everything back to verify it.
//!
//! Payload layout (so corruption, loss and duplication are detectable):
//! `[u32 producer][u64 seq][u64 checksum][filler]`, little-endian, where the checksum is
//! xxh3_64 of the filler seeded with `producer << 32 ^ seq`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use floodgate::{Ack, Config, Durability, IoBackend, Log, Record, ShardStats, TopicConfig};
use hdrhistogram::Histogram;
use serde_json::json;

const TOPIC: &str = "load";
/// The consumer group of the peak scenario.
const PEAK_GROUP: &str = "peak";
const HEADER_BYTES: usize = 20;

#[derive(Subcommand)]
pub enum Scenario {
    /// Produce records and report throughput and acknowledgement latency.
    Produce(ProduceArgs),
    /// Measure the CPU an open, idle log uses (shard writers and helpers parked).
    Idle(IdleArgs),
    /// The mission: producers at a peak rate while a consumer drains at a fixed, lower rate.
    Peak(PeakArgs),
    /// Drain an existing data directory's load topic, optionally at a fixed rate.
    Consume(ConsumeArgs),
    /// Crash test: a child process produces with Sync acks and journals every ack; it is
    /// SIGKILLed at random moments; after each kill the log is reopened and every journaled
    /// ack must be there with its exact bytes, offsets dense.
    Crash(CrashArgs),
    /// The child side of `crash` (not for direct use).
    #[command(hide = true)]
    CrashChild(CrashChildArgs),
}

#[derive(Args, Clone)]
pub struct CrashArgs {
    /// Data directory (default: a fresh temporary directory, removed at exit unless --keep).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary data directory.
    #[arg(long)]
    keep: bool,
    /// Kill-and-check rounds.
    #[arg(long, default_value_t = 20)]
    iterations: u32,
    /// Longest time a child runs before it is killed, in milliseconds.
    #[arg(long, default_value_t = 300)]
    kill_after_ms_max: u64,
    /// Every this many rounds (and in the last), re-read the whole log and check every
    /// journaled ack again; other rounds read what is new plus a random stretch of older
    /// records per partition (0: only in the last round).
    #[arg(long, default_value_t = 50)]
    full_check_every: u32,
    /// Seed of the kill times (the run prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object on stdout instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct CrashChildArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    journal: PathBuf,
    #[arg(long)]
    round: u32,
}

#[derive(Args, Clone)]
pub struct PeakArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Seconds to run.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Records per second over all producers.
    #[arg(long, default_value_t = 500_000.0)]
    produce_rate: f64,
    /// Records per second the consumer drains (exactly, while a backlog lasts).
    #[arg(long, default_value_t = 80_000.0)]
    consume_rate: f64,
    /// Partitions of the load topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// Consumer threads: members of the group "peak", sharing --consume-rate.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
}

/// Options of the scenarios that write (produce, peak).
#[derive(Args, Clone)]
pub struct LogArgs {
    /// Data directory (default: a fresh temporary directory, removed at exit unless --keep).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary data directory.
    #[arg(long)]
    keep: bool,
    /// Record value size in bytes (at least 20): fixed (`100`) or uniformly distributed over
    /// an inclusive range (`64..4096`; each record's size follows from its producer and
    /// sequence number, so --verify checks it).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    size: Size,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// `sync` or `interval:MS`.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// Shards (writer threads).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// I/O backend: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring")]
    backend: String,
    /// Check every record: read everything back afterwards.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Draw throughput, backlog and ack latency over time into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    /// Data directory written by `floodgate load produce --keep` or `peak --keep`.
    #[arg(long)]
    dir: PathBuf,
    /// Records per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    consume_rate: f64,
    /// Shards the directory was created with.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// I/O backend: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring")]
    backend: String,
    /// Check every consumed record.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Consume as a member of this consumer group: start at its committed offsets, commit
    /// as it goes, and apply --consume-rate to the group.
    #[arg(long)]
    group: Option<String>,
    /// With --group, commit every this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    commit_interval_ms: u64,
    /// Consumer threads (more than one: members of --group sharing the partitions).
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// With --group, append each commit's `partition offset` lines to this file (for crash
    /// tests: what was committed before a kill).
    #[arg(long, hide = true)]
    commit_journal: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The device baseline of the scenarios that report bandwidth.
#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// First measure the device's O_DIRECT sequential write and read bandwidth on the data
    /// directory (io_uring, 1 MiB blocks, 4 in flight, like fio) and report the load's MB/s as
    /// ratios of it.
    #[arg(long)]
    compare_device: bool,
    /// Bytes the device measurement writes and reads.
    #[arg(long, default_value_t = 2 << 30)]
    compare_device_bytes: u64,
}

impl DeviceArgs {
    /// The baseline on `dir`, if asked for. Call it before the log opens: the log's helper
    /// zero-fills a segment at start, which would share the disk with the measurement.
    fn measure(&self, dir: &Path) -> Result<Option<floodgate::DeviceBaseline>, String> {
        self.compare_device
            .then(|| {
                floodgate::measure_device(dir, self.compare_device_bytes).map_err(|e| e.to_string())
            })
            .transpose()
    }
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    /// Data directory (default: a fresh temporary directory, removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How long to stay idle, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Shards (writer threads).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Print one JSON object on stdout instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Number of records to produce (default 1,000,000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Produce for this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Partitions of the load topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Target rate in records per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// Largest group-commit write in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    commit_bytes_max: usize,
    /// Do not zero-fill segments ahead of the writer (see Config::segment_prezero).
    #[arg(long)]
    no_prezero: bool,
    /// Do not pin shard writer threads, nor producer threads, to cores.
    #[arg(long)]
    no_pin: bool,
    /// Leave producer threads to the scheduler while the writers are pinned (`load peak`).
    #[arg(skip)]
    producers_free: bool,
    /// Memory per shard for its newest commits and recent reads (0: no read cache).
    #[arg(long, default_value_t = floodgate::config::TAIL_CACHE_BYTES_DEFAULT)]
    tail_cache_bytes: usize,
    /// Bytes of records each producer thread keeps unacknowledged, as Kafka's
    /// `buffer.memory` (32 MiB): past it the thread waits for its oldest ack (at most 2^20
    /// records). Paced producers rarely come near it.
    #[arg(long, default_value_t = WINDOW_BYTES_DEFAULT)]
    window_bytes: usize,
    /// Records in each producer's ring into a shard (`Config::ring_records`; the library's
    /// default is 16,384): a larger ring lets the writer take more records per commit (see
    /// docs/TUNING.md).
    #[arg(long, default_value_t = LOAD_RING_RECORDS)]
    ring_records: usize,
}

pub fn run(scenario: Scenario) -> Result<(), String> {
    match scenario {
        Scenario::Produce(args) => produce(args),
        Scenario::Idle(args) => idle(args),
        Scenario::Peak(args) => peak(args),
        Scenario::Consume(args) => consume(args),
        Scenario::Crash(args) => crash(args),
        Scenario::CrashChild(args) => crash_child(args),
    }
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    if s == "sync" {
        return Ok(Durability::Sync);
    }
    let ms = s
        .strip_prefix("interval:")
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|&m| m > 0)
        .ok_or_else(|| format!("--durability {s:?}: use sync or interval:MS (MS > 0)"))?;
    Ok(Durability::Interval(Duration::from_millis(ms)))
}

fn parse_backend(s: &str) -> Result<IoBackend, String> {
    match s {
        "io_uring" | "uring" => Ok(IoBackend::IoUring),
        "portable" => Ok(IoBackend::Portable),
        _ => Err(format!("--backend {s:?}: use io_uring or portable")),
    }
}

/// The data directory: the given one, or a fresh one on a disk-backed file system.
fn data_dir(dir: Option<&PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    if let Some(d) = dir {
        return Ok((d.clone(), None));
    }
    let mut base = std::env::temp_dir();
    if fs_type(&base) == "tmpfs" {
        // tmpfs has no O_DIRECT and is memory, not disk: figures from it would mislead.
        base = std::env::current_dir().map_err(|e| e.to_string())?;
        eprintln!(
            "note: {} is tmpfs; using {} instead",
            std::env::temp_dir().display(),
            base.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("floodgate-load-")
        .tempdir_in(&base)
        .map_err(|e| format!("creating a data directory in {}: {e}", base.display()))?;
    Ok((tmp.path().to_owned(), Some(tmp)))
}

/// Record value sizes: fixed, or uniform over `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    min: usize,
    max: usize,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{t:?} is not a size in bytes"))
    };
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (number(a)?, number(b.trim_start_matches('='))?),
        None => (number(s)?, number(s)?),
    };
    if min < HEADER_BYTES || max < min {
        return Err(format!(
            "sizes must be at least {HEADER_BYTES} bytes, and a range low..high with low <= high"
        ));
    }
    Ok(Size { min, max })
}

impl Size {
    /// The size of a producer's record `seq`.
    fn of(&self, producer: u32, seq: u64) -> usize {
        if self.min == self.max {
            return self.min;
        }
        let spread = (self.max - self.min + 1) as u64;
        let h = xxhash_rust::xxh3::xxh3_64(
            &[producer.to_le_bytes().as_slice(), &seq.to_le_bytes()].concat(),
        );
        self.min + (h % spread) as usize
    }

    /// The mean size, for bandwidth figures.
    fn mean(&self) -> f64 {
        (self.min + self.max) as f64 / 2.0
    }

    /// As given: `100` or `64..4096`.
    fn label(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

fn payload(producer: u32, seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(size, 0);
    out[0..4].copy_from_slice(&producer.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    // Filler that differs per record and costs little to make: a word pattern seeded by the
    // record, so a payload swapped for another record's fails its checksum.
    let seed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(producer);
    let mut words = out[HEADER_BYTES..].chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes());
    }
    let rest = words.into_remainder();
    let last = seed.to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    let sum = checksum(producer, seq, &out[HEADER_BYTES..]);
    out[12..20].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(producer: u32, seq: u64, filler: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(filler, (u64::from(producer) << 32) ^ seq)
}

/// What a consumer loop saw.
#[derive(Default)]
struct ConsumeStats {
    consumed: u64,
    bytes: u64,
    /// (producer, sequence) of every record checked, with `verify`.
    seen: HashSet<(u32, u64)>,
    /// Records delivered in each second since the consumer started.
    per_second: Vec<u64>,
    /// Whole seconds it ran (those of `per_second` that measure a full second).
    whole_seconds: usize,
    corrupt: u64,
    duplicated: u64,
    out_of_order: u64,
}

/// How a scenario's consumers run.
struct ConsumeOptions<'a> {
    /// Records per second (0: unlimited).
    rate: f64,
    /// Consume as a member of this group: the rate is the group's, positions are committed
    /// every `commit_interval` (and when partitions move or the consumer stops).
    group: Option<&'a str>,
    commit_interval: Duration,
    /// After each commit, append `partition offset` lines of the committed positions here.
    commit_journal: Option<&'a Path>,
}

/// Consumes the load topic with `log.consumer` as `options` say, until `stop` says so; counts
/// into `consumed` as it goes. With `verify`, checks every payload.
fn consume_loop(
    log: &Log,
    options: &ConsumeOptions<'_>,
    start: Instant,
    verify: bool,
    expected: usize,
    consumed: &AtomicU64,
    stop: &dyn Fn(&floodgate::Consumer) -> bool,
) -> Result<ConsumeStats, String> {
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
        seen: HashSet::with_capacity(if verify { expected } else { 0 }),
        ..ConsumeStats::default()
    };
    let mut consumer = builder.build().map_err(|e| e.to_string())?;
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
    let mut last_seq: HashMap<(u32, u32), u64> = HashMap::new();
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
            if value.len() < HEADER_BYTES {
                stats.corrupt += 1;
                continue;
            }
            let producer = u32::from_le_bytes(value[0..4].try_into().unwrap());
            let seq = u64::from_le_bytes(value[4..12].try_into().unwrap());
            let sum = u64::from_le_bytes(value[12..20].try_into().unwrap());
            if sum != checksum(producer, seq, &value[HEADER_BYTES..]) {
                stats.corrupt += 1;
                continue;
            }
            if !stats.seen.insert((producer, seq)) {
                stats.duplicated += 1;
            }
            if last_seq
                .insert((r.partition, producer), seq)
                .is_some_and(|prev| prev > seq)
            {
                stats.out_of_order += 1;
            }
        }
        if options.group.is_some() && Instant::now() >= next_commit {
            next_commit = Instant::now() + options.commit_interval;
            commit_and_journal(&mut consumer, journal.as_mut())?;
        }
    }
    stats.whole_seconds = start.elapsed().as_secs() as usize;
    if options.group.is_some() {
        commit_and_journal(&mut consumer, journal.as_mut())?;
    }
    Ok(stats)
}

/// Runs `members` consumers (group members when more than one) and merges what they saw: a
/// record two members both delivered counts as duplicated.
#[allow(clippy::too_many_arguments)]
fn consume_members(
    log: &Log,
    options: &ConsumeOptions<'_>,
    members: u32,
    start: Instant,
    verify: bool,
    expected: usize,
    consumed: &AtomicU64,
    stop: &(dyn Fn(&floodgate::Consumer) -> bool + Sync),
) -> Result<ConsumeStats, String> {
    if members > 1 && options.group.is_none() {
        return Err("more than one consumer needs --group (members share the partitions)".into());
    }
    let results: Vec<Result<ConsumeStats, String>> = std::thread::scope(|s| {
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
        all.corrupt += r.corrupt;
        all.duplicated += r.duplicated;
        all.out_of_order += r.out_of_order;
        if all.per_second.len() < r.per_second.len() {
            all.per_second.resize(r.per_second.len(), 0);
        }
        for (a, b) in all.per_second.iter_mut().zip(&r.per_second) {
            *a += b;
        }
        let before = all.seen.len() + r.seen.len();
        all.seen.extend(r.seen);
        all.duplicated += (before - all.seen.len()) as u64;
    }
    Ok(all)
}

/// Commits the consumer's positions; then journals them (`partition offset` lines).
fn commit_and_journal(
    consumer: &mut floodgate::Consumer,
    journal: Option<&mut std::fs::File>,
) -> Result<(), String> {
    consumer.commit().map_err(|e| format!("commit: {e}"))?;
    if let Some(journal) = journal {
        use std::io::Write;
        let mut lines = String::new();
        for p in consumer.assignment() {
            let position = consumer.position(p).map_err(|e| e.to_string())?;
            lines.push_str(&format!("{p} {position}\n"));
        }
        journal
            .write_all(lines.as_bytes())
            .map_err(|e| format!("commit journal: {e}"))?;
    }
    Ok(())
}

/// How long the peak scenario's consumers run past its producers.
const CONSUMER_OVERRUN: Duration = Duration::from_millis(100);

/// The worst deviation from `rate` over the whole seconds in `per_second` (the last, partial
/// one excluded), in percent.
fn rate_error_pct(per_second: &[u64], whole_seconds: usize, rate: f64) -> f64 {
    per_second
        .iter()
        .take(whole_seconds)
        .map(|&n| (n as f64 - rate).abs() / rate * 100.0)
        .fold(0.0, f64::max)
}

fn peak(args: PeakArgs) -> Result<(), String> {
    if args.consume_rate <= 0.0 || args.produce_rate <= 0.0 {
        return Err("--produce-rate and --consume-rate must be positive".into());
    }
    let produce_args = ProduceArgs {
        log: args.log.clone(),
        messages: None,
        duration: Some(args.duration),
        partitions: args.partitions,
        rate: args.produce_rate,
        segment_bytes: args.segment_bytes,
        commit_bytes_max: 4 << 20,
        no_prezero: false,
        no_pin: false,
        // Pinned to the one core the writer leaves here, the producer waited out another
        // process's bursts there while the writer's core idled: ack p99 higher in 5 of 6
        // alternating runs (see Log::other_cores).
        producers_free: true,
        tail_cache_bytes: floodgate::config::TAIL_CACHE_BYTES_DEFAULT,
        // The mission's producer as an embedding application gets it: the library's ring.
        window_bytes: WINDOW_BYTES_DEFAULT,
        ring_records: floodgate::config::RING_RECORDS_DEFAULT,
    };
    let (log, dir, tmp, backend, device) = open_load_log(&produce_args)?;
    let deadline = Duration::from_secs_f64(args.duration);
    let live = Live::default();
    let consumed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let mut backlog_series: Vec<(f64, u64)> = Vec::new();
    let (results, consume_stats, finished) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let (log, produce_args, live) = (&log, &produce_args, &live);
                s.spawn(move || {
                    producer_thread(log, produce_args, k, None, Some(deadline), start, live)
                })
            })
            .collect();
        let (live, consumed_ref, done_ref) = (&live, &consumed, &done);
        s.spawn(move || show_progress(args.log.json, live, Some(consumed_ref), done_ref));
        let consumer = {
            let (log, consumed) = (&log, &consumed);
            // Members count their seconds from their own start, a few ms after the run's: they
            // run on a little past the producers, so their last second is whole too.
            let stop =
                move |_: &floodgate::Consumer| start.elapsed() >= deadline + CONSUMER_OVERRUN;
            let expected = (args.consume_rate * args.duration * 1.1) as usize;
            s.spawn(move || {
                let options = ConsumeOptions {
                    rate: args.consume_rate,
                    group: Some(PEAK_GROUP),
                    commit_interval: Duration::from_secs(1),
                    commit_journal: None,
                };
                consume_members(
                    log,
                    &options,
                    args.consumers,
                    start,
                    args.log.verify,
                    expected,
                    consumed,
                    &stop,
                )
            })
        };
        while start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let backlog = live
                .acked
                .load(Ordering::Relaxed)
                .saturating_sub(consumed.load(Ordering::Relaxed));
            backlog_series.push((start.elapsed().as_secs_f64(), backlog));
        }
        let results: Vec<ProducerResult> = producers
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .collect();
        let consumed = consumer.join().expect("consumer thread");
        // Measured before the progress thread ends (it looks every 250 ms).
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, consumed, finished)
    });
    let consume_stats = consume_stats?;
    let elapsed = finished.0;
    let cpu = finished.1 - cpu_start;
    let (histogram, produced, errors, first_error) = merge(&results);
    let writer = writer_json(&log);
    let verify = args.log.verify.then(|| {
        let mut v = verify(&log, &produce_args, &results);
        v.corrupt += consume_stats.corrupt;
        v.duplicated += consume_stats.duplicated;
        v.out_of_order += consume_stats.out_of_order;
        v
    });
    // What the group has not committed yet when the run ends, and how long it takes at its
    // rate (the members committed as they left).
    let group = log
        .group_lag(PEAK_GROUP, TOPIC)
        .map_err(|e| e.to_string())?;
    let time_to_drain = group
        .time_to_drain
        .map_or(group.lag as f64 / args.consume_rate, |d| d.as_secs_f64());
    drop(log);
    let fs = fs_type(&dir);
    let whole = consume_stats
        .whole_seconds
        .min(consume_stats.per_second.len());
    let mut report = json!({
        "scenario": "peak",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": args.partitions,
        "producers": args.log.producers,
        "shards": args.log.shards,
        "durability": args.log.durability,
        "io_backend": backend.name(),
        "target_rate": args.produce_rate,
        "consume_rate": args.consume_rate,
        "consumers": args.consumers,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": produced as f64 / elapsed,
        "produce_mb_per_s": produced as f64 * args.log.size.mean() / 1e6 / elapsed,
        "consumed": consume_stats.consumed,
        "consume_msgs_per_s": consume_stats.consumed as f64 / elapsed,
        "consume_mb_per_s": consume_stats.bytes as f64 / 1e6 / elapsed,
        "consume_rate_error_pct": rate_error_pct(&consume_stats.per_second, whole, args.consume_rate),
        "consumed_per_second": consume_stats.per_second,
        "backlog_max": backlog_series.iter().map(|b| b.1).max().unwrap_or(0),
        "backlog": backlog_series.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>(),
        "group_lag": group.lag,
        "time_to_drain_s": time_to_drain,
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "ack_latency_us": latency_json(&histogram),
        "verify": verify_json(verify.as_ref()),
        "env": env_json(&dir, &fs),
    });
    let (produce_mb, consume_mb) = (
        report["produce_mb_per_s"].as_f64(),
        report["consume_mb_per_s"].as_f64(),
    );
    merge_json(&mut report, device_json(device, produce_mb, consume_mb));
    merge_json(&mut report, writer);
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load peak: {} msgs/s in, {} msgs/s out, {} B, {} partitions",
            args.produce_rate, args.consume_rate, args.log.size, args.partitions
        );
        plot(
            path,
            title,
            &seconds,
            Some(&consume_stats.per_second),
            &backlog_series,
        )?;
    }
    if args.log.json {
        println!("{report}");
    } else {
        println!(
            "floodgate load peak: produce {} msgs/s, consume {} msgs/s, {} B, {} partition(s), {} s, durability {}, {} on {}",
            args.produce_rate,
            args.consume_rate,
            args.log.size,
            args.partitions,
            args.duration,
            args.log.durability,
            backend.name(),
            fs
        );
        print_device(&report);
        println!(
            "  produced     {produced} ({:.0} msgs/s)   ack p50 {} µs  p99 {} µs  p99.9 {} µs",
            report["produce_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["ack_latency_us"]["p50"],
            report["ack_latency_us"]["p99"],
            report["ack_latency_us"]["p999"]
        );
        println!(
            "  consumed     {} ({:.0} msgs/s)   worst 1 s window off by {:.3}%   backlog max {}",
            consume_stats.consumed,
            report["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["consume_rate_error_pct"].as_f64().unwrap_or(0.0),
            report["backlog_max"]
        );
        println!(
            "  group lag    {} at the end: {time_to_drain:.1} s to drain at {} msgs/s",
            group.lag, args.consume_rate
        );
        print_verify(verify.as_ref());
    }
    finish_run(errors, first_error, verify.as_ref(), args.log.keep, tmp)
}

fn consume(args: ConsumeArgs) -> Result<(), String> {
    let backend = parse_backend(&args.backend)?;
    if !args.dir.join("meta.json").exists() {
        return Err(format!("{} holds no floodgate log", args.dir.display()));
    }
    let device = args.device.measure(&args.dir)?;
    let config = Config::new(&args.dir)
        .shards(args.shards)
        .io_backend(backend);
    let log = Log::open(config).map_err(|e| e.to_string())?;
    let consumed = AtomicU64::new(0);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let stored = log
        .consumer(TOPIC)
        .build()
        .and_then(|c| c.lag())
        .map_or(0, |l| l.iter().map(|(_, n)| *n as usize).sum());
    // Drain what is stored now: one consumer stops when its partitions' lag is zero; group
    // members, when together they consumed the group's backlog at the start.
    let backlog = match &args.group {
        Some(g) => log.group_lag(g, TOPIC).map_err(|e| e.to_string())?.lag,
        None => stored as u64,
    };
    let members = args.consumers;
    let consumed_ref = &consumed;
    let stop = move |c: &floodgate::Consumer| {
        if members > 1 {
            consumed_ref.load(Ordering::Relaxed) >= backlog
        } else {
            c.lag().is_ok_and(|l| l.iter().all(|(_, n)| *n == 0))
        }
    };
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
    let whole = stats.whole_seconds.min(stats.per_second.len());
    let group_lag = match &args.group {
        Some(g) => Some(log.group_lag(g, TOPIC).map_err(|e| e.to_string())?),
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
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "group": args.group,
        "consumers": args.consumers,
        "group_lag": group_lag.as_ref().map(|g| g.lag),
        "time_to_drain_s": group_lag
            .as_ref()
            .and_then(|g| g.time_to_drain)
            .map(|d| d.as_secs_f64()),
        "verify": if args.verify { json!({
            "checked": stats.consumed, "corrupt": stats.corrupt,
            "duplicated": stats.duplicated, "out_of_order": stats.out_of_order,
        }) } else { serde_json::Value::Null },
        "env": env_json(&args.dir, &fs_type(&args.dir)),
    });
    let consume_mb = report["consume_mb_per_s"].as_f64();
    merge_json(&mut report, device_json(device, None, consume_mb));
    if args.json {
        println!("{report}");
    } else {
        println!(
            "floodgate load consume: {} records in {elapsed:.2} s: {:.0} msgs/s, {:.1} MB/s",
            stats.consumed,
            report["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["consume_mb_per_s"].as_f64().unwrap_or(0.0)
        );
        print_device(&report);
    }
    if stats.corrupt + stats.duplicated + stats.out_of_order > 0 {
        return Err("consume found errors".into());
    }
    Ok(())
}

const CRASH_TOPIC: &str = "crash";

/// Small segments and commits, so a short crash run rolls segments and tears tails often.
fn crash_config(dir: &Path) -> Config {
    Config::new(dir)
        .segment_bytes(8 << 20)
        .commit_bytes_max(256 << 10)
        .record_bytes_max(64 << 10)
}

const CRASH_PARTITIONS: u32 = 4;
/// An ack journal record: u32 partition, u32 reserved, u64 offset, u64 payload hash, u64
/// xxh3 of the first 24 bytes. A power of two, so records never straddle a page.
const JOURNAL_RECORD_BYTES: usize = 32;

fn journal_record(partition: u32, offset: u64, hash: u64) -> [u8; JOURNAL_RECORD_BYTES] {
    let mut r = [0u8; JOURNAL_RECORD_BYTES];
    r[0..4].copy_from_slice(&partition.to_le_bytes());
    r[8..16].copy_from_slice(&offset.to_le_bytes());
    r[16..24].copy_from_slice(&hash.to_le_bytes());
    let check = xxhash_rust::xxh3::xxh3_64(&r[..24]);
    r[24..32].copy_from_slice(&check.to_le_bytes());
    r
}

/// ((partition, offset), payload hash) of every journaled ack, in journal order.
type AckJournal = Vec<((u32, u64), u64)>;

/// The journal's records; `Err` names a damaged record.
fn read_journal(bytes: &[u8]) -> Result<AckJournal, String> {
    bytes
        .chunks_exact(JOURNAL_RECORD_BYTES)
        .enumerate()
        .map(|(i, r)| {
            let word = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
            if xxhash_rust::xxh3::xxh3_64(&r[..24]) != word(24) {
                return Err(format!("ack journal record {i} is damaged"));
            }
            let partition = u32::from_le_bytes(r[0..4].try_into().unwrap());
            Ok(((partition, word(8)), word(16)))
        })
        .collect()
}

/// The child: sends records forever (until killed), each waited for (Sync), and appends
/// `partition offset hash` to the journal after each ack.
fn crash_child(args: CrashChildArgs) -> Result<(), String> {
    use std::io::Write;
    let log = Log::open(crash_config(&args.dir)).map_err(|e| e.to_string())?;
    if !log.list_topics().iter().any(|t| t.name == CRASH_TOPIC) {
        log.create_topic(CRASH_TOPIC, TopicConfig::new(CRASH_PARTITIONS))
            .map_err(|e| e.to_string())?;
    }
    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.journal)
        .map_err(|e| e.to_string())?;
    // A kill can tear a write where it crosses a page boundary; records are 32 bytes, so they
    // never do, but the previous child may have died mid-record: cut that partial record off.
    let len = journal.metadata().map_err(|e| e.to_string())?.len();
    journal
        .set_len(len - len % JOURNAL_RECORD_BYTES as u64)
        .map_err(|e| e.to_string())?;
    let mut producer = log.producer();
    let mut acks = VecDeque::new();
    for seq in 0u64.. {
        // Varied sizes so frames straddle sectors and blocks.
        let size = 20 + (seq as usize * 7919) % 3000;
        let mut value = Vec::new();
        payload(args.round, seq, size, &mut value);
        let hash = xxhash_rust::xxh3::xxh3_64(&value);
        let ack = producer
            .send(CRASH_TOPIC, Record::new(&value).partition((seq % 4) as u32))
            .map_err(|e| e.to_string())?;
        acks.push_back((ack, hash));
        // Keep up to 64 records in flight so commits group several records.
        while acks.len() > 64 || acks.front().is_some_and(|(a, _)| a.try_get().is_some()) {
            let (ack, hash) = acks.pop_front().expect("non-empty");
            let at = ack.wait().map_err(|e| e.to_string())?;
            journal
                .write_all(&journal_record(at.partition, at.offset, hash))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// What the crash run knows between rounds, so a round reads only what changed.
///
/// A round reads the records stored since the previous round, re-reads a random stretch of
/// each partition's older records, and checks the acks journaled since the previous round;
/// every `--full-check-every` rounds and in the last round it re-reads the whole log and checks
/// every journaled ack again. A stretch found different from what an earlier round read (or a
/// partition shorter than before) makes that round check every ack too.
#[derive(Default)]
struct CrashCheck {
    /// Per partition, the hash of each record stored at its offset, as last read.
    stored: Vec<Vec<u64>>,
    /// Every journaled ack: (partition, offset, payload hash).
    acks: Vec<(u32, u64, u64)>,
    /// Journal bytes already taken into `acks`.
    journal_read: u64,
    journaled: u64,
    acks_checked: u64,
    records_read: u64,
    full_checks: u64,
    samples: u64,
    /// Records found shorter or different from an earlier round's reading (a sign of a bug
    /// only where acknowledged: those count as lost or corrupt).
    changed: u64,
    lost: u64,
    corrupt: u64,
    offset_gaps: u64,
}

/// Records re-read from each partition's older part in a round that is not a full check.
const CRASH_SAMPLE_RECORDS: u64 = 256;

impl CrashCheck {
    fn round(
        &mut self,
        log: &Log,
        journal: &Path,
        full: bool,
        random: &mut impl FnMut() -> u64,
    ) -> Result<(), String> {
        self.stored.resize(CRASH_PARTITIONS as usize, Vec::new());
        let new_from = self.acks.len();
        self.read_new_acks(journal)?;
        let mut check_all = full;
        self.full_checks += u64::from(full);
        for p in 0..CRASH_PARTITIONS {
            let end = log.offsets(CRASH_TOPIC, p).map_or(0, |(_, end)| end);
            let known = self.stored[p as usize].len() as u64;
            if end < known {
                self.changed += known - end;
                self.stored[p as usize].truncate(end as usize);
                check_all = true;
            }
            if full {
                check_all |= self.read_range(log, p, 0, end)?;
                continue;
            }
            // A random stretch of the older records, then everything new.
            let older = known.min(end);
            let at = random() % (older.saturating_sub(CRASH_SAMPLE_RECORDS) + 1);
            let again = (at + CRASH_SAMPLE_RECORDS).min(older);
            self.samples += again - at;
            check_all |= self.read_range(log, p, at, again)?;
            let new_from = self.stored[p as usize].len() as u64;
            check_all |= self.read_range(log, p, new_from, end)?;
        }
        let from = if check_all { 0 } else { new_from };
        for i in from..self.acks.len() {
            let (p, offset, hash) = self.acks[i];
            self.check_ack(p, offset, hash);
        }
        Ok(())
    }

    /// Appends the journal's new records to `acks`.
    fn read_new_acks(&mut self, journal: &Path) -> Result<(), String> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(journal) {
            f.seek(std::io::SeekFrom::Start(self.journal_read))
                .and_then(|_| f.read_to_end(&mut bytes))
                .map_err(|e| format!("reading the ack journal: {e}"))?;
        }
        bytes.truncate(bytes.len() - bytes.len() % JOURNAL_RECORD_BYTES);
        self.journal_read += bytes.len() as u64;
        for ((p, offset), hash) in read_journal(&bytes)? {
            if p >= CRASH_PARTITIONS {
                return Err(format!("the ack journal names partition {p}"));
            }
            self.acks.push((p, offset, hash));
            self.journaled += 1;
        }
        Ok(())
    }

    /// Reads partition `p`'s records `from..to` into `stored`; true when a record read again
    /// differs from the earlier reading.
    fn read_range(&mut self, log: &Log, p: u32, from: u64, to: u64) -> Result<bool, String> {
        let mut differs = false;
        let mut offset = from;
        while offset < to {
            let records = log
                .read(CRASH_TOPIC, p, offset, 1 << 20)
                .map_err(|e| format!("reading {p}/{offset}: {e}"))?;
            if records.is_empty() {
                break;
            }
            for r in records {
                if r.offset >= to {
                    break;
                }
                if r.offset != offset {
                    self.offset_gaps += 1;
                }
                let hash = xxhash_rust::xxh3::xxh3_64(&r.value.unwrap_or_default());
                let stored = &mut self.stored[p as usize];
                let len = stored.len();
                match stored.get_mut(r.offset as usize) {
                    Some(h) if *h != hash => {
                        *h = hash;
                        self.changed += 1;
                        differs = true;
                    }
                    Some(_) => {}
                    None if r.offset as usize == len => stored.push(hash),
                    None => self.offset_gaps += 1,
                }
                self.records_read += 1;
                offset = r.offset + 1;
            }
        }
        if offset < to {
            // Fewer records than `offsets` promised: what is missing is behind the read end.
            self.stored[p as usize].truncate(offset as usize);
            differs = true;
        }
        Ok(differs)
    }

    fn check_ack(&mut self, p: u32, offset: u64, hash: u64) {
        self.acks_checked += 1;
        match self.stored[p as usize].get(offset as usize) {
            None => {
                self.lost += 1;
                eprintln!("acknowledged record {p}/{offset} is missing");
            }
            Some(&h) if h != hash => {
                self.corrupt += 1;
                eprintln!("acknowledged record {p}/{offset} has other bytes");
            }
            Some(_) => {}
        }
    }
}

fn crash(args: CrashArgs) -> Result<(), String> {
    let (dir, tmp) = data_dir(args.dir.as_ref())?;
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let journal = dir.with_extension("acks");
    let _ = std::fs::remove_file(&journal);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut check = CrashCheck::default();
    let mut torn_tails = 0usize;
    for round in 0..args.iterations {
        let mut child = std::process::Command::new(&exe)
            .args([
                "load",
                "crash-child",
                "--round",
                &round.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .arg("--journal")
            .arg(&journal)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let wait_ms = 20 + next() % args.kill_after_ms_max.max(1);
        std::thread::sleep(Duration::from_millis(wait_ms));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("round {round}: the child exited early ({status})"));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        // Reopen (recovery runs) and check every acknowledged record.
        let log = Log::open(crash_config(&dir))
            .map_err(|e| format!("round {round}: reopening after the kill: {e}"))?;
        torn_tails += log.recovery_report().torn_tails.len();
        let full = round + 1 == args.iterations
            || (args.full_check_every > 0 && (round + 1) % args.full_check_every == 0);
        check
            .round(&log, &journal, full, &mut next)
            .map_err(|e| format!("round {round}: {e}"))?;
        drop(log);
        if (round + 1) % 50 == 0 {
            // Long runs: a line now and then, so a run cut short still says what it checked.
            eprintln!(
                "floodgate load crash: {} kills, {} acks journaled, {} checks: {} lost, {} \
                 corrupt, {} offset gaps",
                round + 1,
                check.journaled,
                check.acks_checked,
                check.lost,
                check.corrupt,
                check.offset_gaps
            );
        }
    }
    let report = json!({
        "scenario": "crash",
        "seed": seed,
        "iterations": args.iterations,
        "acks_checked": check.acks_checked,
        "acks_in_journal": check.journaled,
        "records_read": check.records_read,
        "full_checks": check.full_checks,
        "samples_rechecked": check.samples,
        "stored_changed": check.changed,
        "lost": check.lost,
        "corrupt": check.corrupt,
        "offset_gaps": check.offset_gaps,
        "torn_tails_recovered": torn_tails,
        "env": env_json(&dir, &fs_type(&dir)),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "floodgate load crash: {} kills (seed {seed}), {} acknowledged records journaled, {} \
             checks ({} full): {} lost, {} corrupt, {} offset gaps; {torn_tails} torn tails \
             recovered",
            args.iterations,
            check.journaled,
            check.acks_checked,
            check.full_checks,
            check.lost,
            check.corrupt,
            check.offset_gaps
        );
    }
    let _ = std::fs::remove_file(&journal);
    if args.keep
        && let Some(t) = tmp
    {
        eprintln!("kept data directory {}", t.keep().display());
    }
    if check.lost + check.corrupt + check.offset_gaps > 0 {
        return Err(format!("crash test failed (seed {seed})"));
    }
    Ok(())
}

/// Opens a log, sends one record (so a producer ring exists), then stays idle and reports the
/// process's CPU use over that time as a percentage of one core.
fn idle(args: IdleArgs) -> Result<(), String> {
    let (dir, _tmp) = data_dir(args.dir.as_ref())?;
    let log = Log::open(Config::new(&dir).shards(args.shards)).map_err(|e| e.to_string())?;
    if !log.list_topics().iter().any(|t| t.name == TOPIC) {
        log.create_topic(TOPIC, TopicConfig::new(1))
            .map_err(|e| e.to_string())?;
    }
    let mut producer = log.producer();
    producer
        .send(TOPIC, Record::new(b"idle"))
        .and_then(Ack::wait)
        .map_err(|e| e.to_string())?;
    // Let the segment helper finish preparing the next segment before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let cpu_start = process_cpu();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let cpu = process_cpu() - cpu_start;
    let pct = 100.0 * cpu.as_secs_f64() / start.elapsed().as_secs_f64();
    drop(producer);
    drop(log);
    let report = json!({
        "scenario": "idle",
        "shards": args.shards,
        "duration_s": args.duration,
        "idle_cpu_pct_of_one_core": pct,
        "env": env_json(&dir, &fs_type(&dir)),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "floodgate load idle: {pct:.3}% of one core over {:.1} s ({} shard(s))",
            args.duration, args.shards
        );
    }
    Ok(())
}

struct ProducerResult {
    histogram: Histogram<u64>,
    /// Ack latencies (µs) of the records intended in each second of the run.
    per_second: Vec<Histogram<u64>>,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

fn produce(args: ProduceArgs) -> Result<(), String> {
    let (log, dir, tmp, backend, device) = open_load_log(&args)?;
    let messages = match (args.messages, args.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(1_000_000),
        (None, Some(_)) => None,
    };
    let deadline = args.duration.map(Duration::from_secs_f64);
    let live = Live::default();
    let done = AtomicBool::new(false);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let (results, finished): (Vec<ProducerResult>, _) = std::thread::scope(|s| {
        let (live_ref, done_ref) = (&live, &done);
        s.spawn(move || show_progress(args.log.json, live_ref, None, done_ref));
        let handles: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let log = &log;
                let args = &args;
                let count = messages.map(|n| {
                    n / u64::from(args.log.producers)
                        + u64::from(u64::from(k) < n % u64::from(args.log.producers))
                });
                let live = &live;
                s.spawn(move || producer_thread(log, args, k, count, deadline, start, live))
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .collect();
        // Measured before the progress thread ends (it looks every 250 ms): after it, short
        // runs came out up to 250 ms long, their rates a multiple of records / 0.25 s.
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, finished)
    });
    let elapsed = finished.0;
    let cpu = finished.1 - cpu_start;
    let (histogram, produced, errors, first_error) = merge(&results);
    let writer = writer_json(&log);
    let verify = args.log.verify.then(|| verify(&log, &args, &results));
    drop(log);
    let fs = fs_type(&dir);
    let msgs_per_s = produced as f64 / elapsed;
    let mb_per_s = produced as f64 * args.log.size.mean() / 1e6 / elapsed;
    let latency = latency_json(&histogram);
    let mut report = json!({
        "scenario": "produce",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": args.partitions,
        "window_records": window_records(&args),
        "ring_records": args.ring_records,
        "producers": args.log.producers,
        "shards": args.log.shards,
        "durability": args.log.durability,
        "io_backend": backend.name(),
        "segment_prezero": !args.no_prezero,
        "target_rate": args.rate,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": msgs_per_s,
        "produce_mb_per_s": mb_per_s,
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "cpu_ns_per_msg": cpu.as_nanos() as f64 / produced.max(1) as f64,
        "ack_latency_us": latency,
        "verify": verify_json(verify.as_ref()),
        "env": env_json(&dir, &fs),
    });
    merge_json(&mut report, device_json(device, Some(mb_per_s), None));
    merge_json(&mut report, writer);
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load produce: {} B, {} partitions, {} producers, {}",
            args.log.size,
            args.partitions,
            args.log.producers,
            match args.rate {
                0.0 => "as fast as possible".to_string(),
                r => format!("paced at {r} msgs/s"),
            }
        );
        plot(path, title, &seconds, None, &[])?;
    }
    if args.log.json {
        println!("{report}");
    } else {
        println!(
            "floodgate load produce: {} × {} B, {} partition(s), {} producer(s), {} shard(s), durability {}, {} on {}",
            produced,
            args.log.size,
            args.partitions,
            args.log.producers,
            args.log.shards,
            args.log.durability,
            backend.name(),
            fs
        );
        print_device(&report);
        println!(
            "  throughput   {:>12.0} msgs/s   {:>8.1} MB/s   over {:.2} s",
            msgs_per_s, mb_per_s, elapsed
        );
        println!(
            "  cpu          {:.0} ns per message, {:.2} cores busy",
            report["cpu_ns_per_msg"].as_f64().unwrap_or(0.0),
            report["cpu_cores_used"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  ack latency  p50 {} µs   p99 {} µs   p99.9 {} µs   max {} µs",
            latency["p50"], latency["p99"], latency["p999"], latency["max"]
        );
        print_verify(verify.as_ref());
    }
    finish_run(errors, first_error, verify.as_ref(), args.log.keep, tmp)
}

/// Opens the log of a load run and creates the load topic if it is missing.
/// An open load log: the log, its directory (and the temporary directory to remove), the
/// backend, and the device baseline if one was asked for.
type LoadLog = (
    Log,
    PathBuf,
    Option<tempfile::TempDir>,
    IoBackend,
    Option<floodgate::DeviceBaseline>,
);

fn open_load_log(args: &ProduceArgs) -> Result<LoadLog, String> {
    if args.log.producers == 0 || args.partitions == 0 {
        return Err("--producers and --partitions must be at least 1".into());
    }
    let durability = parse_durability(&args.log.durability)?;
    let backend = parse_backend(&args.log.backend)?;
    let (dir, tmp) = data_dir(args.log.dir.as_ref())?;
    let device = args.log.device.measure(&dir)?;
    let config = Config::new(&dir)
        .shards(args.log.shards)
        .durability(durability)
        .io_backend(backend)
        .segment_bytes(args.segment_bytes)
        .commit_bytes_max(args.commit_bytes_max)
        .segment_prezero(!args.no_prezero)
        .pin_threads(!args.no_pin)
        .tail_cache_bytes(args.tail_cache_bytes)
        .ring_records(args.ring_records);
    let log = Log::open(config).map_err(|e| e.to_string())?;
    if !log.list_topics().iter().any(|t| t.name == TOPIC) {
        log.create_topic(TOPIC, TopicConfig::new(args.partitions))
            .map_err(|e| e.to_string())?;
    }
    Ok((log, dir, tmp, backend, device))
}

/// The device baseline's JSON fields, with the load's MB/s as ratios of it.
fn device_json(
    device: Option<floodgate::DeviceBaseline>,
    write_mb_per_s: Option<f64>,
    read_mb_per_s: Option<f64>,
) -> serde_json::Value {
    let Some(d) = device else {
        return json!({});
    };
    json!({
        "device_write_mb_per_s": d.write_mb_per_s,
        "device_read_mb_per_s": d.read_mb_per_s,
        "device_write_ratio": write_mb_per_s.map(|w| w / d.write_mb_per_s),
        "device_read_ratio": read_mb_per_s.map(|r| r / d.read_mb_per_s),
    })
}

/// The device baseline lines of the human-readable report, if it was measured.
fn print_device(report: &serde_json::Value) {
    let (Some(w), Some(r)) = (
        report["device_write_mb_per_s"].as_f64(),
        report["device_read_mb_per_s"].as_f64(),
    ) else {
        return;
    };
    let ratio = |k: &str| {
        report[k]
            .as_f64()
            .map_or(String::new(), |x| format!(" (floodgate: {x:.2} of it)"))
    };
    println!(
        "  device       O_DIRECT sequential write {w:.0} MB/s{}, read {r:.0} MB/s{}",
        ratio("device_write_ratio"),
        ratio("device_read_ratio")
    );
}

/// Adds `extra`'s fields to the object `report`.
/// The shard writers' group commits over the run: how many, how big, how long they took.
fn writer_json(log: &Log) -> serde_json::Value {
    let mut s = ShardStats::default();
    for shard in log.stats() {
        s += shard;
    }
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    json!({
        "writes": s.writes,
        "flushes": s.flushes,
        "segment_rolls": s.rolls,
        "segment_rolls_unzeroed": s.rolls_unzeroed,
        "records_per_write": per(s.records, s.writes),
        "batches_per_write": per(s.batches, s.writes),
        "write_bytes_mean": per(s.write_bytes, s.writes),
        "write_latency_us_mean": per(s.write_nanos, s.writes) / 1e3,
        "flush_latency_us_mean": per(s.flush_nanos, s.flushes) / 1e3,
    })
}

fn merge_json(report: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(r), serde_json::Value::Object(e)) = (report.as_object_mut(), extra) {
        r.extend(e);
    }
}

/// A histogram for one second's ack latencies (µs, up to an hour, 2 significant digits).
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram")
}

/// Each second's ack latencies over all producers.
fn per_second(results: &[ProducerResult]) -> Vec<Histogram<u64>> {
    let len = results
        .iter()
        .map(|r| r.per_second.len())
        .max()
        .unwrap_or(0);
    (0..len)
        .map(|i| {
            let mut h = second_histogram();
            for r in results {
                if let Some(s) = r.per_second.get(i) {
                    h.add(s).expect("same bounds");
                }
            }
            h
        })
        .collect()
}

/// Draws a run's per-second series into an SVG file.
fn plot(
    path: &Path,
    title: String,
    seconds: &[Histogram<u64>],
    consumed: Option<&[u64]>,
    backlog: &[(f64, u64)],
) -> Result<(), String> {
    // Whole seconds only: the last, partial one would show as a drop.
    let whole = seconds.len().saturating_sub(1).max(1).min(seconds.len());
    let seconds = &seconds[..whole];
    let consumed = consumed.map(|c| &c[..c.len().min(whole)]);
    let map = |f: &dyn Fn(&Histogram<u64>) -> u64| seconds.iter().map(f).collect::<Vec<u64>>();
    let (produced, p50, p99, max) = (
        map(&|h| h.len()),
        map(&|h| h.value_at_quantile(0.5)),
        map(&|h| h.value_at_quantile(0.99)),
        map(&|h| h.max()),
    );
    crate::plot::draw(
        path,
        &crate::plot::Series {
            title,
            produced: &produced,
            consumed,
            backlog,
            p50_us: &p50,
            p99_us: &p99,
            max_us: &max,
        },
    )
}

/// Per-second series of a load run: records acknowledged (by intended second), and ack latency
/// p50, p99 and max, µs.
fn series_json(seconds: &[Histogram<u64>]) -> serde_json::Value {
    let map = |f: &dyn Fn(&Histogram<u64>) -> u64| seconds.iter().map(f).collect::<Vec<u64>>();
    json!({
        "produced_per_second": map(&|h| h.len()),
        "ack_latency_max_us_per_second": map(&|h| h.max()),
        "ack_latency_p99_us_per_second": map(&|h| h.value_at_quantile(0.99)),
        "ack_latency_p50_us_per_second": map(&|h| h.value_at_quantile(0.5)),
    })
}

/// Producer threads' results merged: latency histogram, acked, errors, first error.
fn merge(results: &[ProducerResult]) -> (Histogram<u64>, u64, u64, Option<String>) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    let (mut produced, mut errors, mut first_error) = (0, 0, None);
    for r in results {
        histogram.add(&r.histogram).expect("histograms merge");
        produced += r.acked;
        errors += r.errors;
        first_error = first_error.or(r.first_error.clone());
    }
    (histogram, produced, errors, first_error)
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn verify_json(v: Option<&Verify>) -> serde_json::Value {
    match v {
        Some(v) => json!({
            "checked": v.checked, "missing": v.missing, "duplicated": v.duplicated,
            "corrupt": v.corrupt, "out_of_order": v.out_of_order,
        }),
        None => serde_json::Value::Null,
    }
}

fn print_verify(v: Option<&Verify>) {
    if let Some(v) = v {
        println!(
            "  verify       checked {}  missing {}  duplicated {}  corrupt {}  out of order {}",
            v.checked, v.missing, v.duplicated, v.corrupt, v.out_of_order
        );
    }
}

/// Reports failed sends, keeps the data directory if asked, and fails the run on any error.
fn finish_run(
    errors: u64,
    first_error: Option<String>,
    verify: Option<&Verify>,
    keep: bool,
    tmp: Option<tempfile::TempDir>,
) -> Result<(), String> {
    if let Some(e) = first_error {
        eprintln!("floodgate: {errors} send(s) failed; first: {e}");
    }
    if keep && let Some(t) = tmp {
        let kept = t.keep();
        eprintln!("kept data directory {}", kept.display());
    }
    let bad = verify.is_some_and(|v| v.missing + v.duplicated + v.corrupt + v.out_of_order > 0);
    if errors > 0 || bad {
        return Err("load run found errors".into());
    }
    Ok(())
}

/// What producers report while they run, for the progress line and the backlog series.
#[derive(Default)]
struct Live {
    acked: AtomicU64,
    /// The ack latency p99 (µs) of the last whole second a producer finished.
    p99_us: AtomicU64,
}

fn record_latency(
    r: &mut ProducerResult,
    live: &Live,
    start: Instant,
    intended: Instant,
    now: Instant,
) {
    let us = now.saturating_duration_since(intended).as_micros() as u64;
    r.histogram.saturating_record(us.max(1));
    let second = intended.saturating_duration_since(start).as_secs() as usize;
    while r.per_second.len() <= second {
        if let Some(done) = r.per_second.last() {
            live.p99_us
                .store(done.value_at_quantile(0.99), Ordering::Relaxed);
        }
        r.per_second.push(second_histogram());
    }
    r.per_second[second].saturating_record(us.max(1));
    live.acked.fetch_add(1, Ordering::Relaxed);
}

/// The live progress line on a terminal (stderr; indicatif hides it when stderr is not a
/// terminal, and `--json` hides it): rates, backlog and ack p99, until `done` is set.
fn show_progress(json: bool, live: &Live, consumed: Option<&AtomicU64>, done: &AtomicBool) {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .expect("a valid template"),
    );
    let count = |a: Option<&AtomicU64>| a.map_or(0, |a| a.load(Ordering::Relaxed));
    let mut last = (Instant::now(), count(Some(&live.acked)), count(consumed));
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(250));
        let now = (Instant::now(), count(Some(&live.acked)), count(consumed));
        let dt = now.0.duration_since(last.0).as_secs_f64().max(1e-9);
        let mut msg = format!(
            "produced {:>10.0}/s   ack p99 {:>6} µs",
            (now.1 - last.1) as f64 / dt,
            live.p99_us.load(Ordering::Relaxed)
        );
        if consumed.is_some() {
            msg.push_str(&format!(
                "   consumed {:>8.0}/s   backlog {:>10}",
                (now.2 - last.2) as f64 / dt,
                now.1.saturating_sub(now.2)
            ));
        }
        bar.set_message(msg);
        bar.tick();
        last = now;
    }
    bar.finish_and_clear();
}

/// Paced producers send what is due at most this often. Sending each record at its own
/// instant (every 2 µs at 500k msgs/s) kept a core busy waking and yielding (1.6 cores for a
/// 500k msgs/s load, against 1.0 with this tick, same p99 within noise); latency is still
/// counted from each record's intended time, so the tick's delay is in the figures.
const PACE_TICK: Duration = Duration::from_micros(50);

/// See `ProduceArgs::window_bytes`.
const WINDOW_BYTES_DEFAULT: usize = 32 << 20;
/// See `ProduceArgs::ring_records`.
const LOAD_RING_RECORDS: usize = 1 << 17;
const WINDOW_RECORDS_MAX: f64 = (1 << 20) as f64;

/// Unacknowledged records a producer thread keeps at most.
fn window_records(args: &ProduceArgs) -> usize {
    (args.window_bytes as f64 / args.log.size.mean()).clamp(1.0, WINDOW_RECORDS_MAX) as usize
}

fn producer_thread(
    log: &Log,
    args: &ProduceArgs,
    k: u32,
    count: Option<u64>,
    deadline: Option<Duration>,
    start: Instant,
    live: &Live,
) -> ProducerResult {
    let others = log.other_cores();
    if !args.no_pin && !args.producers_free && !others.is_empty() {
        floodgate::cores::pin(&[others[k as usize % others.len()]]);
    }
    let mut producer = log.producer();
    let mut result = ProducerResult {
        histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram"),
        per_second: Vec::new(),
        acked: 0,
        errors: 0,
        first_error: None,
    };
    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(f64::from(args.log.producers) / args.rate));
    let window_max = window_records(args);
    let mut window: VecDeque<(Ack, Instant)> = VecDeque::with_capacity(window_max);
    let batch_max = 128usize;
    let mut bufs: Vec<Vec<u8>> = (0..batch_max)
        .map(|_| Vec::with_capacity(args.log.size.max))
        .collect();
    let mut acks = Vec::with_capacity(batch_max);
    // `now`: when the caller last read the clock; None to read it on completion (after a wait).
    let finish =
        |result: &mut ProducerResult, ack: Ack, intended: Instant, now: Option<Instant>| {
            let outcome = if now.is_none() {
                ack.wait_timeout(Duration::from_secs(3600))
            } else {
                ack.try_get()
            };
            match outcome {
                Some(Ok(_)) => {
                    let now = now.unwrap_or_else(Instant::now);
                    record_latency(result, live, start, intended, now);
                    result.acked += 1;
                    None
                }
                Some(Err(e)) => {
                    result.errors += 1;
                    result.first_error.get_or_insert(e.to_string());
                    None
                }
                None => Some((ack, intended)),
            }
        };
    let mut seq = 0u64;
    let partitions = u64::from(args.partitions);
    let mut last_send = start;
    loop {
        if count.is_some_and(|n| seq >= n) || deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let left = count
            .map_or(batch_max as u64, |n| n - seq)
            .min(batch_max as u64) as usize;
        // Paced: wait for the next record's intended time (collecting acknowledgements), then
        // send every record that is due. As fast as possible: a full batch.
        let n = match interval {
            Some(iv) => {
                let due = start + iv.mul_f64(seq as f64);
                let at = due.max(last_send + PACE_TICK);
                while Instant::now() < at {
                    match window.pop_front() {
                        Some((ack, t)) => {
                            let left = at.saturating_duration_since(Instant::now());
                            if ack.wait_timeout(left).is_some() {
                                finish(&mut result, ack, t, None);
                            } else {
                                window.push_front((ack, t));
                            }
                        }
                        None => std::thread::sleep(at.saturating_duration_since(Instant::now())),
                    }
                }
                let due = (start.elapsed().as_secs_f64() / iv.as_secs_f64()) as u64 + 1;
                (due.saturating_sub(seq) as usize).clamp(1, left)
            }
            None => left,
        };
        let sent_at = Instant::now();
        last_send = sent_at;
        for (j, buf) in bufs.iter_mut().take(n).enumerate() {
            let seq = seq + j as u64;
            payload(k, seq, args.log.size.of(k, seq), buf);
        }
        let records = bufs.iter().take(n).enumerate().map(|(j, buf)| {
            let partition = ((seq + j as u64 + u64::from(k)) % partitions) as u32;
            Record::new(buf).partition(partition)
        });
        let sent = producer.send_batch(TOPIC, records, &mut acks);
        for (j, ack) in acks.drain(..).enumerate() {
            let intended =
                interval.map_or(sent_at, |iv| start + iv.mul_f64((seq + j as u64) as f64));
            window.push_back((ack, intended));
        }
        seq += n as u64;
        if let Err(e) = sent {
            result.errors += 1;
            result.first_error.get_or_insert(e.to_string());
            break;
        }
        let now = Instant::now();
        while let Some((ack, t)) = window.pop_front() {
            if let Some(back) = finish(&mut result, ack, t, Some(now)) {
                window.push_front(back);
                break;
            }
        }
        while window.len() >= window_max {
            let (ack, t) = window.pop_front().expect("window is full");
            finish(&mut result, ack, t, None);
        }
    }
    for (ack, t) in window.drain(..) {
        finish(&mut result, ack, t, None);
    }
    result
}

struct Verify {
    checked: u64,
    missing: u64,
    duplicated: u64,
    corrupt: u64,
    out_of_order: u64,
}

fn verify(log: &Log, args: &ProduceArgs, results: &[ProducerResult]) -> Verify {
    let mut v = Verify {
        checked: 0,
        missing: 0,
        duplicated: 0,
        corrupt: 0,
        out_of_order: 0,
    };
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    for p in 0..args.partitions {
        let (earliest, next) = log.offsets(TOPIC, p).expect("load topic partition");
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        let mut offset = earliest;
        while offset < next {
            let records = match log.read(TOPIC, p, offset, 4 << 20) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("verify: reading partition {p} at {offset}: {e}");
                    v.corrupt += 1;
                    break;
                }
            };
            for r in records {
                v.checked += 1;
                offset = r.offset + 1;
                let Some(value) = r.value.filter(|b| b.len() >= HEADER_BYTES) else {
                    v.corrupt += 1;
                    continue;
                };
                let producer = u32::from_le_bytes(value[0..4].try_into().unwrap());
                let seq = u64::from_le_bytes(value[4..12].try_into().unwrap());
                let sum = u64::from_le_bytes(value[12..20].try_into().unwrap());
                if value.len() != args.log.size.of(producer, seq)
                    || sum != checksum(producer, seq, &value[HEADER_BYTES..])
                {
                    v.corrupt += 1;
                    continue;
                }
                if !seen.insert((producer, seq)) {
                    v.duplicated += 1;
                }
                if last_seq
                    .insert(producer, seq)
                    .is_some_and(|prev| prev > seq)
                {
                    v.out_of_order += 1;
                }
            }
        }
    }
    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let found_acked = seen.len() as u64;
    v.missing = acked.saturating_sub(found_acked);
    v
}

/// User plus system CPU time of this process so far (all threads, the library's included).
fn process_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

/// The file system type of the directory holding `path`.
pub fn fs_type(path: &Path) -> String {
    use nix::sys::statfs::statfs;
    let probe = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match statfs(probe) {
        Ok(s) => match s.filesystem_type().0 {
            0xEF53 => "ext4".into(),
            0x5846_5342 => "xfs".into(),
            0x0102_1994 => "tmpfs".into(),
            0x9123_683E => "btrfs".into(),
            0x2FC1_2FC1 => "zfs".into(),
            0x794C_7630 => "overlayfs".into(),
            other => format!("fs-magic-{other:#x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// Machine facts printed with every result.
pub fn env_json(dir: &Path, fs: &str) -> serde_json::Value {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "kernel": kernel,
        "cpu_model": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "file_system": fs,
        "device": block_device(dir),
        "data_dir": dir.display().to_string(),
    })
}

/// The block device holding `dir` (`vda`, `nvme0n1p2`), from its device number, or "".
fn block_device(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Some(dev) = dir
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
    else {
        return String::new();
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log with `n` records in each crash partition, and a journal of their acks.
    fn crash_log(dir: &Path, n: u64) -> (Log, PathBuf) {
        let log = Log::open(crash_config(dir)).unwrap();
        log.create_topic(CRASH_TOPIC, TopicConfig::new(CRASH_PARTITIONS))
            .unwrap();
        let journal = dir.with_extension("acks");
        let mut lines = Vec::new();
        let mut producer = log.producer();
        for seq in 0..n * u64::from(CRASH_PARTITIONS) {
            let value = format!("record {seq}").into_bytes();
            let p = (seq % u64::from(CRASH_PARTITIONS)) as u32;
            let at = producer
                .send(CRASH_TOPIC, Record::new(&value).partition(p))
                .and_then(Ack::wait)
                .unwrap();
            let hash = xxhash_rust::xxh3::xxh3_64(&value);
            lines.extend_from_slice(&journal_record(at.partition, at.offset, hash));
        }
        std::fs::write(&journal, lines).unwrap();
        (log, journal)
    }

    fn append(journal: &Path, record: [u8; JOURNAL_RECORD_BYTES]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(journal)
            .unwrap();
        f.write_all(&record).unwrap();
    }

    #[test]
    fn a_round_checks_new_acks_and_finds_missing_and_changed_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (log, journal) = crash_log(&dir, 50);
        let mut rng = 7u64;
        let mut random = move || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            rng >> 11
        };
        let mut check = CrashCheck::default();
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!(check.acks_checked, 200);
        assert_eq!((check.lost, check.corrupt, check.offset_gaps), (0, 0, 0));
        // A second round checks only what the journal gained: an ack past the partition's end
        // and an ack whose bytes differ from the stored record's.
        append(&journal, journal_record(1, 50, 1));
        append(&journal, journal_record(2, 3, 1));
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!(check.acks_checked, 202);
        assert_eq!((check.lost, check.corrupt), (1, 1));
        // A full check looks at every ack again.
        check.round(&log, &journal, true, &mut random).unwrap();
        assert_eq!(check.acks_checked, 404);
        assert_eq!((check.lost, check.corrupt), (2, 2));
        assert_eq!(check.full_checks, 1);
    }

    #[test]
    fn a_partition_shorter_than_an_earlier_round_read_rechecks_every_ack() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (log, journal) = crash_log(&dir, 40);
        let mut random = || 0;
        let mut check = CrashCheck::default();
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!((check.acks_checked, check.lost), (160, 0));
        drop(log);
        // Records that an earlier round read go missing (what a recovery bug could do): cut
        // the segment in the middle of its frames; recovery keeps a prefix.
        let segment = std::fs::read_dir(dir.join("shard-000"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .expect("a segment file");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(2048)
            .unwrap();
        let log = Log::open(crash_config(&dir)).unwrap();
        // Not a full round, and the journal has nothing new: the shorter partitions make the
        // round check every ack.
        check.round(&log, &journal, false, &mut random).unwrap();
        assert!(check.changed > 0);
        assert!(check.lost > 0, "lost {}", check.lost);
        assert_eq!(check.acks_checked, 320);
    }
}
