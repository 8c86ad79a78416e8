//! Fetch: the stored batches of each partition from the one holding the fetch offset on, as
//! they are on disk, within the request's byte limits but always at least one whole batch;
//! when they come to fewer than `min_bytes`, the fetch waits (up to `max_wait_ms`) for the
//! shards to publish more. Sessionless: every response has session id 0, which a client
//! asking for a session takes as "no session".

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use floodgate::Offset;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::conn::ThreadState;

/// A partition this far behind its end is read with read-ahead (a backlog being drained);
/// closer, only the batches asked for are read.
const READ_AHEAD_RECORDS_BEHIND: u64 = 10_000;

pub(crate) async fn fetch(state: &ThreadState, req: FetchRequest) -> FetchResponse {
    let log = &state.shared.log;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    loop {
        let mark = log.publish_mark();
        let (response, bytes) = read_all(state, &req);
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || now >= deadline || errored(&response) {
            count(state, &response);
            return response;
        }
        // Nothing (or too little) yet: wait for a publish, then read again.
        let _ = tokio::time::timeout(deadline - now, log.published_since(mark)).await;
    }
}

/// Counts the records and bytes `response` hands out, by topic.
fn count(state: &ThreadState, response: &FetchResponse) {
    for topic in &response.responses {
        let (mut records, mut bytes) = (0u64, 0u64);
        for set in topic.partitions.iter().filter_map(|p| p.records.as_ref()) {
            bytes += set.len() as u64;
            // Each batch: baseOffset (8), batchLength (4), ..., recordCount at 57.
            let mut at = 0usize;
            while let Some(len) = set.get(at + 8..at + 12) {
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                if let Some(n) = set.get(at + 57..at + 61) {
                    records += u64::from(u32::from_be_bytes(n.try_into().expect("4 bytes")));
                }
                at += 12 + len;
            }
        }
        if bytes > 0 {
            state.shared.metrics.fetched(&topic.topic.0, records, bytes);
        }
    }
}

fn errored(response: &FetchResponse) -> bool {
    (response.responses.iter()).any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

/// One pass over the request's partitions; returns the response and the record bytes in it.
fn read_all(state: &ThreadState, req: &FetchRequest) -> (FetchResponse, usize) {
    let log = &state.shared.log;
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0).max(1);
    let mut total = 0usize;
    let mut response = FetchResponse::default();
    for topic in &req.topics {
        let name = topic.topic.0.to_string();
        let mut out = FetchableTopicResponse::default();
        out.topic = topic.topic.clone();
        out.topic_id = topic.topic_id;
        for p in &topic.partitions {
            let mut data = PartitionData::default();
            data.partition_index = p.partition;
            data.high_watermark = -1;
            data.last_stable_offset = -1;
            data.log_start_offset = -1;
            data.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
            data.records = Some(Bytes::new());
            let partition = u32::try_from(p.partition).unwrap_or(u32::MAX);
            match log.offsets(&name, partition) {
                Err(e) => data.error_code = super::error_code(&e),
                Ok((earliest, next)) => {
                    data.high_watermark = next.0 as i64;
                    data.last_stable_offset = next.0 as i64;
                    data.log_start_offset = earliest.0 as i64;
                    let offset = u64::try_from(p.fetch_offset).unwrap_or(u64::MAX);
                    // Past the byte limit only an empty answer, unless nothing was sent yet:
                    // then one whole batch, however large.
                    let room = max_bytes.saturating_sub(total);
                    let asked = usize::try_from(p.partition_max_bytes)
                        .unwrap_or(0)
                        .min(room);
                    if offset < next.0 && (asked > 0 || total == 0) {
                        let ahead = next.0 - offset > READ_AHEAD_RECORDS_BEHIND;
                        match log.read_batches(
                            &name,
                            partition,
                            Offset(offset),
                            asked.max(1),
                            ahead,
                        ) {
                            Ok((batches, _)) => {
                                let records = join(batches);
                                total += records.len();
                                data.records = Some(records);
                            }
                            Err(e) => data.error_code = super::error_code(&e),
                        }
                    } else if offset > next.0 || offset < earliest.0 {
                        data.error_code = kafka_protocol::ResponseError::OffsetOutOfRange.code();
                    }
                }
            }
            out.partitions.push(data);
        }
        response.responses.push(out);
    }
    (response, total)
}

/// The batches as one record set (they are contiguous in the response).
fn join(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        1 => batches.into_iter().next().expect("one batch"),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in &batches {
                out.extend_from_slice(b);
            }
            out.freeze()
        }
    }
}
