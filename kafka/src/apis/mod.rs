//! The requests the server answers: each API's body decoded at the version the client sent,
//! handled against the log, and its response encoded at that version.

mod acls;
mod configs;
mod consumer_groups;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod topics;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsResponse, ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeAclsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    ResponseHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::conn::{Request, ThreadState};
use crate::versions::{SUPPORTED_APIS, api};

/// A request being answered: its response frame (size included) as chunks written in order,
/// or `None` when no response is sent (Produce with acks=0); an error closes the connection
/// with its reason.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Option<Frame>, String>>>>;

/// A response frame as the chunks it is written from: most are one buffer; a fetch's stored
/// batches go out as they were read, between the encoded fields around them.
pub(crate) type Frame = Vec<Bytes>;

/// A request decoded at its version.
pub(crate) enum Decoded {
    ApiVersions,
    Metadata(MetadataRequest),
    /// Produce v0-2: the response body, written by hand (`None` for acks=0).
    OldProduce(Option<Bytes>),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DeleteRecords(DeleteRecordsRequest),
    FindCoordinator(FindCoordinatorRequest),
    DescribeConfigs(DescribeConfigsRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    InitProducerId(InitProducerIdRequest),
    DescribeAcls(DescribeAclsRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
}

/// Decodes `req`'s body, or says why the connection is closed instead: an API or version the
/// server does not serve, or a body that does not decode. A client that sends what it was not
/// offered, or bytes that do not parse, cannot be answered in a form it would read.
pub(crate) fn decode(req: &mut Request) -> Result<Decoded, String> {
    let (key, version, body) = (req.key, req.version, &mut req.body);
    if key == ApiKey::ApiVersions {
        return Ok(Decoded::ApiVersions);
    }
    let Some(served) = api(key) else {
        return Err(format!("{key:?} is not served"));
    };
    if !(served.min..=served.max).contains(&version) {
        return Err(format!(
            "{key:?} v{version} is not served (v{}-{} are)",
            served.min, served.max
        ));
    }
    let malformed =
        |e: &dyn std::fmt::Display| format!("a malformed {key:?} v{version} request: {e}");
    crate::bounds::check(key, version, body).map_err(|e| malformed(&e))?;
    macro_rules! decoded {
        ($variant:ident) => {
            Decoded::$variant(Decodable::decode(body, version).map_err(|e| malformed(&e))?)
        };
    }
    Ok(match key {
        ApiKey::Metadata => decoded!(Metadata),
        ApiKey::Produce if version < served.min_served => Decoded::OldProduce(
            produce::refuse_old(std::mem::take(body), version).map_err(|e| malformed(&e))?,
        ),
        ApiKey::Produce => decoded!(Produce),
        ApiKey::Fetch => decoded!(Fetch),
        ApiKey::ListOffsets => decoded!(ListOffsets),
        ApiKey::CreateTopics => decoded!(CreateTopics),
        ApiKey::DeleteTopics => decoded!(DeleteTopics),
        ApiKey::CreatePartitions => decoded!(CreatePartitions),
        ApiKey::DeleteRecords => decoded!(DeleteRecords),
        ApiKey::FindCoordinator => decoded!(FindCoordinator),
        ApiKey::DescribeConfigs => decoded!(DescribeConfigs),
        ApiKey::JoinGroup => decoded!(JoinGroup),
        ApiKey::SyncGroup => decoded!(SyncGroup),
        ApiKey::Heartbeat => decoded!(Heartbeat),
        ApiKey::LeaveGroup => decoded!(LeaveGroup),
        ApiKey::OffsetCommit => decoded!(OffsetCommit),
        ApiKey::OffsetFetch => decoded!(OffsetFetch),
        ApiKey::DescribeGroups => decoded!(DescribeGroups),
        ApiKey::ListGroups => decoded!(ListGroups),
        ApiKey::DeleteGroups => decoded!(DeleteGroups),
        ApiKey::IncrementalAlterConfigs => decoded!(IncrementalAlterConfigs),
        ApiKey::AlterConfigs => decoded!(AlterConfigs),
        ApiKey::InitProducerId => decoded!(InitProducerId),
        ApiKey::DescribeAcls => decoded!(DescribeAcls),
        ApiKey::CreateAcls => decoded!(CreateAcls),
        ApiKey::DeleteAcls => decoded!(DeleteAcls),
        ApiKey::ConsumerGroupHeartbeat => decoded!(ConsumerGroupHeartbeat),
        ApiKey::ConsumerGroupDescribe => decoded!(ConsumerGroupDescribe),
        other => return Err(format!("{other:?} has no handler")),
    })
}

/// The task that answers `req` from the client at `peer` (see [`decode`] for what closes the
/// connection instead).
pub(crate) fn handle(
    state: &Rc<ThreadState>,
    mut req: Request,
    peer: &Rc<str>,
) -> Result<Answer, String> {
    let decoded = decode(&mut req)?;
    let (key, version, id) = (req.key, req.version, req.header.correlation_id);
    let state = Rc::clone(state);
    // Answers computed on the spot.
    macro_rules! now {
        ($response:expr) => {{
            let response = $response;
            Box::pin(async move { frame(key, version, id, &response).map(|f| Some(vec![f])) })
        }};
    }
    Ok(match decoded {
        Decoded::ApiVersions => {
            let frame = api_versions(version, id);
            Box::pin(async move { frame.map(|f| Some(vec![f])) })
        }
        Decoded::Metadata(request) => Box::pin(async move {
            let response = metadata::metadata(&state, request, version);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::OldProduce(response) => {
            Box::pin(async move { Ok(response.map(|body| vec![raw_frame(id, &body)])) })
        }
        Decoded::Produce(request) => Box::pin(async move {
            let started = Instant::now();
            let response = produce::produce(&state, request).await;
            let Some(response) = response else {
                return Ok(None);
            };
            let metrics = &state.shared.metrics;
            metrics.produce_ack.observe(started.elapsed());
            let codes = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses);
            if codes.map(|p| p.error_code).any(|c| c != 0) {
                metrics.error(key);
            }
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::Fetch(request) => {
            let client_id = (req.header.client_id.as_deref()).unwrap_or_default();
            let (client_id, host) = (client_id.to_owned(), format!("/{peer}"));
            Box::pin(async move {
                let started = Instant::now();
                let (response, sets) = fetch::fetch(&state, request, (&client_id, &host)).await;
                let metrics = &state.shared.metrics;
                metrics.fetch.observe(started.elapsed());
                let codes = response.responses.iter().flat_map(|t| &t.partitions);
                if codes.map(|p| p.error_code).any(|c| c != 0) {
                    metrics.error(key);
                }
                fetch::fetch_frame(version, id, &response, &sets).map(Some)
            })
        }
        Decoded::ListOffsets(request) => Box::pin(async move {
            let response = offsets::list_offsets(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::CreateTopics(request) => Box::pin(async move {
            let response = topics::create_topics(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::DeleteTopics(request) => Box::pin(async move {
            let response = topics::delete_topics(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::CreatePartitions(request) => Box::pin(async move {
            let response = topics::create_partitions(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::DeleteRecords(request) => Box::pin(async move {
            let response = offsets::delete_records(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::DescribeConfigs(request) => Box::pin(async move {
            let response = configs::describe_configs(&state, request);
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::FindCoordinator(request) => {
            now!(groups::find_coordinator(&state, request, version))
        }
        Decoded::JoinGroup(request) => {
            let client_id = (req.header.client_id.as_deref()).unwrap_or_default();
            let (client_id, host) = (client_id.to_owned(), format!("/{peer}"));
            Box::pin(async move {
                let response = groups::join_group(&state, request, version, client_id, host).await;
                frame(key, version, id, &response).map(|f| Some(vec![f]))
            })
        }
        Decoded::ConsumerGroupHeartbeat(request) => {
            let client_id = (req.header.client_id.as_deref()).unwrap_or_default();
            let host = format!("/{peer}");
            now!(consumer_groups::consumer_group_heartbeat(
                &state, request, version, client_id, &host
            ))
        }
        Decoded::ConsumerGroupDescribe(request) => {
            now!(consumer_groups::consumer_group_describe(&state, request))
        }
        Decoded::SyncGroup(request) => Box::pin(async move {
            let response = groups::sync_group(&state, request, version).await;
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::Heartbeat(request) => now!(groups::heartbeat(&state, request)),
        Decoded::LeaveGroup(request) => now!(groups::leave_group(&state, request, version)),
        Decoded::OffsetCommit(request) => Box::pin(async move {
            let response = groups::offset_commit(&state, request, version).await;
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::OffsetFetch(request) => now!(groups::offset_fetch(&state, request, version)),
        Decoded::DescribeGroups(request) => {
            now!(groups::describe_groups(&state, request, version))
        }
        Decoded::ListGroups(request) => now!(groups::list_groups(&state, request, version)),
        Decoded::IncrementalAlterConfigs(request) => {
            now!(configs::incremental_alter_configs(&state, request))
        }
        Decoded::AlterConfigs(request) => now!(configs::alter_configs(&state, request)),
        Decoded::DescribeAcls(request) => now!(acls::describe_acls(request)),
        Decoded::CreateAcls(request) => now!(acls::create_acls(request)),
        Decoded::DeleteAcls(request) => now!(acls::delete_acls(request)),
        Decoded::InitProducerId(request) => Box::pin(async move {
            let response = producer_id::init_producer_id(&state, request).await;
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
        Decoded::DeleteGroups(request) => Box::pin(async move {
            let response = groups::delete_groups(&state, request).await;
            frame(key, version, id, &response).map(|f| Some(vec![f]))
        }),
    })
}

/// Decodes a request frame's body (the bytes after its 4-byte size) as the server would, and a
/// Produce's record sets as far as the server reads them before the log checks each batch:
/// what a malformed request's connection is closed for, and nothing else. For fuzzing.
pub fn check_request(frame: Bytes) -> Result<(), String> {
    let mut req = Request::decode(frame)?;
    if let Decoded::Produce(produce) = decode(&mut req)? {
        for topic in &produce.topic_data {
            for data in &topic.partition_data {
                let records = data.records.clone().unwrap_or_default();
                for batch in produce::split(&records).unwrap_or_default() {
                    let _ = floodgate::producer::check_batch(batch, usize::MAX);
                }
            }
        }
    }
    Ok(())
}

/// ApiVersions' response. A version above the highest served gets the v0 layout with
/// UNSUPPORTED_VERSION and the list, so the client can pick one it shares (the protocol's rule).
fn api_versions(version: i16, id: i32) -> Result<Bytes, String> {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED_APIS
        .iter()
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min;
            v.max_version = a.max;
            v
        })
        .collect();
    let served = api(ApiKey::ApiVersions).expect("ApiVersions is served");
    if version > served.max || version < 0 {
        response.error_code = ResponseError::UnsupportedVersion.code();
        return frame(ApiKey::ApiVersions, 0, id, &response);
    }
    frame(ApiKey::ApiVersions, version, id, &response)
}

/// A response frame: size, header (at the header version `key` and `version` call for), body.
/// A response that does not encode at its version (a field set that the version lacks) is a
/// fault of this server: the connection closes with the reason rather than send it.
fn frame<R: Encodable>(key: ApiKey, version: i16, id: i32, body: &R) -> Result<Bytes, String> {
    let mut header = ResponseHeader::default();
    header.correlation_id = id;
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let encoded = header
        .encode(&mut buf, key.response_header_version(version))
        .and_then(|()| body.encode(&mut buf, version));
    if let Err(e) = encoded {
        // The first line: the protocol crate's errors carry a backtrace after it.
        let reason = e.to_string();
        let reason = reason.lines().next().unwrap_or_default();
        return Err(format!(
            "the {key:?} v{version} response did not encode: {reason}"
        ));
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// A response frame of a body encoded by hand, with the v0 response header.
fn raw_frame(id: i32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_i32((4 + body.len()) as i32);
    buf.put_i32(id);
    buf.put_slice(body);
    buf.freeze()
}

/// The protocol's error code for a library error of a request on a partition.
pub(crate) fn error_code(e: &floodgate::Error) -> i16 {
    use floodgate::Error as E;
    let code = match e {
        E::UnknownTopic(_) | E::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        E::InvalidBatch(_) => ResponseError::CorruptMessage,
        E::UnsupportedBatch(_) => ResponseError::InvalidRecord,
        E::InvalidTopicName { .. } | E::ReservedTopicName(_) => {
            ResponseError::InvalidTopicException
        }
        E::Full | E::LogFull { .. } | E::Timeout(_) => ResponseError::RequestTimedOut,
        E::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        E::TopicRetentionAboveLog { .. } | E::TopicMessageBytesAboveLog { .. } => {
            ResponseError::InvalidConfig
        }
        E::ProducerFenced => ResponseError::InvalidProducerEpoch,
        _ => ResponseError::KafkaStorageError,
    };
    code.code()
}
