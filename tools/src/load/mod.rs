//! The load tool: produce at a target rate (open loop) or as fast as possible, measure
//! acknowledgement latency from each record's intended send time (so a stall is not hidden by
//! coordinated omission), and optionally read everything back to verify it.
//!
//! Payload layout (so corruption, loss and duplication are detectable):
//! `[u32 run][u32 producer][u64 seq][u32 checksum][filler]`, little-endian, where the run is
//! drawn at random for each run of the tool (so a directory written by several runs, killed or
//! not, verifies right) and the checksum is the low half of xxh3_64 of the filler seeded with
//! the record's identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use floodgate::{Durability, IoBackend};

mod consume;
mod crash;
mod env;
mod idle;
mod peak;
mod produce;
mod report;
mod wire;
mod wire_consume;
mod wire_group;
mod wire_peak;
mod wire_produce;

pub(crate) use consume::*;
pub(crate) use crash::*;
pub(crate) use env::*;
pub(crate) use idle::*;
pub(crate) use peak::*;
pub(crate) use produce::*;
pub(crate) use report::*;

pub(crate) const TOPIC: &str = "load";
/// The consumer group of the peak scenario.
pub(crate) const PEAK_GROUP: &str = "peak";
pub(crate) const HEADER_BYTES: usize = 20;

/// A load record's identity: its run, its producer thread and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordId {
    pub(crate) run: u32,
    pub(crate) producer: u32,
    pub(crate) seq: u64,
}

impl RecordId {
    /// A record of this run.
    pub(crate) fn new(producer: u32, seq: u64) -> RecordId {
        RecordId {
            run: run_id(),
            producer,
            seq,
        }
    }

    /// The identity and checksum at the start of a payload, if it is long enough to hold them.
    pub(crate) fn read(value: &[u8]) -> Option<(RecordId, u32)> {
        let word = |at: usize| u64::from_le_bytes(value[at..at + 8].try_into().expect("8 bytes"));
        let half = |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4 bytes"));
        (value.len() >= HEADER_BYTES).then(|| {
            let id = RecordId {
                run: half(0),
                producer: half(4),
                seq: word(8),
            };
            (id, half(16))
        })
    }

    /// Whether `value` is this record's payload: its checksum matches its filler.
    pub(crate) fn checks_out(&self, sum: u32, value: &[u8]) -> bool {
        sum == checksum(*self, &value[HEADER_BYTES..])
    }
}

/// This run's id: drawn once per process from the clock and the process id.
pub(crate) fn run_id() -> u32 {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 40);
        xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) as u32
    })
}

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
    pub(crate) dir: Option<PathBuf>,
    /// Keep the temporary data directory.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Kill-and-check rounds.
    #[arg(long, default_value_t = 20)]
    pub(crate) iterations: u32,
    /// Longest time a child runs before it is killed, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) kill_after_ms_max: u64,
    /// Every this many rounds (and in the last), re-read the whole log and check every
    /// journaled ack again; other rounds read what is new plus a random stretch of older
    /// records per partition (0: only in the last round).
    #[arg(long, default_value_t = 50)]
    pub(crate) full_check_every: u32,
    /// Seed of the kill times (the run prints it).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Print one JSON object on stdout instead of a line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Clone)]
pub struct CrashChildArgs {
    #[arg(long)]
    pub(crate) dir: PathBuf,
    #[arg(long)]
    pub(crate) journal: PathBuf,
    #[arg(long)]
    pub(crate) round: u32,
}

#[derive(Args, Clone)]
pub struct PeakArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// Seconds to run.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) duration: f64,
    /// Records per second over all producers.
    #[arg(long, default_value_t = 500_000.0)]
    pub(crate) produce_rate: f64,
    /// Records per second the consumer drains (exactly, while a backlog lasts).
    #[arg(long, default_value_t = 80_000.0)]
    pub(crate) consume_rate: f64,
    /// Partitions of the load topic.
    #[arg(long, default_value_t = 8)]
    pub(crate) partitions: u32,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) segment_bytes: u64,
    /// Do not rewrite sealed segments of small batches (see
    /// Config::rewrite_sealed_segments; on by default, it waits while the writer is busy).
    #[arg(long)]
    pub(crate) no_rewrite: bool,
    /// Consumer threads: members of the group "peak", sharing --consume-rate.
    #[arg(long, default_value_t = 1)]
    pub(crate) consumers: u32,
    /// Run against this Kafka-protocol broker (`floodgate serve`, Kafka, Redpanda) instead of
    /// an embedded log: one consumer assigned every partition drains at --consume-rate.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) bootstrap: Option<String>,
    /// With --bootstrap: `all` or `1`.
    #[arg(long, default_value = "all")]
    pub(crate) acks: String,
    /// With --bootstrap: the consumers (--consumers) are members of this group, coordinated
    /// by the broker (join, assignment by ranges, heartbeats, commits every second, leave);
    /// without it one consumer is assigned every partition.
    #[arg(long, requires = "bootstrap")]
    pub(crate) group: Option<String>,
    /// With --group: where --consume-rate is held: `server` (set on the group at the broker,
    /// which paces the members' fetches: floodgate serve's `floodgate.rate.msgs.per.sec`),
    /// `client` (each member hands over its share), or `auto` (the broker if it paces groups).
    #[arg(long, default_value = "auto", requires = "group")]
    pub(crate) pacing: String,
    /// With --group: the members' group protocol, `classic` (JoinGroup and SyncGroup, the
    /// first member assigning ranges) or `consumer` (KIP-848: the broker assigns, members
    /// heartbeat at the broker's interval).
    #[arg(long, default_value = "classic", requires = "group",
          value_parser = wire_group::GroupProtocol::parse)]
    pub(crate) group_protocol: wire_group::GroupProtocol,
    /// With --bootstrap: the producers are idempotent (see `load produce --idempotent`).
    #[arg(long, requires = "bootstrap")]
    pub(crate) idempotent: bool,
}

/// Options of the scenarios that write (produce, peak).
#[derive(Args, Clone)]
pub struct LogArgs {
    /// Data directory (default: a fresh temporary directory, removed at exit unless --keep).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Keep the temporary data directory.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Record value size in bytes (at least 20): fixed (`100`) or uniformly distributed over
    /// an inclusive range (`64..4096`; each record's size follows from its producer and
    /// sequence number, so --verify checks it).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    pub(crate) size: Size,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: u32,
    /// `sync` or `interval:MS`.
    #[arg(long, default_value = "sync")]
    pub(crate) durability: String,
    /// Shards (writer threads).
    #[arg(long, default_value_t = 1)]
    pub(crate) shards: usize,
    /// I/O backend: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring")]
    pub(crate) backend: String,
    /// Check every record: read everything back afterwards.
    #[arg(long)]
    pub(crate) verify: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
    /// Draw throughput, backlog and ack latency over time into this SVG file.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    /// Data directory written by `floodgate load produce --keep` or `peak --keep`.
    #[arg(
        long,
        required_unless_present = "bootstrap",
        conflicts_with = "bootstrap"
    )]
    pub(crate) dir: Option<PathBuf>,
    /// Consume the load topic from this Kafka-protocol broker (`floodgate serve`, Kafka,
    /// Redpanda) instead of a data directory: one consumer assigned every partition.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) bootstrap: Option<String>,
    /// Records per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) consume_rate: f64,
    /// Shards the directory was created with.
    #[arg(long, default_value_t = 1)]
    pub(crate) shards: usize,
    /// I/O backend: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring")]
    pub(crate) backend: String,
    /// Check every consumed record.
    #[arg(long)]
    pub(crate) verify: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Consume as a member of this consumer group: start at its committed offsets, commit
    /// as it goes, and apply --consume-rate to the group.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// With --group, commit every this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) commit_interval_ms: u64,
    /// Consumer threads (more than one: members of --group sharing the partitions).
    #[arg(long, default_value_t = 1)]
    pub(crate) consumers: u32,
    /// With --group, append each commit's `partition offset` lines to this file (for crash
    /// tests: what was committed before a kill).
    #[arg(long, hide = true)]
    pub(crate) commit_journal: Option<PathBuf>,
    /// With --bootstrap, the most bytes one fetch asks for (Kafka's `fetch.max.bytes`).
    #[arg(long, default_value_t = 50 << 20, value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) fetch_max_bytes: i32,
    /// With --bootstrap, the most bytes one fetch asks of each partition (Kafka's
    /// `max.partition.fetch.bytes`).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(i32).range(1..))]
    pub(crate) partition_fetch_max_bytes: i32,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
}

/// The device baseline of the scenarios that report bandwidth.
#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// First measure the device's O_DIRECT sequential write and read bandwidth on the data
    /// directory (io_uring, 1 MiB blocks, 4 in flight, like fio) and report the load's MB/s as
    /// ratios of it.
    #[arg(long)]
    pub(crate) compare_device: bool,
    /// Bytes the device measurement writes and reads.
    #[arg(long, default_value_t = 2 << 30)]
    pub(crate) compare_device_bytes: u64,
}

impl DeviceArgs {
    /// The baseline on `dir`, if asked for. Call it before the log opens: the log's helper
    /// zero-fills a segment at start, which would share the disk with the measurement.
    fn measure(&self, dir: &Path) -> CliResult<Option<floodgate::DeviceBaseline>> {
        self.compare_device
            .then(|| {
                floodgate::measure_device(dir, self.compare_device_bytes).map_err(CliError::from)
            })
            .transpose()
    }
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    /// Data directory (default: a fresh temporary directory, removed at exit).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// How long to stay idle, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Shards (writer threads).
    #[arg(long, default_value_t = 1)]
    pub(crate) shards: usize,
    /// Print one JSON object on stdout instead of a line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// Number of records to produce (default 1,000,000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    pub(crate) messages: Option<u64>,
    /// Produce for this many seconds.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Partitions of the load topic.
    #[arg(long, default_value_t = 1)]
    pub(crate) partitions: u32,
    /// Target rate in records per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) segment_bytes: u64,
    /// Largest group-commit write in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub(crate) commit_bytes_max: usize,
    /// Do not zero-fill segments ahead of the writer (see Config::segment_prezero).
    #[arg(long)]
    pub(crate) no_prezero: bool,
    /// Do not rewrite sealed segments of small batches (see Config::rewrite_sealed_segments).
    /// With the rewrite, `load produce` waits for the rewrites before it ends, and reports how
    /// long that took.
    #[arg(long)]
    pub(crate) no_rewrite: bool,
    /// Do not pin shard writer threads, nor producer threads, to cores.
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// Leave producer threads to the scheduler while the writers are pinned (`load peak`).
    #[arg(skip)]
    pub(crate) producers_free: bool,
    /// Memory per shard for its newest commits and recent reads (0: no read cache).
    #[arg(long, default_value_t = floodgate::config::TAIL_CACHE_BYTES_DEFAULT)]
    pub(crate) tail_cache_bytes: usize,
    /// Bytes of records each producer thread keeps unacknowledged, as Kafka's
    /// `buffer.memory` (32 MiB): past it the thread waits for its oldest ack (at most 2^20
    /// records). Paced producers rarely come near it.
    #[arg(long, default_value_t = WINDOW_BYTES_DEFAULT)]
    pub(crate) window_bytes: usize,
    /// Produce to this Kafka-protocol broker (`floodgate serve`, Kafka, Redpanda) instead of
    /// an embedded log: the load topic is created with --partitions if it is missing, and the
    /// options of the embedded log (directory, shards, durability, ...) are the broker's.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) bootstrap: Option<String>,
    /// With --bootstrap: `all` (every replica has it, under the broker's durability) or `1`.
    #[arg(long, default_value = "all")]
    pub(crate) acks: String,
    /// With --bootstrap: send a connection's waiting records this long after the oldest of
    /// them at the latest (Kafka's `linger.ms`; 0: as soon as a request may go out).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) linger_ms: f64,
    /// With --bootstrap: send a connection's waiting records once they reach this many bytes
    /// (all its partitions' batches in one request).
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) request_bytes: usize,
    /// With --bootstrap: produce requests a connection keeps waiting for responses at most
    /// (Kafka's `max.in.flight.requests.per.connection`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) in_flight: u32,
    /// With --bootstrap: produce as an idempotent producer (Kafka's `enable.idempotence`): a
    /// producer id from InitProducerId for each producer thread, each batch numbered in its
    /// partition; at most 5 requests in flight.
    #[arg(long)]
    pub(crate) idempotent: bool,
    /// Records in each producer's ring into a shard (`Config::ring_records`; the library's
    /// default is 16,384): a larger ring lets the writer take more records per commit (see
    /// docs/TUNING.md).
    #[arg(long, default_value_t = LOAD_RING_RECORDS)]
    pub(crate) ring_records: usize,
}

pub fn run(scenario: Scenario) -> CliResult {
    if matches!(scenario, Scenario::CrashChild(_)) {
        // Killed by its parent; Ctrl-C reaches it too.
        unblock_interrupts();
    } else {
        handle_interrupts();
    }
    match scenario {
        Scenario::Produce(args) => produce(args),
        Scenario::Idle(args) => idle(args),
        Scenario::Peak(args) => peak(args),
        Scenario::Consume(args) => consume(args),
        Scenario::Crash(args) => crash(args),
        Scenario::CrashChild(args) => crash_child(args),
    }
}

pub(crate) fn parse_durability(s: &str) -> Result<Durability, String> {
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

pub(crate) fn parse_backend(s: &str) -> Result<IoBackend, String> {
    match s {
        "io_uring" | "uring" => Ok(IoBackend::IoUring),
        "portable" => Ok(IoBackend::Portable),
        _ => Err(format!("--backend {s:?}: use io_uring or portable")),
    }
}

/// The data directory: the given one, or a fresh one on a disk-backed file system.
/// The run's temporary data directory, and whether to keep it, for an interrupted run.
static TEMPORARY_DIR: std::sync::Mutex<Option<(PathBuf, bool)>> = std::sync::Mutex::new(None);

/// SIGINT and SIGTERM go to a thread of their own (blocked in every other thread, which
/// inherit the mask from this one): it removes the run's temporary data directory (unless
/// `--keep`), says so, and ends the process with the shell's code for an interrupt.
fn handle_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("floodgate-signals".into())
        .spawn(move || {
            let Ok(signal) = set.wait() else {
                return;
            };
            let dir = TEMPORARY_DIR
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match dir {
                Some((dir, false)) => match remove_while_running(&dir) {
                    Ok(()) => eprintln!(
                        "floodgate: {signal}: stopped; removed the temporary data directory {}",
                        dir.display()
                    ),
                    Err(e) => eprintln!(
                        "floodgate: {signal}: stopped; could not remove the temporary data \
                         directory {}: {e}",
                        dir.display()
                    ),
                },
                Some((dir, true)) => eprintln!(
                    "floodgate: {signal}: stopped; kept the data directory {}",
                    dir.display()
                ),
                None => eprintln!("floodgate: {signal}: stopped"),
            }
            std::process::exit(128 + signal as i32);
        });
    if spawned.is_err() {
        unblock_interrupts();
    }
}

/// Removes a data directory that the log's threads may still be adding files to (the run
/// goes on until the process exits): a file made after `remove_dir_all` listed its folder
/// makes that fail, so it tries again a few times.
fn remove_while_running(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries > 0 => return Ok(()),
            Err(_) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

/// SIGINT and SIGTERM act as usual on this thread (and those it starts).
fn unblock_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    let _ = set.thread_unblock();
}

pub(crate) fn data_dir(
    dir: Option<&PathBuf>,
    keep: bool,
) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    if let Some(d) = dir {
        let fs = fs_type(d);
        if fs == "tmpfs" || fs == "ramfs" {
            eprintln!(
                "warning: {} is on {fs}: nothing there survives a reboot, and its figures are \
                 memory's, not a disk's",
                d.display()
            );
        }
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
    *TEMPORARY_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((tmp.path().to_owned(), keep));
    Ok((tmp.path().to_owned(), Some(tmp)))
}

/// Record value sizes: fixed, or uniform over `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

/// The largest record value the load tool sends: the library's default largest record, less
/// room for the record's key (8 bytes) and its varint framing.
const SIZE_MAX: usize = floodgate::config::RECORD_BYTES_MAX_DEFAULT - 64;

pub(crate) fn parse_size(s: &str) -> Result<Size, String> {
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
    if max > SIZE_MAX {
        return Err(format!(
            "--size {max} is larger than a record may be: at most {SIZE_MAX} bytes (the log's \
             largest record, {} bytes, less the record's key and framing)",
            floodgate::config::RECORD_BYTES_MAX_DEFAULT
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

pub(crate) fn payload(id: RecordId, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(size, 0);
    out[0..4].copy_from_slice(&id.run.to_le_bytes());
    out[4..8].copy_from_slice(&id.producer.to_le_bytes());
    out[8..16].copy_from_slice(&id.seq.to_le_bytes());
    // Filler that differs per record and costs little to make: a word pattern seeded by the
    // record, so a payload swapped for another record's fails its checksum.
    let seed = id.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(id.producer)
        ^ (u64::from(id.run) << 32);
    let mut words = out[HEADER_BYTES..].chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes());
    }
    let rest = words.into_remainder();
    let last = seed.to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    let sum = checksum(id, &out[HEADER_BYTES..]);
    out[16..20].copy_from_slice(&sum.to_le_bytes());
}

pub(crate) fn checksum(id: RecordId, filler: &[u8]) -> u32 {
    let seed = ((u64::from(id.run) << 32) | u64::from(id.producer)) ^ id.seq.rotate_left(29);
    xxhash_rust::xxh3::xxh3_64_with_seed(filler, seed) as u32
}
