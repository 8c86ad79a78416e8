//! ListOffsets: a partition's earliest offset (timestamp -2), its end (-1: the next offset,
//! all of it committed, as floodgate has no transactions), the record with the largest
//! timestamp (-3), or the first offset whose record is at least as recent as a timestamp.
//! DeleteRecords: a partition's records below an offset are deleted (its earliest offset moves
//! there, durably before the answer; -1 means its end).

use floodgate::Offset;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};

use crate::conn::ThreadState;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// From v7: the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;

pub(crate) fn list_offsets(state: &ThreadState, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let log = &state.shared.log;
    let mut response = ListOffsetsResponse::default();
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = p.partition_index;
            answer.timestamp = -1;
            answer.offset = -1;
            let partition = u32::try_from(p.partition_index).unwrap_or(u32::MAX);
            match find(log, &name, partition, p.timestamp) {
                Ok((offset, timestamp)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
                }
                Err(e) => answer.error_code = super::error_code(&e),
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}

/// (offset, timestamp) for a ListOffsets query; (-1, -1) when no record is that recent.
fn find(
    log: &floodgate::Log,
    topic: &str,
    partition: u32,
    timestamp: i64,
) -> floodgate::Result<(i64, i64)> {
    let (earliest, next) = log.offsets(topic, partition)?;
    Ok(match timestamp {
        LATEST => (next.0 as i64, -1),
        EARLIEST => (earliest.0 as i64, -1),
        MAX_TIMESTAMP => match log.offset_of_max_timestamp(topic, partition)? {
            Some((Offset(o), t)) => (o as i64, t),
            None => (-1, -1),
        },
        t => match log.offset_for_timestamp(topic, partition, t)? {
            None => (-1, -1),
            Some(Offset(o)) => {
                let first = log.read(topic, partition, Offset(o), 1)?;
                let found = first.iter().find(|r| r.offset == Offset(o));
                (o as i64, found.map_or(-1, |r| r.timestamp))
            }
        },
    })
}

pub(crate) fn delete_records(
    state: &ThreadState,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let log = &state.shared.log;
    let mut response = DeleteRecordsResponse::default();
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let mut out = DeleteRecordsTopicResult::default();
        out.name = topic.name.clone();
        for p in &topic.partitions {
            let mut answer = DeleteRecordsPartitionResult::default();
            answer.partition_index = p.partition_index;
            answer.low_watermark = -1;
            let partition = u32::try_from(p.partition_index).unwrap_or(u32::MAX);
            let deleted = match super::metadata::find(log, &name) {
                None => Err(floodgate::Error::UnknownTopic(name.clone())),
                // A negative offset other than -1 is past any end: out of range.
                Some(_) => log.offsets(&name, partition).and_then(|(_, next)| {
                    let before = match p.offset {
                        LATEST => next,
                        o => u64::try_from(o).map_or(Offset(u64::MAX), Offset),
                    };
                    log.delete_records(&name, partition, before)
                }),
            };
            match deleted {
                Ok(earliest) => answer.low_watermark = earliest.0 as i64,
                Err(e) => answer.error_code = super::error_code(&e),
            }
            out.partitions.push(answer);
        }
        response.topics.push(out);
    }
    response
}
