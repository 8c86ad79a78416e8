//! A server on a fresh log for each test, and a minimal blocking client of the protocol.
#![allow(
    dead_code,
    reason = "each test crate uses its own subset of these helpers"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use floodgate::{Config, Log};
use floodgate_kafka::{Server, ServerConfig};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A fresh directory on the build's file system (O_DIRECT needs a disk-backed one).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// A log in `dir` served on a free port of 127.0.0.1.
pub fn serve(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> (Arc<Log>, Server) {
    let log = Arc::new(Log::open(Config::new(dir).pin_threads(false)).unwrap());
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    tweak(&mut config);
    let server = Server::start(Arc::clone(&log), config).unwrap();
    (log, server)
}

/// A server with its default config on a log opened with `config` changed by `tweak`.
pub fn serve_log(dir: &Path, tweak: impl FnOnce(Config) -> Config) -> (Arc<Log>, Server) {
    let log = Arc::new(Log::open(tweak(Config::new(dir).pin_threads(false))).unwrap());
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    let server = Server::start(Arc::clone(&log), config).unwrap();
    (log, server)
}

/// Stops `server` and closes `log`.
pub fn stop(log: Arc<Log>, server: Server) {
    server.shutdown();
    Arc::into_inner(log)
        .expect("the server let go of the log")
        .close()
        .unwrap();
}

/// A blocking connection speaking the protocol.
pub struct Client {
    stream: TcpStream,
    next_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client { stream, next_id: 1 }
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `body` as API `key` at `version`; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, body: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = id;
        header.client_id = Some(StrBytes::from_static_str("floodgate-test"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).unwrap();
        id
    }

    /// Reads one response frame: (correlation id, body), the header read at the version `key`
    /// and `version` call for.
    pub fn receive_raw(&mut self, key: ApiKey, version: i16) -> std::io::Result<(i32, Bytes)> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(std::io::Error::other)?;
        Ok((header.correlation_id, body))
    }

    /// Sends a request and decodes its response.
    pub fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &Q) -> R {
        let id = self.send(key, version, body);
        let (got, mut bytes) = self.receive_raw(key, version).unwrap();
        assert_eq!(got, id, "responses come in request order");
        let response = R::decode(&mut bytes, version).unwrap();
        assert!(!bytes.has_remaining(), "the whole response was decoded");
        response
    }

    /// Whether the server closed the connection (a read returns end of file).
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// A RecordBatch v2 of `n` records as a client encodes it: producer `producer_id` at `epoch`
/// with sequences from `first_sequence` (-1 for both: not idempotent), timestamps from
/// 1,700,000,000,000 ms, and record `i`'s key and value from `record(i)`.
pub fn record_batch(
    (producer_id, epoch, first_sequence): (i64, i16, i32),
    n: i64,
    record: impl Fn(i64) -> (Option<Bytes>, Bytes),
) -> Bytes {
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let (key, value) = record(i);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: match producer_id {
                    ..0 => -1,
                    _ => first_sequence + i as i32,
                },
                timestamp: 1_700_000_000_000 + i,
                key,
                value: Some(value),
                headers: IndexMap::new(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// A producer's batch of `n` records, as a client encodes it (one batch: the records share a
/// producer id and have sequence numbers, as an idempotent producer's do). Each batch is its
/// producer's first (a producer id of its own, sequence 0), so none is a retry of another.
pub fn client_batch(n: i64) -> Bytes {
    static PRODUCERS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1 << 20);
    client_batch_of(
        PRODUCERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        n,
    )
}

/// The first batch of `n` records of producer `producer_id` (sequence 0).
pub fn client_batch_of(producer_id: i64, n: i64) -> Bytes {
    record_batch((producer_id, 0, 0), n, |i| {
        let key = Bytes::from(format!("key-{i}"));
        (Some(key), Bytes::from(format!("value-{i}")))
    })
}

/// A topic name as requests carry it.
pub fn name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_owned()))
}

/// A Produce of `records` to one partition, 10 s timeout.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> kafka_protocol::messages::ProduceRequest {
    let mut data = kafka_protocol::messages::produce_request::PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records);
    let mut t = kafka_protocol::messages::produce_request::TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![data];
    let mut req = kafka_protocol::messages::ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    req
}

/// A Fetch of partition 0 of `topic` from `offset`, 1 MiB of it at most.
pub fn fetch_request(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> kafka_protocol::messages::FetchRequest {
    let mut p = kafka_protocol::messages::fetch_request::FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = kafka_protocol::messages::fetch_request::FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut req = kafka_protocol::messages::FetchRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 50 << 20;
    req.topics = vec![t];
    req
}

/// A batch of `n` records as a client without idempotence encodes it.
pub fn plain_batch(n: i64) -> Bytes {
    record_batch((-1, -1, -1), n, |i| {
        (None, Bytes::from(format!("value-{i}")))
    })
}

/// Produces `batches` batches of `n` records to each of `partitions` partitions of `topic`,
/// pipelined, and checks every one was stored.
pub fn produce(client: &mut Client, topic: &str, partitions: i32, batches: usize, n: i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let mut ids = Vec::new();
    for _ in 0..batches {
        let mut t = TopicProduceData::default();
        t.name = name(topic);
        t.partition_data = (0..partitions)
            .map(|p| {
                let mut d = PartitionProduceData::default();
                d.index = p;
                d.records = Some(plain_batch(n));
                d
            })
            .collect();
        let mut r = ProduceRequest::default();
        r.acks = -1;
        r.timeout_ms = 10_000;
        r.topic_data = vec![t];
        ids.push(client.send(ApiKey::Produce, 9, &r));
    }
    for id in ids {
        let (got, mut body) = client.receive_raw(ApiKey::Produce, 9).unwrap();
        assert_eq!(got, id);
        let r =
            <ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 9).unwrap();
        let codes = r.responses.iter().flat_map(|t| &t.partition_responses);
        assert!(codes.map(|p| p.error_code).all(|c| c == 0));
    }
}

/// Fetches `topic`'s partitions from `next` on (moving it past what comes back); returns the
/// records received.
pub fn fetch_records(client: &mut Client, topic: &str, next: &mut [i64]) -> u64 {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = (0..next.len())
        .map(|p| {
            let mut f = FetchPartition::default();
            f.partition = p as i32;
            f.fetch_offset = next[p];
            f.partition_max_bytes = 1 << 20;
            f
        })
        .collect();
    let mut r = FetchRequest::default();
    r.max_wait_ms = 200;
    r.min_bytes = 1;
    r.max_bytes = 50 << 20;
    r.topics = vec![t];
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &r);
    let mut received = 0;
    for p in &response.responses[0].partitions {
        assert_eq!(p.error_code, 0);
        let mut records = p.records.clone().unwrap_or_default();
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records).unwrap();
        for set in sets {
            for r in set.records {
                if r.offset >= next[p.partition_index as usize] {
                    next[p.partition_index as usize] = r.offset + 1;
                    received += 1;
                }
            }
        }
    }
    received
}

/// Fetches `topic`'s partitions from `next` on (see [`fetch_records`]) again and again for
/// `span`: the records received, and the seconds it took.
pub fn fetch_for(client: &mut Client, topic: &str, next: &mut [i64], span: Duration) -> (u64, f64) {
    let started = std::time::Instant::now();
    let mut received = 0;
    while started.elapsed() < span {
        received += fetch_records(client, topic, next);
    }
    (received, started.elapsed().as_secs_f64())
}
