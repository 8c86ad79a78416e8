//! The network event loop alone, on each runtime the server could run on: a single-threaded
//! tokio runtime (what `floodgate serve` runs) against compio (io_uring). One server thread
//! answers Kafka-framed requests on one connection the way the server's connections do
//! (buffered reads of size-prefixed frames, one write per response), while the client keeps
//! 64 requests in flight. The client is the same for both, so the difference per request is
//! the loop's. Workloads: small requests and responses (acks), and 256 KiB responses (fetches).
//!
//! `cargo bench -p floodgate-kafka --bench event_loop`

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Requests the client keeps in flight.
const WINDOW: u64 = 64;
/// A request: size, correlation id, and a body (as a small produce's).
const REQUEST_BYTES: usize = 120;
/// The server's read buffer.
const READ_BUFFER: usize = 64 << 10;

/// The response frame to a request with correlation id `id`: `response_bytes` after the size.
fn response(out: &mut Vec<u8>, id: &[u8], body: &[u8]) {
    out.clear();
    out.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(body);
}

async fn serve_tokio(stream: std::net::TcpStream, response_bytes: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let body = vec![7u8; response_bytes];
    let mut out = Vec::new();
    loop {
        let Ok(size) = rd.read_i32().await else {
            return;
        };
        let mut request = vec![0u8; size as usize];
        if rd.read_exact(&mut request).await.is_err() {
            return;
        }
        response(&mut out, &request[..4], &body);
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn serve_compio(stream: std::net::TcpStream, response_bytes: usize) {
    use compio::BufResult;
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = compio::net::TcpStream::from_std(stream).unwrap();
    let mut rd = compio::io::BufReader::with_capacity(READ_BUFFER, &stream);
    let mut wr = &stream;
    let body = vec![7u8; response_bytes];
    let mut size = Vec::with_capacity(4);
    let mut out = Vec::new();
    loop {
        size.clear();
        let BufResult(read, buf) = rd.read_exact(size).await;
        size = buf;
        if read.is_err() {
            return;
        }
        let len = i32::from_be_bytes(size[..4].try_into().unwrap()) as usize;
        let BufResult(read, request) = rd.read_exact(Vec::with_capacity(len)).await;
        if read.is_err() {
            return;
        }
        response(&mut out, &request[..4], &body);
        let BufResult(written, buf) = wr.write_all(out).await;
        out = buf;
        if written.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy)]
enum Runtime {
    Tokio,
    Compio,
}

/// A server thread on `runtime` answering one connection; its address.
fn start(runtime: Runtime, response_bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        match runtime {
            Runtime::Tokio => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve_tokio(stream, response_bytes)),
            Runtime::Compio => compio::runtime::Runtime::new()
                .unwrap()
                .block_on(serve_compio(stream, response_bytes)),
        }
    });
    addr
}

/// A client keeping `WINDOW` requests in flight: the time `n` requests take.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let writer = TcpStream::connect(addr).unwrap();
        writer.set_nodelay(true).unwrap();
        let reader = BufReader::with_capacity(1 << 20, writer.try_clone().unwrap());
        let mut request = vec![1u8; REQUEST_BYTES];
        request[..4].copy_from_slice(&((REQUEST_BYTES - 4) as i32).to_be_bytes());
        Client {
            writer,
            reader,
            request,
            response: Vec::new(),
        }
    }

    fn run(&mut self, n: u64) -> Duration {
        let started = Instant::now();
        let (mut sent, mut received) = (0u64, 0u64);
        while received < n {
            while sent < n && sent - received < WINDOW {
                self.writer.write_all(&self.request).unwrap();
                sent += 1;
            }
            let mut size = [0u8; 4];
            self.reader.read_exact(&mut size).unwrap();
            self.response.resize(i32::from_be_bytes(size) as usize, 0);
            self.reader.read_exact(&mut self.response).unwrap();
            received += 1;
        }
        started.elapsed()
    }
}

fn event_loop(c: &mut Criterion) {
    for (workload, response_bytes) in [("ack", 60usize), ("fetch_256k", 256 << 10)] {
        let mut group = c.benchmark_group(format!("event_loop/{workload}"));
        group.throughput(Throughput::Elements(1));
        for (name, runtime) in [("tokio", Runtime::Tokio), ("compio", Runtime::Compio)] {
            let mut client = Client::connect(start(runtime, response_bytes));
            client.run(1000);
            group.bench_function(name, |b| b.iter_custom(|n| client.run(n)));
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = event_loop
}
criterion_main!(benches);
