//! The request decoder against bytes from the network: whatever arrives, it returns an error
//! or a request, never panics (the same property as the fuzz target `request`, bounded).

use bytes::{BufMut, Bytes, BytesMut};
use floodgate_kafka::check_request;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as HeartbeatPartitions;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
    CreateAclsRequest, DeleteAclsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DescribeAclsRequest, DescribeGroupsRequest, FetchRequest, GroupId, HeartbeatRequest,
    IncrementalAlterConfigsRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, RequestHeader,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

/// A request frame's body (header and request, without the size) as a client encodes it.
fn body<R: Encodable>(key: ApiKey, version: i16, request: &R) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Valid requests of every kind the server decodes, with a batch in the Produce.
fn seeds() -> Vec<Vec<u8>> {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 5,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: IndexMap::new(),
    };
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, &[record], &options).unwrap();
    let mut data = PartitionProduceData::default();
    data.records = Some(batch.freeze());
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("t"));
    topic.partition_data = vec![data];
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.topic_data = vec![topic];
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_static_str("t"));
    fetch_topic.partitions = vec![FetchPartition::default()];
    let mut fetch = FetchRequest::default();
    fetch.topics = vec![fetch_topic];
    let mut old_produce = vec![0, 0, 0, 2, 0, 0, 0, 1, 0xff, 0xff];
    old_produce.extend_from_slice(&[0xff, 0xff, 0, 0, 3, 0xe8, 0, 0, 0, 1, 0, 1, b't']);
    old_produce.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 9, 9]);
    vec![
        body(ApiKey::Produce, 9, &produce),
        body(ApiKey::Produce, 3, &produce),
        body(ApiKey::Fetch, 12, &fetch),
        body(ApiKey::Fetch, 4, &fetch),
        body(ApiKey::Metadata, 12, &MetadataRequest::default()),
        body(ApiKey::Metadata, 0, &MetadataRequest::default()),
        old_produce,
        body(ApiKey::JoinGroup, 9, &join_group(9)),
        body(ApiKey::OffsetCommit, 8, &offset_commit(8)),
    ]
}

/// How many requests `seeds` gives.
const SEEDS: usize = 9;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// A JoinGroup with every field version `v` has filled.
fn join_group(v: i16) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.session_timeout_ms = 10_000;
    if v >= 1 {
        r.rebalance_timeout_ms = 10_000;
    }
    r.member_id = s("m");
    if v >= 5 {
        r.group_instance_id = Some(s("i"));
    }
    r.protocol_type = s("consumer");
    if v >= 8 {
        r.reason = Some(s("why"));
    }
    r.protocols = ["range", "roundrobin"]
        .iter()
        .map(|n| {
            let mut p = JoinGroupRequestProtocol::default();
            p.name = s(n);
            p.metadata = Bytes::from_static(b"meta");
            p
        })
        .collect();
    r
}

/// An OffsetCommit with every field version `v` has filled.
fn offset_commit(v: i16) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.committed_offset = 5;
    p.committed_metadata = Some(s("meta"));
    if v >= 6 {
        p.committed_leader_epoch = 3;
    }
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t"));
    t.partitions = vec![p.clone(), p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_id = s("m");
    if v >= 7 {
        r.group_instance_id = Some(s("i"));
    }
    if v <= 4 {
        r.retention_time_ms = 60_000;
    }
    r.topics = vec![t.clone(), t];
    r
}

fn sync_group(v: i16) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.member_id = s("m");
    if v >= 3 {
        r.group_instance_id = Some(s("i"));
    }
    if v >= 5 {
        r.protocol_type = Some(s("consumer"));
        r.protocol_name = Some(s("range"));
    }
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = s("m");
    a.assignment = Bytes::from_static(b"assignment");
    r.assignments = vec![a.clone(), a];
    r
}

fn leave_group(v: i16) -> LeaveGroupRequest {
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    if v <= 2 {
        r.member_id = s("m");
        return r;
    }
    let mut who = MemberIdentity::default();
    who.member_id = s("m");
    who.group_instance_id = Some(s("i"));
    if v >= 5 {
        who.reason = Some(s("why"));
    }
    r.members = vec![who.clone(), who];
    r
}

fn offset_fetch(v: i16) -> OffsetFetchRequest {
    let mut r = OffsetFetchRequest::default();
    if v >= 7 {
        r.require_stable = true;
    }
    if v <= 7 {
        r.group_id = GroupId(s("g"));
        let mut t = OffsetFetchRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partition_indexes = vec![0, 1];
        r.topics = Some(vec![t.clone(), t]);
        return r;
    }
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s("g"));
    if v >= 9 {
        g.member_id = Some(s("m"));
        g.member_epoch = 4;
    }
    let mut t = OffsetFetchRequestTopics::default();
    t.name = TopicName(s("t"));
    t.partition_indexes = vec![0, 1];
    g.topics = Some(vec![t.clone(), t]);
    r.groups = vec![g.clone(), g];
    r
}

/// Every group request (and DeleteRecords, the config alterations and the ACL requests) as a
/// client fills it, at every version served.
fn group_requests() -> Vec<Vec<u8>> {
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![GroupId(s("g")), GroupId(s("h"))];
    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![GroupId(s("g")), GroupId(s("h"))];
    let mut out = Vec::new();
    for api in floodgate_kafka::SUPPORTED_APIS {
        for v in api.min..=api.max {
            let b = match api.key {
                ApiKey::JoinGroup => body(api.key, v, &join_group(v)),
                ApiKey::SyncGroup => body(api.key, v, &sync_group(v)),
                ApiKey::Heartbeat => {
                    let mut r = HeartbeatRequest::default();
                    r.group_id = GroupId(s("g"));
                    r.member_id = s("m");
                    if v >= 3 {
                        r.group_instance_id = Some(s("i"));
                    }
                    body(api.key, v, &r)
                }
                ApiKey::LeaveGroup => body(api.key, v, &leave_group(v)),
                ApiKey::OffsetCommit => body(api.key, v, &offset_commit(v)),
                ApiKey::OffsetFetch => body(api.key, v, &offset_fetch(v)),
                ApiKey::DescribeGroups => body(api.key, v, &describe),
                ApiKey::ListGroups => {
                    let mut r = ListGroupsRequest::default();
                    if v >= 4 {
                        r.states_filter = vec![s("Stable"), s("Empty")];
                    }
                    if v >= 5 {
                        r.types_filter = vec![s("consumer"), s("classic")];
                    }
                    body(api.key, v, &r)
                }
                ApiKey::ConsumerGroupHeartbeat => {
                    let mut owned = HeartbeatPartitions::default();
                    owned.topic_id = uuid::Uuid::from_u128(7);
                    owned.partitions = vec![0, 3];
                    let mut r = ConsumerGroupHeartbeatRequest::default();
                    r.group_id = GroupId(s("g"));
                    r.member_id = s("m");
                    r.member_epoch = 3;
                    r.instance_id = Some(s("i"));
                    r.rack_id = Some(s("r"));
                    r.rebalance_timeout_ms = 1000;
                    r.subscribed_topic_names = Some(vec![TopicName(s("t")), TopicName(s("u"))]);
                    if v >= 1 {
                        r.subscribed_topic_regex = Some(s(""));
                    }
                    r.server_assignor = Some(s("uniform"));
                    r.topic_partitions = Some(vec![owned.clone(), owned]);
                    body(api.key, v, &r)
                }
                ApiKey::ConsumerGroupDescribe => {
                    let mut r = ConsumerGroupDescribeRequest::default();
                    r.group_ids = vec![GroupId(s("g")), GroupId(s("h"))];
                    r.include_authorized_operations = true;
                    body(api.key, v, &r)
                }
                ApiKey::DeleteGroups => body(api.key, v, &delete),
                ApiKey::DeleteRecords => {
                    let mut p = DeleteRecordsPartition::default();
                    p.partition_index = 1;
                    p.offset = 7;
                    let mut t = DeleteRecordsTopic::default();
                    t.name = TopicName(s("t"));
                    t.partitions = vec![p.clone(), p];
                    let mut r = DeleteRecordsRequest::default();
                    r.topics = vec![t.clone(), t];
                    r.timeout_ms = 1000;
                    body(api.key, v, &r)
                }
                ApiKey::IncrementalAlterConfigs => {
                    let mut c = AlterableConfig::default();
                    c.name = s("floodgate.rate.msgs.per.sec");
                    c.value = Some(s("80000"));
                    let mut res = AlterConfigsResource::default();
                    res.resource_type = 32;
                    res.resource_name = s("g");
                    res.configs = vec![c.clone(), c];
                    let mut r = IncrementalAlterConfigsRequest::default();
                    r.resources = vec![res.clone(), res];
                    r.validate_only = true;
                    body(api.key, v, &r)
                }
                ApiKey::AlterConfigs => {
                    let mut c = LegacyConfig::default();
                    c.name = s("retention.ms");
                    c.value = Some(s("60000"));
                    let mut res = LegacyResource::default();
                    res.resource_type = 2;
                    res.resource_name = s("t");
                    res.configs = vec![c.clone(), c];
                    let mut r = AlterConfigsRequest::default();
                    r.resources = vec![res.clone(), res];
                    body(api.key, v, &r)
                }
                ApiKey::DescribeAcls => {
                    let mut r = DescribeAclsRequest::default();
                    r.resource_type_filter = 2;
                    r.resource_name_filter = Some(s("t"));
                    r.pattern_type_filter = 3;
                    r.principal_filter = Some(s("User:a"));
                    r.host_filter = Some(s("*"));
                    r.operation = 3;
                    r.permission_type = 3;
                    body(api.key, v, &r)
                }
                ApiKey::CreateAcls => {
                    let mut c = AclCreation::default();
                    c.resource_type = 2;
                    c.resource_name = s("t");
                    c.resource_pattern_type = 3;
                    c.principal = s("User:a");
                    c.host = s("*");
                    c.operation = 3;
                    c.permission_type = 3;
                    let mut r = CreateAclsRequest::default();
                    r.creations = vec![c.clone(), c];
                    body(api.key, v, &r)
                }
                ApiKey::DeleteAcls => {
                    let mut f = DeleteAclsFilter::default();
                    f.resource_type_filter = 2;
                    f.resource_name_filter = Some(s("t"));
                    f.pattern_type_filter = 3;
                    f.principal_filter = None;
                    f.host_filter = Some(s("*"));
                    f.operation = 3;
                    f.permission_type = 3;
                    let mut r = DeleteAclsRequest::default();
                    r.filters = vec![f.clone(), f];
                    body(api.key, v, &r)
                }
                _ => continue,
            };
            out.push(b);
        }
    }
    out
}

/// The protocol crate reserves an array's declared length before decoding its elements: a
/// request declaring two billion topics in no bytes would make it ask for gigabytes and abort
/// the process. Refused before that, for every served API.
#[test]
fn a_huge_array_length_is_refused_before_anything_is_allocated() {
    let requests: [(ApiKey, i16, &[u8]); 20] = [
        (ApiKey::Metadata, 0, &[0x7f, 0xff, 0xff, 0xff]),
        (ApiKey::Metadata, 12, &[0xff, 0xff, 0xff, 0x7f, 0]),
        (
            ApiKey::Fetch,
            4,
            &[
                0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0x7f, 0xff, 0xff,
                0xff,
            ],
        ),
        (ApiKey::CreateTopics, 2, &[0x40, 0, 0, 0]),
        (ApiKey::DeleteTopics, 1, &[0x40, 0, 0, 0]),
        // Group "g", session 10 s, member "", type "c", then two billion protocols.
        (
            ApiKey::JoinGroup,
            0,
            &[
                0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0, 1, b'c', 0x7f, 0xff, 0xff, 0xff,
            ],
        ),
        // Group "g", generation 1, member "m", then the assignments.
        (
            ApiKey::SyncGroup,
            0,
            &[0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm', 0x7f, 0xff, 0xff, 0xff],
        ),
        (ApiKey::LeaveGroup, 3, &[0, 1, b'g', 0x7f, 0xff, 0xff, 0xff]),
        // Group "g", generation 1, member "m", retention -1, then the topics.
        (
            ApiKey::OffsetCommit,
            2,
            &[
                0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x7f, 0xff, 0xff, 0xff,
            ],
        ),
        (
            ApiKey::OffsetFetch,
            1,
            &[0, 1, b'g', 0x7f, 0xff, 0xff, 0xff],
        ),
        (ApiKey::OffsetFetch, 8, &[0xff, 0xff, 0xff, 0x7f, 0]),
        (ApiKey::DescribeGroups, 0, &[0x40, 0, 0, 0]),
        (ApiKey::ListGroups, 4, &[0xff, 0xff, 0xff, 0x7f, 0]),
        (ApiKey::DeleteGroups, 0, &[0x40, 0, 0, 0]),
        (ApiKey::IncrementalAlterConfigs, 0, &[0x40, 0, 0, 0]),
        (ApiKey::DeleteRecords, 0, &[0x40, 0, 0, 0]),
        (ApiKey::AlterConfigs, 0, &[0x40, 0, 0, 0]),
        (ApiKey::CreateAcls, 1, &[0x40, 0, 0, 0]),
        (ApiKey::DeleteAcls, 3, &[0xff, 0xff, 0xff, 0x7f]),
        // Topic "t", then two billion partitions.
        (
            ApiKey::DeleteRecords,
            2,
            &[2, 2, b't', 0xff, 0xff, 0xff, 0x7f],
        ),
    ];
    for (key, version, body) in requests {
        let mut frame = (key as i16).to_be_bytes().to_vec();
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&1i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes());
        if key.request_header_version(version) >= 2 {
            frame.push(0); // no tagged fields
        }
        frame.extend_from_slice(body);
        let e = check_request(Bytes::from(frame)).unwrap_err();
        assert!(e.contains("array"), "{key:?} v{version}: {e}");
    }
}

#[test]
fn valid_requests_decode() {
    assert_eq!(seeds().len(), SEEDS);
    for seed in seeds() {
        check_request(Bytes::from(seed)).unwrap();
    }
}

/// The array check walks each group API's layout as the protocol crate encodes it, at every
/// version served: a request with every field filled passes.
#[test]
fn group_requests_pass_the_array_check_at_every_version() {
    let requests = group_requests();
    assert!(requests.len() > 40, "{}", requests.len());
    for r in requests {
        check_request(Bytes::from(r.clone()))
            .unwrap_or_else(|e| panic!("{:?} v{}: {e}", &r[..2], i16::from_be_bytes([r[2], r[3]])));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = check_request(Bytes::from(bytes));
    }

    #[test]
    fn damaged_requests_never_panic(
        which in 0usize..SEEDS,
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let mut seed = seeds().swap_remove(which);
        let at = at % seed.len();
        seed[at] = byte;
        seed.truncate(cut % (seed.len() + 1));
        let mut framed = BytesMut::new();
        framed.put_slice(&seed);
        let _ = check_request(framed.freeze());
    }
}

/// The fuzz target's seeds and saved crashers (`fuzz/corpus/request`, `fuzz/regressions/request`)
/// through its property.
#[test]
fn fuzz_seeds_and_regressions_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(files) = std::fs::read_dir(root.join(folder).join("request")) else {
            continue;
        };
        for f in files {
            let data = std::fs::read(f.unwrap().path()).unwrap();
            let _ = check_request(Bytes::from(data));
            ran += 1;
        }
    }
    assert!(ran >= 7, "the seeds are there ({ran})");
}
