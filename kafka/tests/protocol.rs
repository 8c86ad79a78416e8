//! The server against a minimal client of the protocol: versions, produce and fetch of a
//! client's batch as it was sent, long polls, refusals, and bad input that closes only its
//! own connection.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Client, client_batch, client_batch_of, fetch_request, name, produce_request, serve, stop,
    test_dir,
};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

fn metadata(client: &mut Client, topic: &str, create: bool) -> MetadataResponse {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = create;
    client.call(ApiKey::Metadata, 12, &req)
}

/// A request frame with a v1 header (no tagged fields) and `body` as given.
fn raw_request(key: ApiKey, version: i16, id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(key as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // no client id
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// `batch` as stored at `base_offset`: the broker sets the base offset and leader epoch 0.
fn stored(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&0i32.to_be_bytes());
    b
}

#[test]
fn api_versions_lists_what_is_served_and_answers_a_newer_version_in_v0() {
    let dir = test_dir("kafka-versions");
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    let response: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
    let range = |key: ApiKey| {
        let v = response.api_keys.iter().find(|v| v.api_key == key as i16);
        v.map(|v| (v.min_version, v.max_version))
    };
    assert_eq!(range(ApiKey::Produce), Some((0, 11)));
    assert_eq!(range(ApiKey::Fetch), Some((4, 12)));
    assert_eq!(range(ApiKey::Metadata), Some((0, 12)));
    assert_eq!(range(ApiKey::ApiVersions), Some((0, 3)));
    // A version past the highest (v9, with a body the server cannot know): the v0 layout,
    // UNSUPPORTED_VERSION and the list.
    // (The header is v2: no tagged fields, 0, after the v1 fields.)
    client
        .send_raw(&raw_request(ApiKey::ApiVersions, 9, 41, &[0, 1, 2, 3]))
        .unwrap();
    let (got, mut body) = client.receive_raw(ApiKey::ApiVersions, 0).unwrap();
    assert_eq!(got, 41);
    let old =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    assert_eq!(old.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(old.api_keys.len(), response.api_keys.len());
    stop(log, server);
}

#[test]
fn a_produced_batch_is_fetched_as_it_was_sent() {
    let dir = test_dir("kafka-produce-fetch");
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    // Auto-created by the metadata request.
    let meta = metadata(&mut client, "orders", true);
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 1);
    assert_eq!(meta.brokers[0].port, i32::from(server.local_addr().port()));
    let (a, b, c) = (client_batch(5), client_batch(3), client_batch(3));
    assert_eq!(
        i32::from_be_bytes(a[8..12].try_into().unwrap()) as usize + 12,
        a.len()
    );
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request("orders", 0, a.clone(), -1),
    );
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // A record set of two batches: both stored.
    let mut two = b.to_vec();
    two.extend_from_slice(&c);
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request("orders", 0, Bytes::from(two), -1),
    );
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 5));
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, 0));
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 11);
    let mut expected = stored(&a, 0);
    expected.extend_from_slice(&stored(&b, 5));
    expected.extend_from_slice(&stored(&c, 8));
    assert_eq!(p.records.as_deref(), Some(&expected[..]));
    // From the middle of the second batch: from that batch whole.
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("orders", 6, 0));
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.records.as_deref(), Some(&expected[a.len()..]));
    // Past the end: OFFSET_OUT_OF_RANGE.
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("orders", 12, 0));
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::OffsetOutOfRange.code());
    // The library reads the client's records back.
    let records = log
        .read("orders", 0, floodgate::Offset(0), 1 << 20)
        .unwrap();
    assert_eq!(records.len(), 11);
    assert_eq!(records[6].value.as_deref(), Some(&b"value-1"[..]));
    assert_eq!(records[10].key.as_deref(), Some(&b"key-2"[..]));
    stop(log, server);
}

#[test]
fn a_fetch_waits_for_data_and_answers_when_it_comes() {
    let dir = test_dir("kafka-long-poll");
    let (log, server) = serve(dir.path(), |_| {});
    log.create_topic("t", floodgate::TopicConfig::new(1))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    // Nothing comes: answered empty after max_wait_ms.
    let started = Instant::now();
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("t", 0, 300));
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert_eq!(
        response.responses[0].partitions[0].records.as_deref(),
        Some(&[][..])
    );
    // A batch comes 200 ms into a 10 s wait: answered then.
    let producer = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let batch = client_batch(2);
            let mut p = log.producer();
            p.append_batch("t", 0, &batch).unwrap().wait().unwrap();
        })
    };
    let started = Instant::now();
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("t", 0, 10_000));
    let waited = started.elapsed();
    producer.join().unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 2);
    assert!(!p.records.as_ref().unwrap().is_empty());
    stop(log, server);
}

/// A fetch naming many partitions (a consumer of a topic of hundreds) answers each from its
/// own offset with its own batches, as a fetch of that partition alone would, within the
/// partition and response byte limits; a partition's error is its own.
#[test]
fn a_fetch_of_many_partitions_answers_each_partition() {
    const PARTITIONS: i32 = 300;
    let dir = test_dir("kafka-fetch-many");
    let (log, server) = serve(dir.path(), |_| {});
    log.create_topic("t", floodgate::TopicConfig::new(PARTITIONS as u32))
        .unwrap();
    // Partition p holds 1 + p % 3 batches of 2 + p % 5 records, sent round the partitions, each
    // the first of a producer of its own.
    let batch =
        |p: i32, round: i32| client_batch_of(i64::from(p * 3 + round), 2 + i64::from(p % 5));
    let batches = move |p: i32| (0..1 + p % 3).map(move |round| batch(p, round));
    let mut producer = log.producer();
    let acks: Vec<_> = (0..3)
        .flat_map(|round| (0..PARTITIONS).map(move |p| (round, p)))
        .filter(|&(round, p)| round < 1 + p % 3)
        .map(|(round, p)| producer.append_batch("t", p as u32, &batch(p, round)))
        .collect();
    for ack in acks {
        ack.unwrap().wait().unwrap();
    }
    let expected = |p: i32, from: usize| -> Vec<u8> {
        let mut out = Vec::new();
        let mut base = 0;
        for (i, b) in batches(p).enumerate() {
            if i >= from {
                out.extend_from_slice(&stored(&b, base));
            }
            base += 2 + i64::from(p % 5);
        }
        out
    };
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| i64::from((1 + p % 3) * (2 + p % 5)))
        .collect();
    let fetch = |client: &mut Client, offsets: &[(i32, i64)], partition_max: i32, max: i32| {
        let mut req = fetch_request("t", 0, 0);
        req.max_bytes = max;
        req.topics[0].partitions = (offsets.iter())
            .map(|&(p, offset)| {
                let mut f = FetchPartition::default();
                f.partition = p;
                f.fetch_offset = offset;
                f.partition_max_bytes = partition_max;
                f
            })
            .collect();
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &req);
        assert_eq!(response.responses.len(), 1);
        response.responses[0].partitions.clone()
    };
    let mut client = Client::connect(server.local_addr());
    // Every partition, from its start or its second batch (offset inside it), no limit binding;
    // one past its end, one unknown.
    let mut offsets: Vec<(i32, i64)> = (0..PARTITIONS)
        .map(|p| match p % 2 == 1 && p % 3 > 0 {
            true => (p, i64::from(2 + p % 5) + 1),
            false => (p, 0),
        })
        .collect();
    offsets.push((PARTITIONS, 0));
    offsets[7].1 = ends[7] + 1;
    let answer = fetch(&mut client, &offsets, 1 << 20, 50 << 20);
    assert_eq!(answer.len(), offsets.len());
    for (a, &(p, offset)) in answer.iter().zip(&offsets) {
        assert_eq!(a.partition_index, p);
        if p == PARTITIONS {
            assert_eq!(a.error_code, ResponseError::UnknownTopicOrPartition.code());
            continue;
        }
        assert_eq!(a.high_watermark, ends[p as usize], "partition {p}");
        if p == 7 {
            assert_eq!(a.error_code, ResponseError::OffsetOutOfRange.code());
            continue;
        }
        assert_eq!(a.error_code, 0, "partition {p}");
        let from = if offset == 0 { 0 } else { 1 };
        let records = a.records.as_deref().unwrap_or_default();
        let want = expected(p, from);
        assert_eq!(records, &want[..], "partition {p}");
    }
    // Per-partition limit of one byte: each partition's first batch whole, nothing more.
    let offsets: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let answer = fetch(&mut client, &offsets, 1, 50 << 20);
    for (p, a) in answer.iter().enumerate() {
        let first = stored(&batch(p as i32, 0), 0);
        assert_eq!(a.records.as_deref(), Some(&first[..]), "partition {p}");
    }
    // A response limit of 1,000 bytes: about that much (one batch past it at most), the
    // rest of the partitions empty with where they stand.
    let answer = fetch(&mut client, &offsets, 1 << 20, 1_000);
    let sizes: Vec<usize> = (answer.iter())
        .map(|a| a.records.as_ref().map_or(0, Bytes::len))
        .collect();
    let total: usize = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap();
    assert!(total > 0 && total - largest.min(total) < 1_000, "{total}");
    assert!(sizes.iter().filter(|&&n| n == 0).count() > PARTITIONS as usize / 2);
    for (p, a) in answer.iter().enumerate() {
        assert_eq!(
            (a.error_code, a.high_watermark),
            (0, ends[p]),
            "partition {p}"
        );
    }
    stop(log, server);
}

#[test]
fn refused_produces_say_why_and_requests_are_answered_in_order() {
    let dir = test_dir("kafka-refusals");
    let (log, server) = serve(dir.path(), |c| c.auto_create_topics = false);
    log.create_topic("t", floodgate::TopicConfig::new(1))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    let meta = metadata(&mut client, "absent", true);
    assert_eq!(
        meta.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code(),
        "auto-creation is off"
    );
    let good = client_batch(4);
    // Two batches, the second damaged: neither is stored.
    let mut damaged = good.to_vec();
    damaged.extend_from_slice(&good);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let cases: [(ProduceRequest, i16); 3] = [
        (
            produce_request("t", 0, Bytes::from(damaged), -1),
            ResponseError::CorruptMessage.code(),
        ),
        (
            produce_request("t", 3, good.clone(), -1),
            ResponseError::UnknownTopicOrPartition.code(),
        ),
        (
            produce_request("absent", 0, good.clone(), -1),
            ResponseError::UnknownTopicOrPartition.code(),
        ),
    ];
    for (req, code) in cases {
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &req);
        assert_eq!(
            response.responses[0].partition_responses[0].error_code,
            code
        );
    }
    // Produce v2 (an old message format; the protocol crate no longer encodes it): refused.
    let mut v2 = Vec::new();
    v2.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 77, 0, 4]); // Produce v2, id 77, client "test"
    v2.extend_from_slice(b"test");
    v2.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    v2.extend_from_slice(&1000i32.to_be_bytes()); // timeout
    v2.extend_from_slice(&1i32.to_be_bytes()); // one topic
    v2.extend_from_slice(&[0, 1, b't']);
    v2.extend_from_slice(&1i32.to_be_bytes()); // one partition
    v2.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    v2.extend_from_slice(&3i32.to_be_bytes()); // a 3-byte message set
    v2.extend_from_slice(&[1, 2, 3]);
    let mut frame = (v2.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&v2);
    client.send_raw(&frame).unwrap();
    let (id, body) = client.receive_raw(ApiKey::Produce, 2).unwrap();
    assert_eq!(id, 77);
    let mut expected = 1i32.to_be_bytes().to_vec();
    expected.extend_from_slice(&[0, 1, b't']);
    expected.extend_from_slice(&1i32.to_be_bytes());
    expected.extend_from_slice(&0i32.to_be_bytes());
    expected.extend_from_slice(
        &ResponseError::UnsupportedForMessageFormat
            .code()
            .to_be_bytes(),
    );
    expected.extend_from_slice(&(-1i64).to_be_bytes());
    expected.extend_from_slice(&(-1i64).to_be_bytes());
    expected.extend_from_slice(&0i32.to_be_bytes());
    assert_eq!(&body[..], &expected[..]);
    // acks=0 gets no response: the next request's response is the next one read.
    client.send(
        ApiKey::Produce,
        9,
        &produce_request("t", 0, good.clone(), 0),
    );
    let meta = metadata(&mut client, "t", false);
    assert_eq!(meta.topics[0].error_code, 0);
    // Pipelined: ten requests sent at once are answered in order.
    let ids: Vec<i32> = (0..10)
        .map(|_| client.send(ApiKey::Fetch, 12, &fetch_request("t", 0, 0)))
        .collect();
    for id in ids {
        let (got, _) = client.receive_raw(ApiKey::Fetch, 12).unwrap();
        assert_eq!(got, id);
    }
    // The acks=0 batch is stored, though nothing says when: wait for it (on a loaded machine
    // its flush may come after the fetches' answers).
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.offsets("t", 0).unwrap().1 < floodgate::Offset(4) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(log.offsets("t", 0).unwrap().1, floodgate::Offset(4));
    stop(log, server);
}

#[test]
fn bad_input_closes_only_its_own_connection() {
    let dir = test_dir("kafka-bad-input");
    let (log, server) = serve(dir.path(), |c| c.max_request_bytes = 1 << 20);
    let addr = server.local_addr();
    let mut healthy = Client::connect(addr);
    let _: ApiVersionsResponse =
        healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    // Too large: refused from its size alone, before the bytes are sent.
    let mut big = Client::connect(addr);
    big.send_raw(&(2i32 << 20).to_be_bytes()).unwrap();
    assert!(big.closed_by_server());
    // A negative size.
    let mut negative = Client::connect(addr);
    negative.send_raw(&(-5i32).to_be_bytes()).unwrap();
    assert!(negative.closed_by_server());
    // An unknown API key.
    let mut unknown = Client::connect(addr);
    let mut frame = 10i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    unknown.send_raw(&frame).unwrap();
    assert!(unknown.closed_by_server());
    // A Metadata request cut inside its body.
    let mut cut = Client::connect(addr);
    let mut frame = 14i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0x05, 0x01]);
    cut.send_raw(&frame).unwrap();
    assert!(cut.closed_by_server());
    // A version the server does not offer.
    let mut older = Client::connect(addr);
    older
        .send_raw(&raw_request(ApiKey::Fetch, 3, 5, &[0; 16]))
        .unwrap();
    assert!(older.closed_by_server());
    // The server and the first connection are unharmed.
    let _: ApiVersionsResponse =
        healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut fresh = Client::connect(addr);
    let _: ApiVersionsResponse = fresh.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    stop(log, server);
}

#[test]
fn topics_are_created_and_deleted_by_admin_requests() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    };
    let dir = test_dir("kafka-admin");
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    let topic = |n: &str, partitions: i32, replication: i16| {
        let mut t = CreatableTopic::default();
        t.name = name(n);
        t.num_partitions = partitions;
        t.replication_factor = replication;
        t
    };
    let mut with_config = topic("configured", 1, 1);
    let mut config = CreatableTopicConfig::default();
    config.name = StrBytes::from_static_str("cleanup.policy");
    config.value = Some(StrBytes::from_static_str("compact"));
    with_config.configs = vec![config];
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    req.topics = vec![
        topic("a", 4, -1),
        topic("b", -1, 1),
        topic("a", 2, 1),
        topic("c", 1, 3),
        topic("d", 0, 1),
        with_config,
        topic("bad name!", 1, 1),
    ];
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &req);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        [
            0,
            0,
            ResponseError::TopicAlreadyExists.code(),
            ResponseError::InvalidReplicationFactor.code(),
            ResponseError::InvalidPartitions.code(),
            ResponseError::InvalidConfig.code(),
            ResponseError::InvalidTopicException.code(),
        ]
    );
    assert_eq!(response.topics[0].num_partitions, 4);
    assert!(!response.topics[0].topic_id.is_nil());
    assert_eq!(log.offsets("a", 3).unwrap().1, floodgate::Offset(0));
    assert!(log.offsets("b", 0).is_ok(), "the default partition count");
    assert!(
        log.offsets("c", 0).is_err(),
        "refused topics are not created"
    );
    // Validation only: nothing is created.
    let mut check = CreateTopicsRequest::default();
    check.topics = vec![topic("e", 2, 1)];
    check.validate_only = true;
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &check);
    assert_eq!(response.topics[0].error_code, 0);
    assert!(log.offsets("e", 0).is_err());
    // Deleted, and then unknown.
    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![name("a"), name("nope")];
    let response: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 5, &delete);
    let codes: Vec<i16> = response.responses.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, ResponseError::UnknownTopicOrPartition.code()]);
    let meta = metadata(&mut client, "a", false);
    assert_eq!(
        meta.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    stop(log, server);
}

/// CreatePartitions adds partitions to a topic (v0, non-flexible, and v3, flexible); a count
/// not above the topic's, an unknown topic, an assignment naming another broker or the wrong
/// number of new partitions, and a topic named twice are refused with nothing changed;
/// validation only changes nothing.
#[test]
fn partitions_are_added_by_admin_requests() {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, CreatePartitionsResponse};
    let dir = test_dir("kafka-add-partitions");
    let (log, server) = serve(dir.path(), |_| {});
    log.create_topic("a", floodgate::TopicConfig::new(2))
        .unwrap();
    log.create_topic("b", floodgate::TopicConfig::new(1))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    let topic = |n: &str, count: i32, brokers: Option<Vec<i32>>| {
        let mut t = CreatePartitionsTopic::default();
        t.name = name(n);
        t.count = count;
        t.assignments = brokers.map(|b| {
            b.into_iter()
                .map(|id| {
                    let mut a = CreatePartitionsAssignment::default();
                    a.broker_ids = vec![BrokerId(id)];
                    a
                })
                .collect()
        });
        t
    };
    let request = |topics: Vec<CreatePartitionsTopic>, validate_only: bool| {
        let mut req = CreatePartitionsRequest::default();
        req.timeout_ms = 5000;
        req.validate_only = validate_only;
        req.topics = topics;
        req
    };
    let codes = |r: &CreatePartitionsResponse| -> Vec<i16> {
        r.results.iter().map(|t| t.error_code).collect()
    };
    for version in [0, 3] {
        let req = request(
            vec![
                topic("a", 2, None),
                topic("nope", 3, None),
                topic("b", 3, Some(vec![7, 7])),
                topic("b", 3, Some(vec![0])),
            ],
            false,
        );
        let response: CreatePartitionsResponse =
            client.call(ApiKey::CreatePartitions, version, &req);
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(
            codes(&response),
            [
                ResponseError::InvalidPartitions.code(),
                ResponseError::UnknownTopicOrPartition.code(),
                invalid,
                invalid,
            ],
            "v{version}"
        );
        assert!(response.results[0].error_message.is_some());
    }
    let one = |t| request(vec![t], false);
    let assigned_elsewhere: CreatePartitionsResponse = client.call(
        ApiKey::CreatePartitions,
        3,
        &one(topic("b", 3, Some(vec![0, 7]))),
    );
    let too_few: CreatePartitionsResponse = client.call(
        ApiKey::CreatePartitions,
        3,
        &one(topic("b", 3, Some(vec![0]))),
    );
    let bad = ResponseError::InvalidReplicaAssignment.code();
    assert_eq!(
        (codes(&assigned_elsewhere), codes(&too_few)),
        (vec![bad], vec![bad])
    );
    let checked: CreatePartitionsResponse = client.call(
        ApiKey::CreatePartitions,
        3,
        &request(vec![topic("a", 5, None)], true),
    );
    assert_eq!(codes(&checked), [0]);
    assert!(log.offsets("a", 2).is_err(), "validation only");
    let done: CreatePartitionsResponse = client.call(
        ApiKey::CreatePartitions,
        0,
        &request(
            vec![topic("a", 5, None), topic("b", 3, Some(vec![0, 0]))],
            false,
        ),
    );
    assert_eq!(codes(&done), [0, 0]);
    assert!(log.offsets("a", 4).is_ok() && log.offsets("b", 2).is_ok());
    let meta = metadata(&mut client, "a", false);
    assert_eq!(meta.topics[0].partitions.len(), 5);
    stop(log, server);
}

/// `/metrics` counts what went through the server and shows the log's own figures.
#[test]
fn metrics_count_requests_records_and_the_logs_figures() {
    use std::io::{Read, Write};
    let dir = test_dir("kafka-metrics");
    let (log, server) = serve(dir.path(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let rate = floodgate::RateLimit {
            msgs_per_s: Some(100.0),
            bytes_per_s: None,
        };
        c.group_rates = vec![("g".to_owned(), rate)];
    });
    let mut client = Client::connect(server.local_addr());
    metadata(&mut client, "orders", true);
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request("orders", 0, client_batch(5), -1),
    );
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let _: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("orders", 0, 0));
    let _: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("orders", 99, 0));
    let commit = floodgate::GroupOffset {
        topic: "orders".to_owned(),
        partition: 0,
        offset: floodgate::Offset(2),
        metadata: String::new(),
    };
    log.commit_group_offsets("g", &[commit]).unwrap();
    let get = |path: &str| {
        let mut http = std::net::TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
        write!(http, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).unwrap();
        text
    };
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "floodgate_requests_total{api=\"Produce\"} 1",
        "floodgate_requests_total{api=\"Fetch\"} 2",
        "floodgate_request_errors_total{api=\"Fetch\"} 1",
        "floodgate_records_in_total{topic=\"orders\"} 5",
        "floodgate_records_out_total{topic=\"orders\"} 5",
        "floodgate_partition_end_offset{topic=\"orders\",partition=\"0\"} 5",
        "floodgate_produce_ack_seconds_count 1",
        "floodgate_fetch_seconds_count 2",
        "floodgate_shard_up{shard=\"0\"} 1",
        "floodgate_shard_full{shard=\"0\"} 0",
        "floodgate_connections 1",
        "floodgate_group_lag_records{group=\"g\",topic=\"orders\"} 3",
        "floodgate_group_members{group=\"g\"} 0",
        "floodgate_group_rate_records_per_second{group=\"g\"} 100",
        "floodgate_group_time_to_drain_seconds{group=\"g\"} 0.03",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(text.contains("floodgate_disk_free_bytes "));
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    stop(log, server);
}

/// DeleteRecords moves a partition's earliest offset (-1: to its end), durably: fetches below
/// it are out of range, and it never goes down; an offset past the end, an unknown topic or
/// partition are errors for that partition only.
#[test]
fn records_are_deleted_below_an_offset() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
    let dir = test_dir("kafka-delete-records");
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 2);
    let mut client = Client::connect(server.local_addr());
    metadata(&mut client, "t", true);
    for partition in [0, 1] {
        for _ in 0..2 {
            let response: ProduceResponse = client.call(
                ApiKey::Produce,
                9,
                &produce_request("t", partition, client_batch(5), -1),
            );
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        }
    }
    let delete = |client: &mut Client, version: i16, asks: &[(&str, i32, i64)]| {
        let mut req = DeleteRecordsRequest::default();
        req.timeout_ms = 5000;
        req.topics = (asks.iter())
            .map(|&(topic, partition, offset)| {
                let mut p = DeleteRecordsPartition::default();
                p.partition_index = partition;
                p.offset = offset;
                let mut t = DeleteRecordsTopic::default();
                t.name = name(topic);
                t.partitions = vec![p];
                t
            })
            .collect();
        let response: DeleteRecordsResponse = client.call(ApiKey::DeleteRecords, version, &req);
        (response.topics.iter())
            .map(|t| (t.partitions[0].error_code, t.partitions[0].low_watermark))
            .collect::<Vec<_>>()
    };
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        delete(
            &mut client,
            2,
            &[
                ("t", 0, 4),
                ("t", 1, 11),
                ("t", 1, -5),
                ("absent", 0, 1),
                ("t", 7, 1)
            ]
        ),
        [
            (0, 4),
            (out_of_range, -1),
            (out_of_range, -1),
            (unknown, -1),
            (unknown, -1)
        ]
    );
    assert_eq!(
        log.offsets("t", 0).unwrap(),
        (floodgate::Offset(4), floodgate::Offset(10))
    );
    assert_eq!(
        log.offsets("t", 1).unwrap().0,
        floodgate::Offset(0),
        "untouched"
    );
    let fetched: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("t", 0, 0));
    let data = &fetched.responses[0].partitions[0];
    assert_eq!((data.error_code, data.log_start_offset), (out_of_range, 4));
    let fetched: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("t", 4, 0));
    let data = &fetched.responses[0].partitions[0];
    assert_eq!((data.error_code, data.log_start_offset), (0, 4));
    // Never down; -1 is the end (v0, not flexible).
    assert_eq!(
        delete(&mut client, 0, &[("t", 0, 2), ("t", 1, -1)]),
        [(0, 4), (0, 10)]
    );
    drop(client);
    server.shutdown();
    std::sync::Arc::into_inner(log).unwrap().close().unwrap();
    let log = floodgate::Log::open(floodgate::Config::new(dir.path()).pin_threads(false)).unwrap();
    assert_eq!(
        log.offsets("t", 0).unwrap(),
        (floodgate::Offset(4), floodgate::Offset(10))
    );
    assert_eq!(
        log.offsets("t", 1).unwrap(),
        (floodgate::Offset(10), floodgate::Offset(10))
    );
}

/// ListOffsets: earliest, latest, the record with the largest timestamp, and by timestamp.
#[test]
fn offsets_are_listed_by_position_and_by_time() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let dir = test_dir("kafka-list-offsets");
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    metadata(&mut client, "t", true);
    // Two batches with the same timestamps: the largest first appears at offset 4.
    for _ in 0..2 {
        let response: ProduceResponse = client.call(
            ApiKey::Produce,
            9,
            &produce_request("t", 0, client_batch(5), -1),
        );
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
    let query = |client: &mut Client, timestamp: i64| {
        let mut p = ListOffsetsPartition::default();
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = name("t");
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.topics = vec![t];
        let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 7, &req);
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(query(&mut client, -2).0, 0);
    assert_eq!(query(&mut client, -1).0, 10);
    assert_eq!(query(&mut client, -3), (4, 1_700_000_000_004));
    assert_eq!(
        query(&mut client, 1_700_000_000_002),
        (2, 1_700_000_000_002)
    );
    assert_eq!(query(&mut client, 1_800_000_000_000), (-1, -1));
    stop(log, server);
}

/// Past the connection limit a new connection is closed at once; once one ends, one more is
/// served.
#[test]
fn connections_past_the_limit_are_refused() {
    let dir = test_dir("kafka-connection-limit");
    let (log, server) = serve(dir.path(), |c| c.max_connections = 2);
    let addr = server.local_addr();
    let mut open: Vec<Client> = (0..2).map(|_| Client::connect(addr)).collect();
    for c in &mut open {
        let _: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    let mut third = Client::connect(addr);
    assert!(third.closed_by_server());
    drop(open.pop());
    // The server notices the closed connection; then a new one is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = Client::connect(addr);
        next.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        if next.receive_raw(ApiKey::ApiVersions, 3).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(log, server);
}

/// A client that stops reading its responses, or stops halfway through a request, holds up
/// only itself.
#[test]
fn a_stalled_client_does_not_delay_others() {
    let dir = test_dir("kafka-stalled");
    let (log, server) = serve(dir.path(), |_| {});
    let addr = server.local_addr();
    let mut healthy = Client::connect(addr);
    metadata(&mut healthy, "t", true);
    let big = client_batch(2000);
    let response: ProduceResponse =
        healthy.call(ApiKey::Produce, 9, &produce_request("t", 0, big, -1));
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    // Sends fetches of everything and never reads the answers: its socket buffers fill.
    let mut stalled = Client::connect(addr);
    for _ in 0..64 {
        stalled.send(ApiKey::Fetch, 12, &fetch_request("t", 0, 0));
    }
    // Sends half a request and nothing more.
    let mut halfway = Client::connect(addr);
    halfway.send_raw(&100i32.to_be_bytes()).unwrap();
    halfway.send_raw(&[0, 3, 0, 12]).unwrap();
    // The healthy client is answered at once, again and again.
    for _ in 0..20 {
        let started = Instant::now();
        let response: FetchResponse = healthy.call(ApiKey::Fetch, 12, &fetch_request("t", 0, 0));
        assert_eq!(response.responses[0].partitions[0].error_code, 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // The server stops within its grace period although the stalled client never reads.
    let started = Instant::now();
    stop(log, server);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop((stalled, halfway));
}

/// An idempotent producer: InitProducerId gives ids never given before (across a restart) and
/// the next epoch to a producer that asks again; a retried batch is answered with its first
/// offset and stored once, a batch after a gap gets OUT_OF_ORDER_SEQUENCE_NUMBER, an older
/// epoch INVALID_PRODUCER_EPOCH; a transactional id is refused.
#[test]
fn idempotent_producers_get_ids_and_their_retries_are_stored_once() {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let dir = test_dir("kafka-idempotence");
    let init = |client: &mut Client, id: i64, epoch: i16| -> InitProducerIdResponse {
        let mut r = InitProducerIdRequest::default();
        r.transaction_timeout_ms = 60_000;
        r.producer_id = ProducerId(id);
        r.producer_epoch = epoch;
        client.call(ApiKey::InitProducerId, 4, &r)
    };
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    metadata(&mut client, "orders", true);
    let first = init(&mut client, -1, -1);
    let second = init(&mut client, -1, -1);
    assert_eq!((first.error_code, second.error_code), (0, 0));
    assert_eq!(first.producer_epoch, 0);
    assert_ne!(first.producer_id, second.producer_id);
    let bumped = init(&mut client, first.producer_id.0, 0);
    assert_eq!(
        (bumped.producer_id, bumped.producer_epoch),
        (first.producer_id, 1)
    );
    let mut txn = InitProducerIdRequest::default();
    txn.transactional_id = Some(kafka_protocol::messages::TransactionalId(
        StrBytes::from_static_str("orders-tx"),
    ));
    let refused: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &txn);
    assert_eq!(refused.error_code, ResponseError::InvalidRequest.code());

    let id = second.producer_id.0;
    let batch = |seq: i32, n: i64, epoch: i16| -> Bytes {
        common::record_batch((id, epoch, seq), n, |i| {
            (None, Bytes::from(format!("{seq}+{i}")))
        })
    };
    let produce = |client: &mut Client, b: Bytes| -> (i16, i64) {
        let r: ProduceResponse =
            client.call(ApiKey::Produce, 9, &produce_request("orders", 0, b, -1));
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(produce(&mut client, batch(0, 4, 0)), (0, 0));
    assert_eq!(produce(&mut client, batch(4, 4, 0)), (0, 4));
    // The retry of a batch whose response was lost.
    assert_eq!(produce(&mut client, batch(4, 4, 0)), (0, 4));
    let gap = produce(&mut client, batch(9, 1, 0)).0;
    assert_eq!(gap, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(produce(&mut client, batch(0, 1, 1)), (0, 8));
    let fenced = produce(&mut client, batch(8, 1, 0)).0;
    assert_eq!(fenced, ResponseError::InvalidProducerEpoch.code());
    assert_eq!(log.offsets("orders", 0).unwrap().1, floodgate::Offset(9));
    stop(log, server);

    // After a restart, ids go on from where they were never handed out.
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    let after = init(&mut client, -1, -1);
    assert!(after.producer_id.0 > second.producer_id.0, "{after:?}");
    stop(log, server);
}
