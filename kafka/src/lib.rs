//! The Kafka wire protocol in front of a floodgate [`Log`]: producers and consumers in other
//! processes and languages (librdkafka, the Java client, kcat, every Kafka tool) use the log
//! unmodified, as one broker that is also its own controller.
//!
//! What it owns: a listening socket and the network threads. Each network thread runs one
//! event loop (a single-threaded tokio runtime) and is never one of the log's writer cores: a
//! writer's ack latency suffers from anything else on its core. The first thread accepts
//! connections and hands them out round robin. A connection's requests are read one after
//! another, each handled as its own task, and answered in the order they came (pipelining:
//! a Produce waiting for its ack does not hold back the reading of the next request).
//!
//! What it hands on: a Produce's batches go to the partitions' shard rings as the client
//! encoded them ([`floodgate::Producer::try_append_batch`]) and are answered once the log
//! acknowledges them (durable under the log's durability); a Fetch sends the stored batches
//! as they are ([`Log::read_batches`]), long-polling on the shards' publishes.
//!
//! Bad input never takes the server down: a request larger than
//! [`ServerConfig::max_request_bytes`] is refused before it is buffered, and a malformed or
//! unknown request closes its connection with a logged reason.

mod apis;
mod assignors;
mod bounds;
mod conn;
mod consumer_groups;
mod groups;
mod metrics;
mod pace;
mod versions;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use floodgate::Log;
use tokio::sync::{mpsc, watch};

pub use apis::check_request;
pub use groups::GroupTimeouts;
pub use versions::SUPPORTED_APIS;

/// How the server listens and behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The host and port clients are told to connect to (Metadata's broker); the listening
    /// address if `None`.
    pub advertised: Option<(String, u16)>,
    /// Network threads (event loops).
    pub network_threads: usize,
    /// The largest request accepted (Kafka's `socket.request.max.bytes`); a larger one closes
    /// its connection before its bytes are read.
    pub max_request_bytes: usize,
    /// Connections open at once; more are closed as they come.
    pub max_connections: usize,
    /// Create a topic that a Metadata request or a Produce names and that does not exist
    /// (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// The partition count of auto-created topics (Kafka's `num.partitions`).
    pub default_partitions: u32,
    /// Cores the network threads may run on (the log's writer cores excluded); any if empty.
    pub cores: Vec<usize>,
    /// Where `/metrics` (Prometheus' text format) is served over HTTP; nowhere if `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// The group coordinator's timing (Kafka's defaults).
    pub groups: GroupTimeouts,
    /// Consumer groups paced from the start: together their members' fetches take at most
    /// this rate (changed at runtime through IncrementalAlterConfigs on the group).
    pub group_rates: Vec<(String, floodgate::RateLimit)>,
}

/// Kafka's `socket.request.max.bytes`.
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 100 << 20;
/// Connections open at once by default.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;

/// Threads per network thread that read fetches' batches (a read may wait for the disk; the
/// event loop goes on meanwhile). More fetches than this wait for one to finish.
const BLOCKING_THREADS: usize = 4;

impl ServerConfig {
    /// Defaults: one network thread, Kafka's limits, auto-created topics of one partition.
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            advertised: None,
            network_threads: 1,
            max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            auto_create_topics: true,
            default_partitions: 1,
            cores: Vec::new(),
            metrics_listen: None,
            groups: GroupTimeouts::default(),
            group_rates: Vec::new(),
        }
    }
}

/// A running server. [`Server::shutdown`] stops it; dropping it does too.
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    coordinator: Arc<groups::Coordinator>,
}

/// What every network thread shares.
pub(crate) struct Shared {
    pub log: Arc<Log>,
    pub config: ServerConfig,
    /// The broker as Metadata names it.
    pub advertised: (String, u16),
    pub connections: AtomicUsize,
    pub metrics: metrics::Metrics,
    pub coordinator: Arc<groups::Coordinator>,
}

impl Server {
    /// Binds the listening socket (so a taken port is an error here) and starts the network
    /// threads on `log`.
    pub fn start(log: Arc<Log>, config: ServerConfig) -> io::Result<Server> {
        if config.network_threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one network thread is needed",
            ));
        }
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let advertised = config
            .advertised
            .clone()
            .unwrap_or_else(|| (local_addr.ip().to_string(), local_addr.port()));
        let coordinator = groups::Coordinator::new(config.groups, &config.group_rates);
        let shared = Arc::new(Shared {
            log,
            coordinator: Arc::clone(&coordinator),
            config,
            advertised,
            connections: AtomicUsize::new(0),
            metrics: metrics::Metrics::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..shared.config.network_threads {
            let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
            inboxes.push(tx);
            receivers.push(rx);
        }
        let mut listener = Some((listener, metrics_listener));
        let mut threads = vec![coordinator.start()?];
        for (i, inbox) in receivers.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let stopped = stopped.clone();
            let accept = listener.take().map(|(l, m)| (l, m, inboxes.clone()));
            let thread = std::thread::Builder::new()
                .name(format!("floodgate-net-{i}"))
                .spawn(move || network_thread(i, shared, inbox, accept, stopped))?;
            threads.push(thread);
        }
        Ok(Server {
            local_addr,
            metrics_addr,
            stop,
            threads,
            coordinator,
        })
    }

    /// The address it listens on (the port chosen, when asked to listen on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, answers the requests in flight, closes the connections and waits for
    /// the network threads to end.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        let _ = self.stop.send(true);
        self.coordinator.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn network_thread(
    index: usize,
    shared: Arc<Shared>,
    mut inbox: mpsc::UnboundedReceiver<std::net::TcpStream>,
    accept: Option<(
        std::net::TcpListener,
        Option<std::net::TcpListener>,
        Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    )>,
    mut stopped: watch::Receiver<bool>,
) {
    if !shared.config.cores.is_empty() {
        floodgate::cores::pin(&shared.config.cores);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name(format!("floodgate-fetch-{index}"))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floodgate serve: network thread {index} has no event loop: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        if let Some((listener, metrics_listener, inboxes)) = accept {
            if let Some(m) = metrics_listener {
                let shared = Arc::clone(&shared);
                tokio::task::spawn_local(metrics::serve(m, shared, stopped.clone()));
            }
            let shared = Arc::clone(&shared);
            let stopped = stopped.clone();
            tokio::task::spawn_local(accept_loop(listener, inboxes, shared, stopped));
        }
        let conn = conn::ThreadState::new(Arc::clone(&shared));
        loop {
            tokio::select! {
                stream = inbox.recv() => match stream {
                    Some(stream) => conn::spawn(stream, &conn, stopped.clone()),
                    None => break,
                },
                _ = stopped.changed() => break,
            }
        }
        // Let the connections answer what they read, then end.
        conn.wait_idle().await;
    });
}

async fn accept_loop(
    listener: std::net::TcpListener,
    inboxes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floodgate serve: cannot listen: {e}");
            return;
        }
    };
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: the listener stays; wait a little before the next.
                eprintln!("floodgate serve: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shared.connections.load(Ordering::Relaxed);
        if open >= shared.config.max_connections {
            eprintln!(
                "floodgate serve: refused a connection from {peer}: {open} are open, the limit"
            );
            continue;
        }
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let _ = inboxes[next % inboxes.len()].send(stream);
        next += 1;
    }
}
