//! One client connection on a network thread: requests are read in turn (a 4-byte size, then
//! that many bytes), each handled as its own task, and the responses written in the order the
//! requests came. At most [`PIPELINE_MAX`] requests are in flight per connection; past that
//! the connection is not read until the oldest is answered.
//!
//! Produce and Fetch requests are handled side by side (a produce waits for its durability,
//! and the ones in flight share the writer's commits). Any other request is handled once
//! every earlier request of the connection is answered, and later ones start after it, as a
//! Kafka broker handles a connection's requests one at a time: a client that commits offsets
//! and then asks for them on one connection reads its commit (librdkafka's 0030
//! offset_commit read 47 for the 50 it had just committed while the two ran at once).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use floodgate::Producer;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use crate::Shared;
use crate::apis;

/// Requests of one connection in flight at once (read, not yet answered).
pub(crate) const PIPELINE_MAX: usize = 64;

/// What the connections of one network thread share: the server's state, a producer into the
/// log (one per thread: producers are cheap and not shared between threads), and how many
/// connections are open.
pub(crate) struct ThreadState {
    pub shared: Arc<Shared>,
    pub producer: RefCell<Producer>,
    open: Cell<usize>,
    idle: Notify,
}

impl ThreadState {
    pub fn new(shared: Arc<Shared>) -> Rc<ThreadState> {
        let producer = RefCell::new(shared.log.producer());
        Rc::new(ThreadState {
            shared,
            producer,
            open: Cell::new(0),
            idle: Notify::new(),
        })
    }

    /// Waits until this thread's connections have ended.
    pub async fn wait_idle(&self) {
        while self.open.get() > 0 {
            self.idle.notified().await;
        }
    }
}

/// Serves `stream` on this thread until the client closes it, it sends something malformed,
/// or the server stops.
pub(crate) fn spawn(
    stream: std::net::TcpStream,
    state: &Rc<ThreadState>,
    stopped: watch::Receiver<bool>,
) {
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("floodgate serve: a connection could not join the event loop: {e}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let state = Rc::clone(state);
    state.open.set(state.open.get() + 1);
    state.shared.connections.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_local(async move {
        let peer = stream.peer_addr().ok();
        let host: Rc<str> = peer.map_or_else(|| "?".into(), |a| a.ip().to_string().into());
        let peer = peer.map_or_else(|| "?".to_owned(), |a| a.to_string());
        if let Err(reason) = serve(stream, &state, &host, stopped).await {
            eprintln!("floodgate serve: closed the connection from {peer}: {reason}");
        }
        state.shared.connections.fetch_sub(1, Ordering::Relaxed);
        state.open.set(state.open.get() - 1);
        state.idle.notify_waiters();
    });
}

/// Whether a request has been answered, for the later requests that wait for it.
#[derive(Default)]
struct Done {
    done: Cell<bool>,
    notify: Notify,
}

impl Done {
    fn finish(&self) {
        self.done.set(true);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            // Registered before the check: a finish in between still wakes it.
            let notified = self.notify.notified();
            if self.done.get() {
                return;
            }
            notified.await;
        }
    }
}

/// A response on its way: the task computing it (`None`: none is sent, as for acks=0).
type Answer = tokio::task::JoinHandle<Result<Option<crate::apis::Frame>, String>>;

async fn serve(
    stream: tokio::net::TcpStream,
    state: &Rc<ThreadState>,
    host: &Rc<str>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    let (mut rd, mut wr) = stream.into_split();
    let (answers, mut pending) = mpsc::channel::<Answer>(PIPELINE_MAX);
    // Writes the answers in request order; ends when the reader is done and all are written.
    let writer = tokio::task::spawn_local(async move {
        while let Some(answer) = pending.recv().await {
            match answer.await {
                Ok(Ok(Some(frame))) => {
                    if let Err(e) = write_chunks(&mut wr, &frame).await {
                        return Err(format!("write: {e}"));
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(reason)) => return Err(reason),
                Err(e) => return Err(format!("a request's handler failed: {e}")),
            }
        }
        let _ = wr.shutdown().await;
        Ok(())
    });
    let max = state.shared.config.max_request_bytes;
    // The requests not answered yet, and the latest that is not a Produce or Fetch.
    let mut running: Vec<Rc<Done>> = Vec::new();
    let mut barrier: Option<Rc<Done>> = None;
    let outcome = loop {
        let size = tokio::select! {
            size = rd.read_i32() => size,
            _ = stopped.changed() => break Ok(()),
        };
        let size = match size {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(format!("read: {e}")),
        };
        // Refused before a byte of it is buffered.
        if size < 0 || size as usize > max {
            break Err(format!(
                "a request of {size} bytes (the limit is {max}, --max-request-bytes)"
            ));
        }
        // A client that stops halfway through a request holds only itself up, not the
        // server's shutdown.
        let mut body = BytesMut::zeroed(size as usize);
        let read = tokio::select! {
            read = rd.read_exact(&mut body) => read,
            _ = stopped.changed() => break Ok(()),
        };
        if let Err(e) = read {
            break Err(format!("a request cut short: {e}"));
        }
        let request = match Request::decode(body.freeze()) {
            Ok(r) => r,
            Err(reason) => break Err(reason),
        };
        let key = request.key;
        state.shared.metrics.request(key);
        running.retain(|d| !d.done.get());
        let side_by_side = matches!(key, ApiKey::Produce | ApiKey::Fetch);
        let waits: Vec<Rc<Done>> = match side_by_side {
            true => barrier.iter().filter(|d| !d.done.get()).cloned().collect(),
            false => running.clone(),
        };
        let done = Rc::new(Done::default());
        running.push(Rc::clone(&done));
        if !side_by_side {
            barrier = Some(Rc::clone(&done));
        }
        let answer = if waits.is_empty() {
            match apis::handle(state, request, host) {
                Ok(task) => tokio::task::spawn_local(async move {
                    let answer = task.await;
                    done.finish();
                    answer
                }),
                Err(reason) => {
                    state.shared.metrics.error(key);
                    break Err(reason);
                }
            }
        } else {
            // Handled (decoded too) once the earlier ones are answered; a request that does
            // not decode then closes the connection after their answers.
            let (state, host) = (Rc::clone(state), Rc::clone(host));
            tokio::task::spawn_local(async move {
                for earlier in waits {
                    earlier.wait().await;
                }
                let answer = match apis::handle(&state, request, &host) {
                    Ok(task) => task.await,
                    Err(reason) => {
                        state.shared.metrics.error(key);
                        Err(reason)
                    }
                };
                done.finish();
                answer
            })
        };
        // With PIPELINE_MAX answers waiting (a client that does not read them), wait for
        // room, or for the server to stop.
        let sent = tokio::select! {
            sent = answers.send(answer) => sent,
            _ = stopped.changed() => break Ok(()),
        };
        if sent.is_err() {
            break Ok(()); // the writer failed; it says why
        }
    };
    drop(answers);
    // Stopping, the answers in flight get a grace period: a client that does not read them
    // would otherwise hold the server's shutdown forever.
    let mut writer = writer;
    let grace = match *stopped.borrow() {
        true => SHUTDOWN_GRACE,
        false => Duration::MAX,
    };
    let written = match tokio::time::timeout(grace, &mut writer).await {
        Ok(w) => w.unwrap_or_else(|e| Err(format!("the writer failed: {e}"))),
        Err(_) => {
            writer.abort();
            Err(format!(
                "answers not read within {grace:?} of the server stopping"
            ))
        }
    };
    outcome.and(written)
}

/// Writes a frame's chunks in order, as many at a time as one vectored write takes.
async fn write_chunks(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    if let [one] = chunks {
        return wr.write_all(one).await;
    }
    // The first chunk not yet written whole, and how much of it was.
    let (mut at, mut done) = (0usize, 0usize);
    loop {
        while at < chunks.len() && chunks[at].len() == done {
            at += 1;
            done = 0;
        }
        if at == chunks.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&chunks[at][done..])
            .chain(chunks[at + 1..].iter().map(|c| &c[..]))
            .take(IOVECS_MAX)
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while at < chunks.len() && n >= chunks[at].len() - done {
            n -= chunks[at].len() - done;
            at += 1;
            done = 0;
        }
        done += n;
    }
}

/// Slices in one vectored write (Linux takes at most 1,024).
const IOVECS_MAX: usize = 1024;

/// How long a stopping server waits for a connection's answers in flight to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A request whose header is decoded; its body is decoded by its API's handler.
pub(crate) struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Request {
    pub(crate) fn decode(mut bytes: Bytes) -> Result<Request, String> {
        if bytes.len() < 8 {
            return Err(format!("a request of {} bytes has no header", bytes.len()));
        }
        let key = i16::from_be_bytes([bytes[0], bytes[1]]);
        let version = i16::from_be_bytes([bytes[2], bytes[3]]);
        let key = ApiKey::try_from(key).map_err(|_| format!("unknown API key {key}"))?;
        let header_version = key.request_header_version(version);
        let header = RequestHeader::decode(&mut bytes, header_version)
            .map_err(|e| format!("a malformed {key:?} request header: {e}"))?;
        Ok(Request {
            key,
            version,
            header,
            body: bytes,
        })
    }
}
