//! The request decoder against bytes from the network: whatever arrives, it returns an error
//! or a request, never panics (the same property as the fuzz target `request`, bounded).

use bytes::{BufMut, Bytes, BytesMut};
use floodgate_kafka::check_request;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader, TopicName,
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
    ]
}

/// The protocol crate reserves an array's declared length before decoding its elements: a
/// request declaring two billion topics in no bytes would make it ask for gigabytes and abort
/// the process. Refused before that, for every served API.
#[test]
fn a_huge_array_length_is_refused_before_anything_is_allocated() {
    let requests: [(ApiKey, i16, &[u8]); 5] = [
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
    for seed in seeds() {
        check_request(Bytes::from(seed)).unwrap();
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = check_request(Bytes::from(bytes));
    }

    #[test]
    fn damaged_requests_never_panic(
        which in 0usize..7,
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
