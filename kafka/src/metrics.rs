//! The server's counters, and `/metrics` in Prometheus' text format on their own listener:
//! requests and errors by API, connections, records and bytes in and out by topic, produce ack
//! and fetch latency histograms, and from the log each partition's offsets, each shard's
//! writes, flushes, segment rolls and state, and the data directory's disk space.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Histogram bucket bounds, in microseconds.
const BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A latency histogram with Prometheus' cumulative buckets.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Records and bytes of one topic, in (produced) or out (fetched).
#[derive(Default, Clone, Copy)]
struct Flow {
    records_in: u64,
    bytes_in: u64,
    records_out: u64,
    bytes_out: u64,
}

/// Counters the network threads update.
pub(crate) struct Metrics {
    /// Requests and requests that failed (closed the connection, or answered with an error),
    /// by API key.
    requests: [AtomicU64; API_KEYS],
    errors: [AtomicU64; API_KEYS],
    topics: Mutex<BTreeMap<String, Flow>>,
    pub produce_ack: Histogram,
    pub fetch: Histogram,
}

const API_KEYS: usize = 128;

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            topics: Mutex::default(),
            produce_ack: Histogram::default(),
            fetch: Histogram::default(),
        }
    }
}

impl Metrics {
    pub fn request(&self, key: ApiKey) {
        if let Some(c) = self.requests.get(key as i16 as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn error(&self, key: ApiKey) {
        if let Some(c) = self.errors.get(key as i16 as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records and bytes produced to `topic`.
    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let flow = topics.entry(topic.to_owned()).or_default();
        flow.records_in += records;
        flow.bytes_in += bytes;
    }

    /// Records and bytes fetched from `topic`.
    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let flow = topics.entry(topic.to_owned()).or_default();
        flow.records_out += records;
        flow.bytes_out += bytes;
    }

    /// The text of `/metrics`.
    pub fn render(
        &self,
        log: &floodgate::Log,
        connections: usize,
        coordinator: &crate::groups::Coordinator,
    ) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "floodgate_requests_total",
            "Kafka requests received, by API.",
        );
        for (k, n) in self.requests.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if let (true, Ok(key)) = (n > 0, ApiKey::try_from(k as i16)) {
                let _ = writeln!(out, "floodgate_requests_total{{api=\"{key:?}\"}} {n}");
            }
        }
        counter(
            &mut out,
            "floodgate_request_errors_total",
            "Kafka requests that closed their connection or were answered with an error, by API.",
        );
        for (k, n) in self.errors.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if let (true, Ok(key)) = (n > 0, ApiKey::try_from(k as i16)) {
                let _ = writeln!(out, "floodgate_request_errors_total{{api=\"{key:?}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP floodgate_connections Open client connections.\n\
             # TYPE floodgate_connections gauge\nfloodgate_connections {connections}"
        );
        let topics = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, help, get) in [
            (
                "floodgate_records_in_total",
                "Records produced, by topic.",
                0,
            ),
            (
                "floodgate_bytes_in_total",
                "Record batch bytes produced, by topic.",
                1,
            ),
            (
                "floodgate_records_out_total",
                "Records fetched, by topic.",
                2,
            ),
            (
                "floodgate_bytes_out_total",
                "Record batch bytes fetched, by topic.",
                3,
            ),
        ] {
            counter(&mut out, name, help);
            for (topic, f) in &topics {
                let n = [f.records_in, f.bytes_in, f.records_out, f.bytes_out][get];
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {n}", escape(topic));
            }
        }
        self.produce_ack.render(
            &mut out,
            "floodgate_produce_ack_seconds",
            "Produce requests, from received to answered (acks=1 and all).",
        );
        self.fetch.render(
            &mut out,
            "floodgate_fetch_seconds",
            "Fetch requests, from received to answered (long polls included).",
        );
        render_log(&mut out, log);
        render_groups(&mut out, log, coordinator);
        out
    }
}

/// Each consumer group's lag on every topic it committed on, its members here, and for a
/// paced group its rate and the time its lag takes to drain at that rate.
fn render_groups(out: &mut String, log: &floodgate::Log, coordinator: &crate::groups::Coordinator) {
    let mut names = log.list_groups();
    names.extend(coordinator.list().into_iter().map(|(n, ..)| n));
    names.sort();
    names.dedup();
    let (mut lags, mut members, mut rates, mut drains) =
        (String::new(), String::new(), String::new(), String::new());
    for group in &names {
        let g = escape(group);
        let mut topics: Vec<String> = (log.group_offsets(group).into_iter())
            .map(|o| o.topic)
            .collect();
        topics.dedup();
        let mut total = 0u64;
        for topic in &topics {
            if let Ok(lag) = log.group_lag(group, topic) {
                total += lag.lag;
                let t = escape(topic);
                let _ = writeln!(
                    lags,
                    "floodgate_group_lag_records{{group=\"{g}\",topic=\"{t}\"}} {}",
                    lag.lag
                );
            }
        }
        let n = coordinator.member_count(group);
        let _ = writeln!(members, "floodgate_group_members{{group=\"{g}\"}} {n}");
        if let Some(r) = coordinator.rate(group).and_then(|l| l.msgs_per_s) {
            let _ = writeln!(
                rates,
                "floodgate_group_rate_records_per_second{{group=\"{g}\"}} {r}"
            );
            let drain = total as f64 / r;
            let _ = writeln!(
                drains,
                "floodgate_group_time_to_drain_seconds{{group=\"{g}\"}} {drain}"
            );
        }
    }
    for (name, help, body) in [
        (
            "floodgate_group_lag_records",
            "Records stored and not yet committed by each group, by topic.",
            lags,
        ),
        (
            "floodgate_group_members",
            "Members of each group connected now.",
            members,
        ),
        (
            "floodgate_group_rate_records_per_second",
            "A paced group's rate.",
            rates,
        ),
        (
            "floodgate_group_time_to_drain_seconds",
            "A paced group's lag at its rate.",
            drains,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{body}");
    }
}

/// The log's own figures: partitions' offsets, shards' counters and states, disk space.
fn render_log(out: &mut String, log: &floodgate::Log) {
    let _ = writeln!(
        out,
        "# HELP floodgate_partition_end_offset The next offset of each partition.\n\
         # TYPE floodgate_partition_end_offset gauge"
    );
    let mut starts = String::new();
    for t in log.list_topics() {
        for p in 0..t.partitions {
            if let Ok((earliest, next)) = log.offsets(&t.name, p) {
                let labels = format!("topic=\"{}\",partition=\"{p}\"", escape(&t.name));
                let _ = writeln!(out, "floodgate_partition_end_offset{{{labels}}} {}", next.0);
                let _ = writeln!(
                    starts,
                    "floodgate_partition_start_offset{{{labels}}} {}",
                    earliest.0
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP floodgate_partition_start_offset The earliest stored offset of each partition.\n\
         # TYPE floodgate_partition_start_offset gauge\n{starts}"
    );
    let stats = log.stats();
    for (name, help, get) in [
        (
            "floodgate_shard_records_total",
            "Records the shard's writer committed.",
            0,
        ),
        (
            "floodgate_shard_write_bytes_total",
            "Bytes the shard's writer wrote.",
            1,
        ),
        (
            "floodgate_shard_flushes_total",
            "Flushes (fdatasync) the shard's writer issued.",
            2,
        ),
        (
            "floodgate_shard_segment_rolls_total",
            "Segments the shard's writer rolled into.",
            3,
        ),
        (
            "floodgate_shard_read_disk_bytes_total",
            "Bytes readers read from disk.",
            4,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (s, st) in stats.iter().enumerate() {
            let n = [
                st.records,
                st.write_bytes,
                st.flushes,
                st.rolls,
                st.read_disk_bytes,
            ][get];
            let _ = writeln!(out, "{name}{{shard=\"{s}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP floodgate_shard_up 1 while the shard accepts writes, 0 once it failed.\n\
         # TYPE floodgate_shard_up gauge"
    );
    let states = log.shard_states();
    for (s, st) in states.iter().enumerate() {
        let _ = writeln!(
            out,
            "floodgate_shard_up{{shard=\"{s}\"}} {}",
            u8::from(st.failed.is_none())
        );
    }
    let _ = writeln!(
        out,
        "# HELP floodgate_shard_full 1 while the shard's disk cap holds producers back.\n\
         # TYPE floodgate_shard_full gauge"
    );
    for (s, st) in states.iter().enumerate() {
        let _ = writeln!(
            out,
            "floodgate_shard_full{{shard=\"{s}\"}} {}",
            u8::from(st.full)
        );
    }
    if let Some((used, free)) = disk_space(log.config().dir()) {
        let _ = writeln!(
            out,
            "# HELP floodgate_disk_used_bytes Bytes in the data directory.\n\
             # TYPE floodgate_disk_used_bytes gauge\nfloodgate_disk_used_bytes {used}\n\
             # HELP floodgate_disk_free_bytes Bytes free on its file system.\n\
             # TYPE floodgate_disk_free_bytes gauge\nfloodgate_disk_free_bytes {free}"
        );
    }
}

/// (bytes the files under `dir` take, bytes free on its file system).
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &std::path::Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    }
    let free = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = free.blocks_available() * free.fragment_size();
    Some((walk(dir), free))
}

/// A label value with Prometheus' escapes.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` over HTTP/1.1 on `listener` until the server stops: one response per
/// connection, then it closes.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: std::sync::Arc<crate::Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floodgate serve: cannot serve /metrics: {e}");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let shared = std::sync::Arc::clone(&shared);
        tokio::task::spawn_local(async move {
            // The request line is all that matters; a request head is read up to 8 KiB.
            let mut head = vec![0u8; 8 << 10];
            let mut n = 0;
            while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head[n..]));
                match read.await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let line = head[..n].split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") {
                let connections = shared.connections.load(Ordering::Relaxed);
                let body = shared
                    .metrics
                    .render(&shared.log, connections, &shared.coordinator);
                ("200 OK", body)
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
