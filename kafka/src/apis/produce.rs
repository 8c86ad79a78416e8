//! Produce: each partition's record set (one or more RecordBatch v2, as the client encoded
//! them) goes to the log as it is; the response comes once every batch is acknowledged
//! (durable under the log's durability), or at once with acks=0, which gets none.

use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::segment::compression::recompress_batch;
use floodgate::{Ack, Codec, Error};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::conn::ThreadState;

/// How long a full ring is waited on before the next try (the writer drains it meanwhile).
const FULL_RETRY: Duration = Duration::from_micros(200);

/// Answers a Produce (v3 on); `None` for acks=0.
pub(crate) async fn produce(state: &ThreadState, req: ProduceRequest) -> Option<ProduceResponse> {
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    let refuse_all = if req.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            "floodgate has no transactions",
        ))
    } else {
        None
    };
    // Every batch of the request is stamped alike in a topic of LogAppendTime, and the answer
    // gives that time.
    let append_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Queue every batch first, then wait for the acks: one commit can carry them all.
    let mut pending: Vec<(usize, usize, Result<Appended, i16>)> = Vec::new();
    let mut response = ProduceResponse::default();
    for (t, topic) in req.topic_data.iter().enumerate() {
        let name = topic.name.0.to_string();
        let mut out = TopicProduceResponse::default();
        out.name = topic.name.clone();
        for (p, data) in topic.partition_data.iter().enumerate() {
            let mut answer = PartitionProduceResponse::default();
            answer.index = data.index;
            answer.base_offset = -1;
            answer.log_append_time_ms = -1;
            answer.log_start_offset = -1;
            if let Some((code, why)) = refuse_all {
                answer.error_code = code;
                answer.error_message = Some(StrBytes::from_static_str(why));
            } else {
                let records = data.records.clone().unwrap_or_default();
                pending.push((
                    t,
                    p,
                    append_all(state, &name, data.index, records, (deadline, append_ms)).await,
                ));
            }
            out.partition_responses.push(answer);
        }
        response.responses.push(out);
    }
    if req.acks == 0 {
        return None;
    }
    for (t, p, queued) in pending {
        let topic = &mut response.responses[t];
        let name = topic.name.0.to_string();
        let answer = &mut topic.partition_responses[p];
        let acks = match queued {
            Ok(acks) => acks,
            Err(code) => {
                answer.error_code = code;
                continue;
            }
        };
        let (acks, records, bytes) = acks;
        let mut first = None;
        for ack in acks {
            match ack.await {
                Ok(at) => {
                    first.get_or_insert(at.offset.0 as i64);
                }
                Err(e) => {
                    answer.error_code = super::error_code(&e);
                    answer.error_message = Some(StrBytes::from_string(e.to_string()));
                    first = None;
                    break;
                }
            }
        }
        if let Some(base) = first {
            state.shared.metrics.produced(&name, records, bytes);
            answer.base_offset = base;
            if state
                .shared
                .log
                .topic_log_append_time(&name)
                .unwrap_or(false)
            {
                answer.log_append_time_ms = append_ms;
            }
            let partition = answer.index as u32;
            if let Ok((earliest, _)) = state.shared.log.offsets(&name, partition) {
                answer.log_start_offset = earliest.0 as i64;
            }
        }
    }
    Some(response)
}

/// A partition's batches queued: their acks, and the records and bytes they hold.
type Appended = (Vec<Ack>, u64, u64);

/// Hands each batch of `records` (concatenated RecordBatch v2) to the log, all or none: every
/// batch is checked (once) before the first is queued. Waits for room in a full ring until
/// `deadline`.
async fn append_all(
    state: &ThreadState,
    topic: &str,
    partition: i32,
    records: Bytes,
    (deadline, append_ms): (Instant, i64),
) -> Result<Appended, i16> {
    let partition =
        u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition.code())?;
    let bytes_max = state.shared.log.config().record_bytes_limit();
    let records = match state.shared.log.topic_compression(topic) {
        Ok(Some(codec)) => recompressed(records, codec, bytes_max).await?,
        _ => records,
    };
    let batches = split(&records).ok_or(ResponseError::CorruptMessage.code())?;
    let mut checked = Vec::with_capacity(batches.len());
    for batch in batches {
        let c = floodgate::producer::check_batch(batch, bytes_max)
            .map_err(|e| super::error_code(&e))?
            .appended_at(append_ms);
        checked.push(c);
    }
    let count = checked
        .iter()
        .map(|c| u64::from(c.view().record_count))
        .sum();
    let mut acks = Vec::new();
    for batch in &checked {
        loop {
            let appended = state
                .producer
                .borrow_mut()
                .try_append_checked(topic, partition, batch);
            match appended {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err(Error::Full | Error::LogFull { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(FULL_RETRY).await;
                }
                Err(e) => return Err(super::error_code(&e)),
            }
        }
    }
    Ok((acks, count, records.len() as u64))
}

/// `records` with each batch not in `codec` (a topic's own) checked, then compressed again, on
/// a blocking thread of the runtime: gzip takes about 3 ms per batch of 85 KB and zstd 0.7 ms
/// (`cargo bench --bench format -- recompress`), which would hold up every other connection
/// of this network thread. The log compresses nothing again once the batches are in its codec.
async fn recompressed(records: Bytes, codec: Codec, bytes_max: usize) -> Result<Bytes, i16> {
    let work = move || -> Result<Bytes, i16> {
        let batches = split(&records).ok_or(ResponseError::CorruptMessage.code())?;
        let mut out = Vec::with_capacity(records.len());
        let mut changed = false;
        for batch in batches {
            let checked = floodgate::producer::check_batch(batch, bytes_max)
                .map_err(|e| super::error_code(&e))?;
            if checked.view().codec == codec {
                out.extend_from_slice(batch);
                continue;
            }
            let again =
                recompress_batch(batch, codec).map_err(|_| ResponseError::CorruptMessage.code())?;
            out.extend_from_slice(&again);
            changed = true;
        }
        Ok(if changed { Bytes::from(out) } else { records })
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ResponseError::KafkaStorageError.code())?
}

/// The batches of a record set by their length fields; `None` if one runs past the end or
/// there is none.
pub(crate) fn split(records: &[u8]) -> Option<Vec<&[u8]>> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        // baseOffset (8), batchLength (4): the batch is batchLength bytes after them.
        let len = records.get(at + 8..at + 12)?;
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        let end = at
            .checked_add(12)?
            .checked_add(usize::try_from(len).ok()?)?;
        batches.push(records.get(at..end)?);
        at = end;
    }
    (!batches.is_empty()).then_some(batches)
}

/// Produce v0-2 carry the message formats before RecordBatch v2, which floodgate does not
/// store. Kafka advertises these versions (old librdkafka refuses a broker that does not) and
/// refuses them; the protocol crate no longer knows them, so they are read and answered here:
/// every partition gets UNSUPPORTED_FOR_MESSAGE_FORMAT. Returns the response body (`None` for
/// acks=0), or why the request does not parse.
pub(crate) fn refuse_old(mut body: Bytes, version: i16) -> Result<Option<Bytes>, String> {
    use bytes::{Buf, BufMut, BytesMut};
    let cut = || format!("a Produce v{version} request cut short");
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n {
            Err(cut())
        } else {
            Ok(())
        }
    };
    need(&body, 6)?;
    let acks = body.get_i16();
    let _timeout_ms = body.get_i32();
    let mut out = BytesMut::new();
    need(&body, 4)?;
    let topics = body.get_i32();
    if topics < 0 || topics as usize > body.remaining() {
        return Err(format!("a Produce v{version} request with {topics} topics"));
    }
    out.put_i32(topics);
    for _ in 0..topics {
        need(&body, 2)?;
        let len = body.get_i16();
        let len = usize::try_from(len).map_err(|_| cut())?;
        need(&body, len + 4)?;
        let name = body.split_to(len);
        out.put_i16(len as i16);
        out.put_slice(&name);
        let partitions = body.get_i32();
        if partitions < 0 || partitions as usize > body.remaining() {
            return Err(format!(
                "a Produce v{version} request with {partitions} partitions"
            ));
        }
        out.put_i32(partitions);
        for _ in 0..partitions {
            need(&body, 8)?;
            let index = body.get_i32();
            let records = usize::try_from(body.get_i32()).unwrap_or(0);
            need(&body, records)?;
            body.advance(records);
            out.put_i32(index);
            out.put_i16(ResponseError::UnsupportedForMessageFormat.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    Ok((acks != 0).then(|| out.freeze()))
}
