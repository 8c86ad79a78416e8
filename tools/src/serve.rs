//! `floodgate serve`: opens a log and serves it over the Kafka protocol
//! (`floodgate_kafka::Server`) until SIGINT or SIGTERM, then stops accepting, answers what is
//! in flight and closes the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use floodgate::{Config, Durability, IoBackend, Log, RateLimit};
use floodgate_kafka::{
    GroupTimeouts, MAX_CONNECTIONS_DEFAULT, MAX_REQUEST_BYTES_DEFAULT, Server, ServerConfig,
};

use crate::error::CliResult;
use crate::load::{parse_backend, parse_durability};

#[derive(Args)]
pub struct ServeArgs {
    /// A JSON object of these options by name (`{"listen": "0.0.0.0:9092", "shards": 2}`),
    /// read first: options on the command line override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory (created if missing).
    #[arg(long, default_value = "./floodgate-data")]
    dir: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Where /metrics (Prometheus' text format) is served; `none` for nowhere.
    #[arg(long, default_value = "127.0.0.1:9644", value_parser = parse_metrics_listen)]
    metrics_listen: MetricsListen,
    /// The HOST:PORT clients are told to connect to (default: the listening address).
    #[arg(long, value_parser = parse_host_port)]
    advertised: Option<(String, u16)>,
    /// Create topics that clients name and that do not exist (`true` or `false`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    #[arg(long, default_value_t = 1)]
    default_partitions: u32,
    /// The largest request accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, default_value_t = MAX_REQUEST_BYTES_DEFAULT)]
    max_request_bytes: usize,
    /// Connections open at once.
    #[arg(long, default_value_t = MAX_CONNECTIONS_DEFAULT)]
    max_connections: usize,
    /// Network threads (event loops), kept off the writers' cores.
    #[arg(long, default_value_t = 1)]
    network_threads: usize,
    /// Shards (writer threads) of a new log.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// I/O backend: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring", value_parser = parse_backend)]
    backend: IoBackend,
    /// When a produce is acknowledged (acks=1 and acks=all alike): `sync`, once its records
    /// are on stable storage (written and flushed); or `interval:MS`, once written, with a
    /// flush at least every MS milliseconds (what a crash of the machine may lose).
    #[arg(long, default_value = "sync", value_parser = parse_durability)]
    durability: Durability,
    /// Do not zero-fill segments ahead of the writer (Config::segment_prezero): commits into
    /// fresh blocks flush more slowly, but the disk writes each segment once and the helper
    /// thread's CPU is free (for loads bound by throughput rather than ack latency).
    #[arg(long)]
    no_prezero: bool,
    /// Do not rewrite sealed segments of small batches (Config::rewrite_sealed_segments: a
    /// thread per shard puts each partition's records of a sealed segment together, while
    /// the writer is not busy).
    #[arg(long)]
    no_rewrite: bool,
    /// How long a new (or emptied) consumer group's first rebalance waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3000)]
    group_initial_rebalance_delay_ms: u64,
    /// The shortest session timeout a group member may ask for (group.min.session.timeout.ms).
    #[arg(long, default_value_t = 6000)]
    group_min_session_timeout_ms: u64,
    /// The longest (group.max.session.timeout.ms).
    #[arg(long, default_value_t = 1_800_000)]
    group_max_session_timeout_ms: u64,
    /// How often members of consumer-protocol groups (`group.protocol=consumer`) heartbeat,
    /// so how soon they take partitions a leaving member freed
    /// (group.consumer.heartbeat.interval.ms; Kafka's default is 5000).
    #[arg(long, default_value_t = 1000)]
    group_consumer_heartbeat_interval_ms: u64,
    /// A consumer-protocol member silent this long is removed
    /// (group.consumer.session.timeout.ms).
    #[arg(long, default_value_t = 45000)]
    group_consumer_session_timeout_ms: u64,
    /// How long a partition remembers an idle idempotent producer (Kafka's
    /// producer.id.expiration.ms): a retry after that is stored again. Default: 1 day.
    #[arg(long, default_value_t = 86_400_000)]
    producer_id_expiration_ms: u64,
    /// Paces a consumer group: GROUP=MSGS, records per second its members' fetches take
    /// together (repeat for more groups; changed at runtime through IncrementalAlterConfigs,
    /// config floodgate.rate.msgs.per.sec).
    #[arg(long, value_parser = parse_group_rate)]
    group_rate: Vec<(String, f64)>,
    /// Paces a consumer group by bytes: GROUP=BYTES per second of stored batches
    /// (floodgate.rate.bytes.per.sec).
    #[arg(long, value_parser = parse_group_rate)]
    group_byte_rate: Vec<(String, f64)>,
}

fn parse_group_rate(s: &str) -> Result<(String, f64), String> {
    let (group, rate) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: use GROUP=RATE"))?;
    floodgate::validate_group_name(group).map_err(|e| e.to_string())?;
    match rate.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok((group.to_owned(), r)),
        _ => Err(format!("{s:?}: the rate must be a positive number")),
    }
}

/// The groups' limits from `--group-rate` and `--group-byte-rate`.
fn group_rates(msgs: &[(String, f64)], bytes: &[(String, f64)]) -> Vec<(String, RateLimit)> {
    let mut limits: Vec<(String, RateLimit)> = Vec::new();
    let mut set =
        |group: &str, f: &dyn Fn(&mut RateLimit)| match limits.iter_mut().find(|(g, _)| g == group)
        {
            Some((_, l)) => f(l),
            None => {
                let mut l = RateLimit::default();
                f(&mut l);
                limits.push((group.to_owned(), l));
            }
        };
    for (g, r) in msgs {
        set(g, &|l| l.msgs_per_s = Some(*r));
    }
    for (g, r) in bytes {
        set(g, &|l| l.bytes_per_s = Some(*r));
    }
    limits
}

/// `--metrics-listen`: an address, or none.
#[derive(Clone, Copy)]
struct MetricsListen(Option<SocketAddr>);

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    match s {
        "none" => Ok(MetricsListen(None)),
        _ => s
            .parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|_| format!("--metrics-listen {s:?}: use HOST:PORT or none")),
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("--advertised {s:?}: use HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("--advertised {s:?}: the port is not a number"))?;
    Ok((host.to_owned(), port))
}

pub fn run(args: ServeArgs) -> CliResult {
    use nix::sys::signal::{SigSet, Signal};
    // Blocked before any thread starts, so every thread inherits the mask and the signals
    // wait for `wait` below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| format!("blocking SIGINT and SIGTERM: {e}"))?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let config = Config::new(&args.dir)
        .shards(args.shards)
        .io_backend(args.backend)
        .durability(args.durability)
        .rewrite_sealed_segments(!args.no_rewrite)
        .segment_prezero(!args.no_prezero)
        .producer_id_expiry(Duration::from_millis(args.producer_id_expiration_ms));
    let log = Arc::new(Log::open(config)?);
    let mut server_config = ServerConfig::new(args.listen);
    server_config.advertised = args.advertised;
    server_config.auto_create_topics = args.auto_create_topics;
    server_config.default_partitions = args.default_partitions;
    server_config.max_request_bytes = args.max_request_bytes;
    server_config.max_connections = args.max_connections;
    server_config.network_threads = args.network_threads;
    server_config.cores = log.other_cores().to_vec();
    server_config.metrics_listen = args.metrics_listen.0;
    server_config.groups = GroupTimeouts {
        initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
        min_session: Duration::from_millis(args.group_min_session_timeout_ms),
        max_session: Duration::from_millis(args.group_max_session_timeout_ms),
        consumer_heartbeat_interval: Duration::from_millis(
            args.group_consumer_heartbeat_interval_ms,
        ),
        consumer_session: Duration::from_millis(args.group_consumer_session_timeout_ms),
    };
    server_config.group_rates = group_rates(&args.group_rate, &args.group_byte_rate);
    let server = Server::start(Arc::clone(&log), server_config).map_err(|e| {
        format!(
            "listening on {} (or the metrics' address): {e}",
            args.listen
        )
    })?;
    let metrics = server
        .metrics_addr()
        .map_or_else(|| "none".to_owned(), |a| format!("http://{a}/metrics"));
    eprintln!(
        "floodgate {} serving {} on {} (Kafka protocol; metrics {metrics}; {} shard(s), {} \
         network thread(s), io {}, durability {})",
        env!("CARGO_PKG_VERSION"),
        args.dir.display(),
        server.local_addr(),
        args.shards,
        args.network_threads,
        args.backend.name(),
        durability_name(args.durability),
    );
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!("floodgate: {signal}: stopping");
    server.shutdown();
    let log = Arc::into_inner(log).ok_or("the log is still in use after the server stopped")?;
    log.close()?;
    eprintln!("floodgate: stopped; the log is closed");
    Ok(())
}

/// `floodgate serve ... --config FILE ...` with the file's options put right after `serve`,
/// so that options on the command line, which come later, override them. Other commands pass
/// as they are.
pub fn expand_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    if args.get(1).is_none_or(|a| a != "serve") {
        return Ok(args);
    }
    let at = args.iter().position(|a| a == "--config");
    let (at, path) = match at {
        Some(at) => match args.get(at + 1) {
            Some(p) => (at, PathBuf::from(p)),
            None => return Err("--config needs a file".into()),
        },
        None => return Ok(args),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("--config {}: not JSON: {e}", path.display()))?;
    let serde_json::Value::Object(options) = value else {
        return Err(format!(
            "--config {}: not a JSON object of options",
            path.display()
        ));
    };
    let mut flags = Vec::new();
    for (name, value) in options {
        if name == "config" {
            return Err(format!(
                "--config {}: a config file cannot name another",
                path.display()
            ));
        }
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "--config {}: option {name:?} has the value {other}, not a string, number or boolean",
                    path.display()
                ));
            }
        };
        flags.push(format!("--{}", name.replace('_', "-")).into());
        flags.push(value.into());
    }
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        if i == at || i == at + 1 {
            continue;
        }
        out.push(a);
        if i == 1 {
            out.append(&mut flags);
        }
    }
    Ok(out)
}

/// `--durability` as it is given.
fn durability_name(d: Durability) -> String {
    match d {
        Durability::Sync => "sync".to_owned(),
        Durability::Interval(t) => format!("interval:{}", t.as_millis()),
    }
}
