//! Fetch: the stored batches of each partition from the one holding the fetch offset on, as
//! they are on disk, within the request's byte limits but always at least one whole batch;
//! when they come to fewer than `min_bytes`, the fetch waits (up to `max_wait_ms`) for the
//! shards to publish more. Sessionless: every response has session id 0, which a client
//! asking for a session takes as "no session".

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

use floodgate::{BatchesAsk, Log, Offset};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::protocol::Encodable;

use super::Frame;
use crate::conn::ThreadState;
use crate::pace::Pace;
use std::sync::atomic::Ordering;

/// A partition this far behind its end is read with read-ahead (a backlog being drained);
/// closer, only the batches asked for are read.
const READ_AHEAD_RECORDS_BEHIND: u64 = 10_000;

/// A partition's stored batches for a response, as they were read (each points into the
/// read buffer or cache it came from), in the order of the response's partitions.
pub(crate) type RecordSets = Vec<Vec<Bytes>>;

/// Answers a fetch from client `client_id` at `host` (the member of a paced group that sent
/// it, if one did, gets what the group's rate allows).
pub(crate) async fn fetch(
    state: &ThreadState,
    req: FetchRequest,
    (client_id, host): (&str, &str),
) -> (FetchResponse, RecordSets) {
    let log = &state.shared.log;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    // Only while some group is paced: a fetch naming many partitions lists them for nothing
    // otherwise.
    let (pace, offsets) = match state.shared.coordinator.any_paced() {
        false => (None, Vec::new()),
        true => {
            let asked: Vec<(&str, i32)> = (req.topics.iter())
                .flat_map(|t| {
                    let name = t.topic.0.as_str();
                    t.partitions.iter().map(move |p| (name, p.partition))
                })
                .collect();
            let offsets: Vec<i64> = (req.topics.iter())
                .flat_map(|t| t.partitions.iter().map(|p| p.fetch_offset))
                .collect();
            let pace = state.shared.coordinator.pace_of(client_id, host, &asked);
            (pace, offsets)
        }
    };
    let req = Arc::new(req);
    loop {
        if let Some((_, pace)) = &pace {
            // A member's fetch takes half a burst's worth at least (a few milliseconds of
            // the rate): taking whatever single batches the rate allowed at each moment, two
            // members at 80,000 records/s sent 2,100 fetches a second.
            let now = Instant::now();
            let filled =
                (pace.limiter.lock().expect("pace lock")).filled_at(now, PACED_FETCH_SHARE);
            if filled > now {
                tokio::time::sleep_until(filled.min(deadline).into()).await;
            }
        }
        let mark = log.publish_mark();
        let budget = (pace.as_ref()).and_then(|(_, pace)| pace.read_budget(Instant::now()));
        let paced = pace.is_some();
        // Reads may wait for the disk: off the event loop, which answers other requests
        // (producers' acks among them) meanwhile.
        let (shared, asked) = (Arc::clone(&state.shared), Arc::clone(&req));
        let read =
            tokio::task::spawn_blocking(move || read_all(&shared.log, &asked, budget, paced)).await;
        let (response, mut sets, bytes) = match read {
            Ok(read) => read,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let now = Instant::now();
        if let Some((_, pace)) = &pace
            && bytes > 0
        {
            // Tokens taken are for batches handed out now; with none allowed yet, it waits
            // for the group's next (within max_wait_ms) and reads again.
            if pace_sets(pace, &mut sets, &offsets, now) > 0 || now >= deadline {
                count(state, &response, &sets);
                return (response, sets);
            }
            let ready = pace.limiter.lock().expect("pace lock").ready_at(now, None);
            tokio::time::sleep_until(ready.min(deadline).into()).await;
            continue;
        }
        if bytes >= min_bytes.max(1) || now >= deadline || errored(&response) {
            count(state, &response, &sets);
            return (response, sets);
        }
        // Nothing (or too little) yet: wait for a publish, then read again.
        let _ = tokio::time::timeout(deadline - now, log.published_since(mark)).await;
    }
}

/// The part of its rate limiter's burst a paced group's fetch waits for before it reads.
const PACED_FETCH_SHARE: f64 = 0.5;

/// Keeps of `sets` the batches a paced group's rate allows at `now`: a batch of each
/// partition in turn (from the partition after the last fetch's first), as long as the rate
/// lets the next out, each handed out whole. `offsets`: each partition's fetch offset (records
/// before it in its first batch are not counted). Returns the bytes kept.
fn pace_sets(pace: &Pace, sets: &mut RecordSets, offsets: &[i64], now: Instant) -> usize {
    let n = sets.len();
    if n == 0 {
        return 0;
    }
    let read = (sets.iter().flatten()).fold((0, 0), |(records, bytes), batch| {
        (records + stored_records(batch), bytes + batch.len() as u64)
    });
    pace.note_read(read.0, read.1);
    let start = pace.turn.fetch_add(1, Ordering::Relaxed) % n;
    let mut kept = vec![0usize; n];
    let mut limiter = pace.limiter.lock().expect("pace lock");
    'rounds: loop {
        let mut more = false;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(batch) = sets[i].get(kept[i]) else {
                continue;
            };
            more = true;
            let records = batch_records(batch, offsets.get(i).copied().unwrap_or(0));
            if !limiter.take_batch(now, None, records, batch.len() as u64) {
                break 'rounds;
            }
            kept[i] += 1;
        }
        if !more {
            break;
        }
    }
    drop(limiter);
    let mut bytes = 0;
    for (set, keep) in sets.iter_mut().zip(kept) {
        set.truncate(keep);
        bytes += set.iter().map(Bytes::len).sum::<usize>();
    }
    bytes
}

/// The records of a stored batch at or after `from`: baseOffset (0..8) and lastOffsetDelta
/// (23..27) say which offsets it holds.
fn batch_records(batch: &[u8], from: i64) -> u64 {
    let field = |at: usize, n: usize| batch.get(at..at + n);
    let (Some(base), Some(delta)) = (field(0, 8), field(23, 4)) else {
        return 1;
    };
    let base = i64::from_be_bytes(base.try_into().expect("8 bytes"));
    let last = base + i64::from(i32::from_be_bytes(delta.try_into().expect("4 bytes")));
    (last - base.max(from) + 1).max(1) as u64
}

/// Counts the records and bytes `response` hands out, by topic.
fn count(state: &ThreadState, response: &FetchResponse, sets: &RecordSets) {
    let mut sets = sets.iter();
    for topic in &response.responses {
        let (mut records, mut bytes) = (0u64, 0u64);
        for batch in (&mut sets).take(topic.partitions.len()).flatten() {
            bytes += batch.len() as u64;
            records += stored_records(batch);
        }
        if bytes > 0 {
            state.shared.metrics.fetched(&topic.topic.0, records, bytes);
        }
    }
}

/// The records a stored batch holds: baseOffset (8), batchLength (4), ..., recordCount at 57.
fn stored_records(batch: &[u8]) -> u64 {
    batch.get(57..61).map_or(0, |n| {
        u64::from(u32::from_be_bytes(n.try_into().expect("4 bytes")))
    })
}

fn errored(response: &FetchResponse) -> bool {
    (response.responses.iter()).any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

/// One pass over the request's partitions: the response (its record sets left out), the
/// record sets, and their bytes; at most `budget` bytes (a paced group's share) when given. The partitions of a topic are read together (see
/// [`Log::read_batches_of`]): a fetch naming many partitions reads each region of a shard's
/// log once. A member of a paced group (`paced`) reads only what it is given, never ahead:
/// 4 MiB windows read ahead for a member that joined 3 s behind the producers queued before
/// the writer's commits, and the peak scenario's acks waited 10-25 ms in that second.
fn read_all(
    log: &Log,
    req: &FetchRequest,
    budget: Option<usize>,
    paced: bool,
) -> (FetchResponse, RecordSets, usize) {
    let max_bytes = (usize::try_from(req.max_bytes).unwrap_or(0))
        .min(budget.unwrap_or(usize::MAX))
        .max(1);
    let mut total = 0usize;
    let mut response = FetchResponse::default();
    let mut sets = RecordSets::new();
    for topic in &req.topics {
        let name = topic.topic.0.to_string();
        let mut out = FetchableTopicResponse::default();
        out.topic = topic.topic.clone();
        out.topic_id = topic.topic_id;
        let asks: Vec<BatchesAsk> = (topic.partitions.iter())
            .map(|p| {
                let partition = u32::try_from(p.partition).unwrap_or(u32::MAX);
                let offset = Offset(u64::try_from(p.fetch_offset).unwrap_or(u64::MAX));
                let behind = match log.offsets(&name, partition) {
                    Ok((_, next)) => next.0.saturating_sub(offset.0),
                    Err(_) => 0,
                };
                BatchesAsk {
                    partition,
                    offset,
                    bytes_max: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    read_ahead: !paced && behind > READ_AHEAD_RECORDS_BEHIND,
                }
            })
            .collect();
        let room = max_bytes.saturating_sub(total);
        let read = match room {
            0 => Vec::new(),
            room => log.read_batches_of(&name, &asks, room),
        };
        for (i, ask) in asks.iter().enumerate() {
            let mut data = PartitionData::default();
            data.partition_index = ask.partition as i32;
            data.high_watermark = -1;
            data.last_stable_offset = -1;
            data.log_start_offset = -1;
            data.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
            data.records = None;
            let mut set = Vec::new();
            let range = |data: &mut PartitionData, (earliest, end): (Offset, Offset)| {
                data.high_watermark = end.0 as i64;
                data.last_stable_offset = end.0 as i64;
                data.log_start_offset = earliest.0 as i64;
            };
            match read.get(i) {
                Some(Ok(batches)) => {
                    range(&mut data, (batches.earliest, batches.end));
                    total += batches.batches.iter().map(Bytes::len).sum::<usize>();
                    set = batches.batches.clone();
                }
                Some(Err(e)) => {
                    data.error_code = super::error_code(e);
                    if let Ok(offsets) = log.offsets(&name, ask.partition) {
                        range(&mut data, offsets);
                    }
                }
                // Past the byte limit: no records, only where the partition stands.
                None => match log.offsets(&name, ask.partition) {
                    Ok(offsets) => range(&mut data, offsets),
                    Err(e) => data.error_code = super::error_code(&e),
                },
            }
            out.partitions.push(data);
            sets.push(set);
        }
        response.responses.push(out);
    }
    (response, sets, total)
}

/// The response frame, as the protocol crate would encode `response` with each partition's
/// record set from `sets`, but in chunks: the encoded fields, and between them the stored
/// batches as they were read, so they are written to the socket without being copied into a
/// buffer first. Responses are built by [`read_all`]: only the fields it sets are written; a
/// response with others set (tagged fields, record sets of its own) is a fault of this server.
pub(crate) fn fetch_frame(
    version: i16,
    id: i32,
    response: &FetchResponse,
    sets: &[Vec<Bytes>],
) -> Result<Frame, String> {
    let fault = |what: &str| format!("the Fetch v{version} response {what}");
    if !(4..=12).contains(&version) {
        return Err(fault("is of a version this encoder does not write"));
    }
    let flexible = version >= 12;
    if !response.unknown_tagged_fields.is_empty() || !response.node_endpoints.is_empty() {
        return Err(fault("has tagged fields set"));
    }
    let partitions: usize = response.responses.iter().map(|t| t.partitions.len()).sum();
    if partitions != sets.len() {
        return Err(fault("has a record set count unlike its partitions'"));
    }
    let mut chunks: Frame = Vec::with_capacity(2 + 2 * partitions);
    let mut buf = BytesMut::with_capacity(64 + 64 * partitions);
    let mut size = 0usize;
    // Header: correlation id, and (flexible) no tagged fields.
    buf.put_i32(id);
    if flexible {
        put_uvarint(&mut buf, 0);
    }
    buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    }
    put_len(&mut buf, flexible, response.responses.len());
    let mut sets = sets.iter();
    let mut scratch = BytesMut::new();
    for topic in &response.responses {
        if !topic.unknown_tagged_fields.is_empty() {
            return Err(fault("has a topic with tagged fields set"));
        }
        let name = topic.topic.0.as_bytes();
        match flexible {
            true => put_uvarint(&mut buf, name.len() as u64 + 1),
            false => buf.put_i16(name.len() as i16),
        }
        buf.put_slice(name);
        put_len(&mut buf, flexible, topic.partitions.len());
        for p in &topic.partitions {
            let set = sets.next().expect("counted above");
            if p.records.is_some()
                || !p.unknown_tagged_fields.is_empty()
                || p.diverging_epoch != Default::default()
                || p.current_leader != Default::default()
                || p.snapshot_id != Default::default()
            {
                return Err(fault(
                    "has a partition with fields this encoder does not write",
                ));
            }
            // The partition's fields up to its records, as the crate writes them: it ends a
            // null record set with its null length, then (flexible) no tagged fields.
            scratch.clear();
            p.encode(&mut scratch, version)
                .map_err(|e| format!("the Fetch v{version} response did not encode: {e}"))?;
            let tail = if flexible { 2 } else { 4 };
            buf.put_slice(&scratch[..scratch.len() - tail]);
            let bytes: usize = set.iter().map(Bytes::len).sum();
            match flexible {
                true => put_uvarint(&mut buf, bytes as u64 + 1),
                false => buf.put_i32(bytes as i32),
            }
            if bytes > 0 {
                size += buf.len();
                chunks.push(buf.split().freeze());
                size += bytes;
                chunks.extend(set.iter().cloned());
            }
            if flexible {
                put_uvarint(&mut buf, 0);
            }
        }
        if flexible {
            put_uvarint(&mut buf, 0);
        }
    }
    if flexible {
        put_uvarint(&mut buf, 0);
    }
    size += buf.len();
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    let size = i32::try_from(size).map_err(|_| fault("is over 2 GiB"))?;
    chunks.insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
    Ok(chunks)
}

/// An array's length: compact (length + 1, unsigned varint) or INT32.
fn put_len(buf: &mut BytesMut, compact: bool, len: usize) {
    match compact {
        true => put_uvarint(buf, len as u64 + 1),
        false => buf.put_i32(len as i32),
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    /// A response as `read_all` builds them, and its record sets.
    fn sample() -> (FetchResponse, RecordSets) {
        let batch = |n: u8, len: usize| Bytes::from(vec![n; len]);
        let mut response = FetchResponse::default();
        response.throttle_time_ms = 0;
        let mut sets = RecordSets::new();
        for (t, name) in ["orders", "a-much-longer-topic-name"].iter().enumerate() {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_string(name.to_string()));
            for p in 0..3i32 {
                let mut data = PartitionData::default();
                data.partition_index = p;
                data.high_watermark = 1000 + i64::from(p);
                data.last_stable_offset = 1000 + i64::from(p);
                data.log_start_offset = 7;
                data.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
                data.records = None;
                let set = match (t, p) {
                    (0, 0) => vec![batch(1, 70), batch(2, 300), batch(3, 61)],
                    (0, 1) => vec![],
                    (0, 2) => {
                        data.error_code = 1;
                        vec![]
                    }
                    (_, p) => vec![batch(4 + p as u8, 200 * (p as usize + 1))],
                };
                topic.partitions.push(data);
                sets.push(set);
            }
            response.responses.push(topic);
        }
        (response, sets)
    }

    #[test]
    fn the_chunked_frame_is_the_crates_encoding_at_every_version() {
        let (response, sets) = sample();
        let mut joined = response.clone();
        let mut it = sets.iter();
        for p in joined.responses.iter_mut().flat_map(|t| &mut t.partitions) {
            p.records = Some(it.next().unwrap().concat().into());
        }
        for version in 4..=12 {
            let chunks = fetch_frame(version, 77, &response, &sets).unwrap();
            let want = super::super::frame(ApiKey::Fetch, version, 77, &joined).unwrap();
            assert_eq!(chunks.concat(), want.to_vec(), "v{version}");
            // Every stored batch is a chunk of its own, not a copy.
            for batch in sets.iter().flatten() {
                assert!(
                    chunks.iter().any(|c| c.as_ptr() == batch.as_ptr()),
                    "v{version}: a batch was copied"
                );
            }
            assert!(chunks.iter().all(|c| !c.is_empty()), "v{version}");
        }
    }

    #[test]
    fn fields_the_encoder_does_not_write_are_refused() {
        let (mut response, sets) = sample();
        response.responses[1].partitions[0].records = Some(Bytes::from_static(b"x"));
        let e = fetch_frame(12, 1, &response, &sets).unwrap_err();
        assert!(e.contains("fields this encoder does not write"), "{e}");
        let (response, mut sets) = sample();
        sets.pop();
        assert!(fetch_frame(11, 1, &response, &sets).is_err());
        assert!(fetch_frame(13, 1, &response, &sample().1).is_err());
    }
}
