//! The load tool's own client of the Kafka protocol (`--bootstrap HOST:PORT`), so the same
//! scenarios run against any Kafka-compatible broker: connections that agree on versions with
//! the broker, the load topic found (or created) with its leaders, record batches encoded as
//! the load tool's records, pipelined produce requests, and fetches read back into records.
//! Built on the `kafka-protocol` crate's message types; the batches it sends are encoded here
//! (RecordBatch v2, uncompressed), the batches it fetches decoded by the library's own
//! `BatchView`, which checks their CRC-32C.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::TOPIC;
use crate::error::CliResult;

const CLIENT_ID: &str = "floodgate-load";
/// The largest response frame this client takes (a fetch is bounded far below it).
const RESPONSE_BYTES_MAX: usize = 1 << 30;
/// How long a connection waits for a response before it gives up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The highest version of each API this client speaks (it names topics, so Produce and
/// Fetch stop before the versions that carry topic ids only).
fn client_max(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce | ApiKey::Fetch | ApiKey::Metadata => 12,
        ApiKey::ListOffsets | ApiKey::CreateTopics => 7,
        ApiKey::ApiVersions => 3,
        // One group per request (v4 and v8 batch them).
        ApiKey::FindCoordinator => 3,
        ApiKey::OffsetFetch => 7,
        ApiKey::JoinGroup => 9,
        // v9: a consumer-protocol member's epoch (a classic member's generation alike).
        ApiKey::OffsetCommit => 9,
        ApiKey::ConsumerGroupHeartbeat => 1,
        ApiKey::SyncGroup | ApiKey::LeaveGroup => 5,
        ApiKey::Heartbeat => 4,
        ApiKey::IncrementalAlterConfigs => 1,
        ApiKey::InitProducerId => 4,
        _ => 0,
    }
}

/// The lowest version this client speaks (older produce requests carry other batch formats).
fn client_min(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets => 1,
        ApiKey::CreateTopics => 2,
        // The rebalance timeout; commits with a generation and member.
        ApiKey::JoinGroup | ApiKey::FindCoordinator | ApiKey::OffsetFetch => 1,
        ApiKey::OffsetCommit => 2,
        _ => 0,
    }
}

/// A request's bytes: length prefix, header, body.
fn encode_request<R: Encodable>(
    buf: &mut BytesMut,
    key: ApiKey,
    version: i16,
    id: i32,
    body: &R,
) -> CliResult<()> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = id;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    buf.clear();
    buf.put_i32(0);
    header
        .encode(buf, key.request_header_version(version))
        .map_err(|e| format!("encoding a {key:?} request header: {e}"))?;
    body.encode(buf, version)
        .map_err(|e| format!("encoding a {key:?} v{version} request: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one response frame.
fn read_frame(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > RESPONSE_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "a response frame of {size} bytes"
        )));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame's header and body; the correlation id must be `id`.
fn decode_response<R: Decodable>(
    mut frame: Bytes,
    key: ApiKey,
    version: i16,
    id: i32,
) -> CliResult<R> {
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .map_err(|e| format!("a {key:?} response header: {e}"))?;
    if header.correlation_id != id {
        return Err(format!(
            "a {key:?} response with correlation id {} where {id} was due: responses out of \
             order",
            header.correlation_id
        )
        .into());
    }
    R::decode(&mut frame, version).map_err(|e| format!("a {key:?} v{version} response: {e}").into())
}

/// A connection to a broker, with the versions agreed on.
pub(crate) struct Conn {
    addr: String,
    stream: TcpStream,
    next_id: i32,
    /// API key -> the broker's (min, max) versions.
    versions: HashMap<i16, (i16, i16)>,
    buf: BytesMut,
}

impl Conn {
    /// Connects to `addr` and asks the broker which versions it speaks.
    pub(crate) fn connect(addr: &str) -> CliResult<Conn> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let stream = TcpStream::connect_timeout(&resolved, Duration::from_secs(10))
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(RESPONSE_TIMEOUT)))
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut conn = Conn {
            addr: addr.to_owned(),
            stream,
            next_id: 1,
            versions: HashMap::new(),
            buf: BytesMut::new(),
        };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str(CLIENT_ID);
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let response: ApiVersionsResponse = conn.call_at(ApiKey::ApiVersions, 3, &req)?;
        if response.error_code != 0 {
            return Err(format!(
                "{addr}: ApiVersions v3 answered with error {}",
                response.error_code
            )
            .into());
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The broker's address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `key` both sides speak.
    pub(crate) fn version(&self, key: ApiKey) -> CliResult<i16> {
        let (min, max) = self
            .versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| format!("{}: the broker does not serve {key:?}", self.addr))?;
        let version = max.min(client_max(key));
        if version < min.max(client_min(key)) {
            return Err(format!(
                "{}: the broker serves {key:?} v{min}-{max}, this client v{}-{}",
                self.addr,
                client_min(key),
                client_max(key)
            )
            .into());
        }
        Ok(version)
    }

    /// Sends a request at the highest common version and waits for its response.
    pub(crate) fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        body: &Q,
    ) -> CliResult<(i16, R)> {
        let version = self.version(key)?;
        Ok((version, self.call_at(key, version, body)?))
    }

    fn call_at<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Q,
    ) -> CliResult<R> {
        let id = self.send_at(key, version, body)?;
        self.receive_at(key, version, id)
    }

    /// Sends a request at the highest common version without waiting for its response (read
    /// it with [`Conn::receive`]); returns its correlation id.
    pub(crate) fn send<Q: Encodable>(&mut self, key: ApiKey, body: &Q) -> CliResult<i32> {
        let version = self.version(key)?;
        self.send_at(key, version, body)
    }

    /// The response to request `id` of API `key` sent by [`Conn::send`], the next to arrive.
    pub(crate) fn receive<R: Decodable>(&mut self, key: ApiKey, id: i32) -> CliResult<R> {
        let version = self.version(key)?;
        self.receive_at(key, version, id)
    }

    fn send_at<Q: Encodable>(&mut self, key: ApiKey, version: i16, body: &Q) -> CliResult<i32> {
        let id = self.next_id;
        self.next_id += 1;
        encode_request(&mut self.buf, key, version, id, body)?;
        self.stream
            .write_all(&self.buf)
            .map_err(|e| format!("{}: sending {key:?}: {e}", self.addr))?;
        Ok(id)
    }

    fn receive_at<R: Decodable>(&mut self, key: ApiKey, version: i16, id: i32) -> CliResult<R> {
        let frame = read_frame(&mut self.stream)
            .map_err(|e| format!("{}: waiting for the {key:?} response: {e}", self.addr))?;
        decode_response(frame, key, version, id)
    }

    /// Splits the connection for pipelined requests of one API: requests go out from the
    /// returned sender; a thread of its own reads each response frame as it arrives and
    /// passes it on with the moment it arrived.
    pub(crate) fn pipeline(self, key: ApiKey) -> CliResult<Pipeline> {
        let version = self.version(key)?;
        let mut reader = self
            .stream
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.addr))?;
        let (tx, responses) = mpsc::channel();
        std::thread::Builder::new()
            .name("floodgate-load-net".into())
            .spawn(move || {
                loop {
                    let frame = read_frame(&mut reader);
                    let end = frame.is_err();
                    if tx.send((Instant::now(), frame)).is_err() || end {
                        return;
                    }
                }
            })
            .map_err(|e| format!("starting a reader thread: {e}"))?;
        Ok(Pipeline {
            conn: self,
            key,
            version,
            responses,
        })
    }
}

/// A connection sending requests of one API without waiting, its responses read in order by
/// a thread of its own.
pub(crate) struct Pipeline {
    conn: Conn,
    key: ApiKey,
    version: i16,
    responses: mpsc::Receiver<(Instant, std::io::Result<Bytes>)>,
}

impl Pipeline {
    /// Sends a request; returns its correlation id.
    pub(crate) fn send<Q: Encodable>(&mut self, body: &Q) -> CliResult<i32> {
        let c = &mut self.conn;
        let id = c.next_id;
        c.next_id += 1;
        encode_request(&mut c.buf, self.key, self.version, id, body)?;
        c.stream
            .write_all(&c.buf)
            .map_err(|e| format!("{}: sending {:?}: {e}", c.addr, self.key))?;
        Ok(id)
    }

    /// The broker's address.
    pub(crate) fn addr(&self) -> &str {
        &self.conn.addr
    }

    /// The next response, decoded (it must answer request `id`), and when it arrived: `None`
    /// if none arrives within `wait` (no wait: only one already there).
    pub(crate) fn receive<R: Decodable>(
        &mut self,
        id: i32,
        wait: Option<Duration>,
    ) -> CliResult<Option<(Instant, R)>> {
        let next = match wait {
            Some(wait) => match self.responses.recv_timeout(wait) {
                Ok(next) => next,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: the connection closed", self.conn.addr).into());
                }
            },
            None => match self.responses.try_recv() {
                Ok(next) => next,
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(format!("{}: the connection closed", self.conn.addr).into());
                }
            },
        };
        let (at, frame) = next;
        let frame =
            frame.map_err(|e| format!("{}: {:?} response: {e}", self.conn.addr, self.key))?;
        decode_response(frame, self.key, self.version, id).map(|r| Some((at, r)))
    }
}

/// Where the load topic's partitions are led.
pub(crate) struct TopicLayout {
    /// Each partition's leader, by partition index.
    pub(crate) leaders: Vec<i32>,
    /// Each leader's address.
    pub(crate) brokers: HashMap<i32, String>,
    /// The topic's id (nil from brokers before Metadata v10).
    pub(crate) topic_id: uuid::Uuid,
}

impl TopicLayout {
    /// The partitions each leader leads.
    pub(crate) fn by_leader(&self) -> Vec<(i32, Vec<i32>)> {
        let mut by: HashMap<i32, Vec<i32>> = HashMap::new();
        for (p, &leader) in self.leaders.iter().enumerate() {
            by.entry(leader).or_default().push(p as i32);
        }
        let mut by: Vec<_> = by.into_iter().collect();
        by.sort_unstable();
        by
    }

    /// A connection to `leader`, or to the bootstrap broker if it is the same one.
    pub(crate) fn connect(&self, leader: i32) -> CliResult<Conn> {
        let addr = self
            .brokers
            .get(&leader)
            .ok_or_else(|| format!("no address for broker {leader}"))?;
        Conn::connect(addr)
    }
}

pub(crate) fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// Connects to `bootstrap` and finds the load topic there (see [`load_topic`]), saying on
/// stderr what the caller should know (a topic that exists with other partitions).
pub(crate) fn connect_topic(bootstrap: &str, create: Option<u32>) -> CliResult<TopicLayout> {
    let mut notes = Vec::new();
    let layout = load_topic(&mut Conn::connect(bootstrap)?, create, &mut notes)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    if create.is_some() {
        // A broker names a new topic's leaders before they take requests (Kafka answers
        // NOT_LEADER_OR_FOLLOWER for a while): producing waits until every leader answers.
        list_offsets(&layout, -1)?;
    }
    Ok(layout)
}

/// Finds the load topic at the broker `conn` is connected to; with `create`, creates it with
/// `partitions` partitions if it is missing (one replica). Waits for every partition to have
/// a leader. A topic that exists keeps the partitions it has.
pub(crate) fn load_topic(
    conn: &mut Conn,
    create: Option<u32>,
    notes: &mut Vec<String>,
) -> CliResult<TopicLayout> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created = false;
    loop {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(topic_name());
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![t]);
        req.allow_auto_topic_creation = false;
        let (_, response): (_, MetadataResponse) = conn.call(ApiKey::Metadata, &req)?;
        let topic = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
            .ok_or_else(|| {
                format!(
                    "{}: the metadata response names no topic {TOPIC:?}",
                    conn.addr()
                )
            })?;
        match (topic.error_code, create) {
            (0, _) => {
                let mut leaders = vec![-1; topic.partitions.len()];
                for p in &topic.partitions {
                    let i = usize::try_from(p.partition_index)
                        .ok()
                        .filter(|&i| i < leaders.len())
                        .ok_or_else(|| {
                            format!("partition index {} out of range", p.partition_index)
                        })?;
                    leaders[i] = if p.error_code == 0 { p.leader_id.0 } else { -1 };
                }
                if leaders.iter().all(|&l| l >= 0) && !leaders.is_empty() {
                    if let Some(n) = create
                        && !created
                        && leaders.len() != n as usize
                    {
                        notes.push(format!(
                            "topic {TOPIC:?} exists with {} partitions: producing into those, \
                             not {n}",
                            leaders.len()
                        ));
                    }
                    let brokers = response
                        .brokers
                        .iter()
                        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
                        .collect();
                    let topic_id = topic.topic_id;
                    return Ok(TopicLayout {
                        leaders,
                        brokers,
                        topic_id,
                    });
                }
            }
            (UNKNOWN_TOPIC_OR_PARTITION, Some(n)) if !created => {
                create_topic(conn, n)?;
                created = true;
            }
            (UNKNOWN_TOPIC_OR_PARTITION, None) => {
                return Err(format!(
                    "{}: no topic {TOPIC:?} there: produce into it first (`floodgate load \
                     produce --bootstrap {}`)",
                    conn.addr(),
                    conn.addr()
                )
                .into());
            }
            (UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE, _) => {}
            (code, _) => {
                return Err(format!(
                    "{}: metadata of topic {TOPIC:?}: error {code} ({:?})",
                    conn.addr(),
                    kafka_protocol::ResponseError::try_from_code(code)
                )
                .into());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: topic {TOPIC:?} still has partitions without a leader after 30 s",
                conn.addr()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create_topic(conn: &mut Conn, partitions: u32) -> CliResult<()> {
    let mut topic = CreatableTopic::default();
    topic.name = topic_name();
    topic.num_partitions = partitions as i32;
    topic.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![topic];
    req.timeout_ms = 30_000;
    let (_, response): (_, CreateTopicsResponse) = conn.call(ApiKey::CreateTopics, &req)?;
    for t in &response.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            return Err(format!(
                "{}: creating topic {TOPIC:?} with {partitions} partitions: error {} ({})",
                conn.addr(),
                t.error_code,
                t.error_message.as_ref().map_or("", |m| m.as_str())
            )
            .into());
        }
    }
    Ok(())
}

/// Errors a broker answers while a new topic's leaders take office: asked again.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// Each partition's offset at `timestamp` (-2 earliest, -1 latest), asked of each leader;
/// asked again for up to 30 s while a leader is not yet in office (a topic just created).
pub(crate) fn list_offsets(layout: &TopicLayout, timestamp: i64) -> CliResult<Vec<i64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match list_offsets_once(layout, timestamp)? {
            Ok(offsets) => return Ok(offsets),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One round of [`list_offsets`]: the offsets, or the error that may pass.
fn list_offsets_once(layout: &TopicLayout, timestamp: i64) -> CliResult<Result<Vec<i64>, String>> {
    let mut offsets = vec![-1i64; layout.leaders.len()];
    for (leader, partitions) in layout.by_leader() {
        let mut conn = layout.connect(leader)?;
        let mut topic = ListOffsetsTopic::default();
        topic.name = topic_name();
        topic.partitions = partitions
            .iter()
            .map(|&p| {
                let mut q = ListOffsetsPartition::default();
                q.partition_index = p;
                q.timestamp = timestamp;
                q.current_leader_epoch = -1;
                q
            })
            .collect();
        let mut req = ListOffsetsRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.topics = vec![topic];
        let (_, response): (_, ListOffsetsResponse) = conn.call(ApiKey::ListOffsets, &req)?;
        for t in &response.topics {
            for p in &t.partitions {
                let error = || {
                    format!(
                        "{}: offsets of partition {}: error {}",
                        conn.addr(),
                        p.partition_index,
                        p.error_code
                    )
                };
                match p.error_code {
                    0 => {}
                    NOT_LEADER_OR_FOLLOWER | LEADER_NOT_AVAILABLE | UNKNOWN_TOPIC_OR_PARTITION => {
                        return Ok(Err(error()));
                    }
                    _ => return Err(error().into()),
                }
                if let Some(o) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| offsets.get_mut(i))
                {
                    *o = p.offset;
                }
            }
        }
    }
    if let Some(p) = offsets.iter().position(|&o| o < 0) {
        return Err(format!("no offset for partition {p} of {TOPIC:?}").into());
    }
    Ok(Ok(offsets))
}

/// A RecordBatch v2 being filled with records (no key, no headers, uncompressed), as a
/// producer without idempotence sends them.
#[derive(Default)]
pub(crate) struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

/// Bytes of the RecordBatch header before its records.
const BATCH_HEADER_BYTES: usize = 61;

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

impl BatchBuilder {
    /// Records in the batch so far.
    pub(crate) fn len(&self) -> u32 {
        self.count
    }

    /// Bytes of the batch so far (0 before its first record: the buffer keeps the last
    /// batch's bytes until then).
    pub(crate) fn bytes(&self) -> usize {
        if self.count == 0 { 0 } else { self.buf.len() }
    }

    /// Appends a record with this value and timestamp (ms since the epoch).
    pub(crate) fn push(&mut self, value: &[u8], timestamp: i64) {
        if self.count == 0 {
            self.buf.clear();
            self.buf.resize(BATCH_HEADER_BYTES, 0);
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        let delta = timestamp - self.base_timestamp;
        let offset_delta = i64::from(self.count);
        let len = value.len() as i64;
        // attributes, timestamp delta, offset delta, null key, value length, value, 0 headers
        let body = 1
            + varint_len(delta)
            + varint_len(offset_delta)
            + 1
            + varint_len(len)
            + value.len()
            + 1;
        put_varint(&mut self.buf, body as i64);
        self.buf.push(0);
        put_varint(&mut self.buf, delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, -1);
        put_varint(&mut self.buf, len);
        self.buf.extend_from_slice(value);
        put_varint(&mut self.buf, 0);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// The finished batch (header filled in, CRC-32C computed), from an idempotent producer
    /// if `producer` is its (id, epoch, base sequence); the builder is empty after.
    pub(crate) fn take(&mut self, producer: Option<(i64, i16, i32)>) -> Bytes {
        let (id, epoch, sequence) = producer.unwrap_or((-1, -1, -1));
        let b = &mut self.buf;
        let count = self.count as i32;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        let length = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = 2;
        b[21..23].copy_from_slice(&0i16.to_be_bytes());
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&sequence.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = floodgate::segment::crc::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        Bytes::copy_from_slice(b)
    }
}

/// The batches of a fetched record set, each checked whole (CRC-32C included), with the
/// offsets, timestamps and values of their records at or after `from`; a batch cut short at
/// the end of the set (a broker may send one) is left for the next fetch. Compressed batches
/// are decompressed.
pub(crate) fn each_record(
    records: &[u8],
    from: i64,
    mut f: impl FnMut(i64, Option<&[u8]>),
) -> Result<Option<i64>, String> {
    let mut next = None;
    for batch in whole_batches(records) {
        let batch = batch?;
        let view = floodgate::segment::BatchView::decode(batch).map_err(|e| {
            format!(
                "a fetched batch at offset {}: {e}",
                i64::from_be_bytes(batch[..8].try_into().expect("8 bytes"))
            )
        })?;
        let decompressed = view
            .decompressed()
            .map_err(|e| format!("a fetched batch at {}: {e}", view.base_offset))?;
        let it = match &decompressed {
            Some(d) => view.records_in(d),
            None => view.records(),
        };
        for r in it {
            let r = r.map_err(|e| format!("a fetched batch at {}: {e}", view.base_offset))?;
            if r.offset as i64 >= from {
                f(r.offset as i64, r.value);
            }
        }
        next = Some(view.last_offset() as i64 + 1);
    }
    Ok(next)
}

/// The whole batches of a fetched record set, by their length fields alone (a batch cut short
/// at the end of the set ends it); a negative length is an error.
pub(crate) fn whole_batches(records: &[u8]) -> impl Iterator<Item = Result<&[u8], String>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if records.len() - at < 12 {
            return None;
        }
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().expect("4 bytes"));
        let Ok(len) = usize::try_from(len) else {
            at = records.len();
            return Some(Err(format!("batch length {len}")));
        };
        let end = at + 12 + len;
        if end > records.len() {
            return None;
        }
        let batch = &records[at..end];
        at = end;
        Some(Ok(batch))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_batch_reads_back_with_its_values_and_checksum() {
        let mut b = BatchBuilder::default();
        let values: Vec<Vec<u8>> = (0..300u32)
            .map(|i| vec![i as u8; (i % 200) as usize])
            .collect();
        for (i, v) in values.iter().enumerate() {
            b.push(v, 1_700_000_000_000 + i as i64 * 1000);
        }
        assert_eq!(b.len(), 300);
        let batch = b.take(None);
        assert_eq!((b.len(), b.bytes()), (0, 0));
        // The builder is reused: its next batch holds only its own records.
        b.push(&[9, 9, 9], 5);
        // The header, then length, attributes, two deltas, null key, value length, value, 0 headers.
        assert_eq!(b.bytes(), 61 + 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1);
        let mut again = Vec::new();
        each_record(&b.take(None), 0, |o, v| {
            again.push((o, v.unwrap().to_vec()))
        })
        .unwrap();
        assert_eq!(again, vec![(0, vec![9, 9, 9])]);
        let mut got = Vec::new();
        let next = each_record(&batch, 0, |o, v| got.push((o, v.unwrap().to_vec()))).unwrap();
        assert_eq!(next, Some(300));
        assert_eq!(got.len(), 300);
        for (i, (o, v)) in got.iter().enumerate() {
            assert_eq!(*o, i as i64);
            assert_eq!(v, &values[i]);
        }
        // Records before `from` are skipped; a batch cut short is left for later.
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch[..batch.len() - 1]);
        let mut n = 0;
        assert_eq!(each_record(&two, 250, |_, _| n += 1).unwrap(), Some(300));
        assert_eq!(n, 50);
        // A flipped byte fails the checksum.
        let mut bad = batch.to_vec();
        bad[100] ^= 1;
        assert!(
            each_record(&bad, 0, |_, _| ())
                .unwrap_err()
                .contains("checksum")
        );
    }

    #[test]
    fn varint_lengths_match_their_encoding() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
        }
    }
}
