//! A topic's and the broker's configs over the protocol: CreateTopics' configs, DescribeConfigs,
//! IncrementalAlterConfigs and the legacy AlterConfigs on topics, groups and the broker, and
//! the ACL APIs (refused as without an authorizer).

mod common;

use std::time::Duration;

use common::{
    Client, client_batch, fetch_request, name, produce_request, serve, serve_log, stop, test_dir,
};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

/// CreateTopics: a topic's own `retention.ms` is accepted up to the log's and comes back with
/// the created topic's configs; any other config is accepted only where it restates the log's
/// value. Longer retentions, other values and unknown configs are refused with INVALID_CONFIG,
/// naming the config, and nothing is created.
#[test]
fn a_topics_configs_are_its_retention_or_restate_the_logs() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let dir = test_dir("kafka-topic-configs");
    let hour = std::time::Duration::from_secs(3600);
    let (log, server) = serve_log(dir.path(), |c| c.retention_age(hour));
    let retention_ms = "3600000";
    let segment_bytes = log.config().segment_size().to_string();
    let too_large = (log.config().record_bytes_limit() + 1).to_string();
    let mut client = Client::connect(server.local_addr());
    let topic = |n: &str, configs: &[(&str, Option<&str>)]| {
        let mut t = CreatableTopic::default();
        t.name = name(n);
        t.num_partitions = 2;
        t.replication_factor = 1;
        t.configs = (configs.iter())
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.value = v.map(|v| StrBytes::from_string(v.to_owned()));
                c
            })
            .collect();
        t
    };
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 5000;
    req.topics = vec![
        topic(
            "restated",
            &[
                ("cleanup.policy", Some("delete")),
                ("retention.ms", Some(retention_ms)),
                ("segment.bytes", Some(&segment_bytes)),
                ("compression.type", Some("producer")),
                ("min.insync.replicas", Some("1")),
                ("message.timestamp.type", None),
            ],
        ),
        topic("shorter", &[("retention.ms", Some("1000"))]),
        topic("longer", &[("retention.ms", Some("3600001"))]),
        topic("forever", &[("retention.ms", Some("-1"))]),
        topic("compacted", &[("cleanup.policy", Some("compact"))]),
        topic("recompressed", &[("compression.type", Some("lz4"))]),
        topic("unknown", &[("no.such.config", Some("1"))]),
        topic("not-a-number", &[("segment.bytes", Some("big"))]),
        topic("sized", &[("retention.bytes", Some("1048576"))]),
        topic("below-none", &[("retention.bytes", Some("-2"))]),
        topic("small-batches", &[("max.message.bytes", Some("1000"))]),
        topic("large-batches", &[("max.message.bytes", Some(&too_large))]),
        topic("brotli", &[("compression.type", Some("brotli"))]),
    ];
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &req);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    let invalid = ResponseError::InvalidConfig.code();
    assert_eq!(
        codes,
        [
            0, 0, invalid, invalid, invalid, 0, invalid, invalid, 0, invalid, 0, invalid, invalid
        ]
    );

    let why = |i: usize| {
        (response.topics[i].error_message.as_deref())
            .unwrap_or_default()
            .to_owned()
    };
    for longer in [2, 3] {
        let why = why(longer);
        assert!(
            why.contains("retention.ms") && why.contains(retention_ms),
            "{why}"
        );
    }
    assert!(why(4).contains("cleanup.policy"), "{}", why(4));
    assert!(why(6).contains("no.such.config"), "{}", why(6));
    assert!(why(9).contains("retention.bytes"), "{}", why(9));
    assert!(log.offsets("restated", 1).is_ok());
    for refused in [
        "longer",
        "forever",
        "compacted",
        "brotli",
        "unknown",
        "not-a-number",
        "below-none",
        "large-batches",
    ] {
        assert!(log.offsets(refused, 0).is_err(), "{refused} was created");
    }
    let own = |name: &str| {
        let topics = log.list_topics();
        topics
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .retention_age
    };
    assert_eq!(own("restated"), Some(hour));
    assert_eq!(own("shorter"), Some(std::time::Duration::from_secs(1)));
    let sized = log.list_topics().into_iter().find(|t| t.name == "sized");
    assert_eq!(sized.unwrap().retention_bytes, Some(1 << 20));
    let small = log
        .list_topics()
        .into_iter()
        .find(|t| t.name == "small-batches");
    assert_eq!(small.unwrap().message_bytes_max, Some(1000));
    assert!(why(11).contains("max.message.bytes"), "{}", why(11));
    assert!(why(12).contains("compression.type"), "{}", why(12));
    let recompressed = log
        .list_topics()
        .into_iter()
        .find(|t| t.name == "recompressed");
    assert_eq!(
        recompressed.unwrap().compression,
        Some(floodgate::Codec::Lz4)
    );
    // The created topics' configs come back with their values (v5 and later): retention.ms
    // and retention.bytes (and the other configs a topic may have of its own) may be altered;
    // the others are the log's, read-only.
    let own_configs = [
        "retention.ms",
        "retention.bytes",
        "max.message.bytes",
        "compression.type",
        "message.timestamp.type",
    ];
    for (i, retention) in [(0, retention_ms), (1, "1000"), (8, retention_ms)] {
        let configs = response.topics[i]
            .configs
            .as_ref()
            .expect("configs from v5");
        let config = |k: &str| configs.iter().find(|c| c.name.as_str() == k).unwrap();
        let value = |k: &str| config(k).value.as_deref().map(str::to_owned);
        assert_eq!(value("retention.ms").as_deref(), Some(retention));
        let source = if i == 8 { 4 } else { 1 };
        assert_eq!(config("retention.ms").config_source, source);
        assert!(!config("retention.ms").read_only);
        let (bytes, source) = if i == 8 { ("1048576", 1) } else { ("-1", 5) };
        assert_eq!(value("retention.bytes").as_deref(), Some(bytes));
        assert_eq!(config("retention.bytes").config_source, source);
        assert!(!config("retention.bytes").read_only);
        assert_eq!(value("cleanup.policy").as_deref(), Some("delete"));
        assert!(
            (configs.iter())
                .filter(|c| !own_configs.contains(&c.name.as_str()))
                .all(|c| c.read_only)
        );
    }
    // Validation only: the same answer, nothing created.
    let mut check = CreateTopicsRequest::default();
    check.validate_only = true;
    check.topics = vec![
        topic("checked", &[("retention.ms", Some("1000"))]),
        topic("checked-too", &[("retention.ms", Some("3600001"))]),
    ];
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &check);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, invalid]);
    assert!(log.offsets("checked", 0).is_err());
    stop(log, server);
}

/// A topic's `retention.ms` is described as the log's until it is set on the topic, then as
/// the topic's; IncrementalAlterConfigs sets it (up to the log's) and deletes it at runtime,
/// and refuses the topic's other configs, which are the log's. Its `retention.bytes` (per
/// partition) likewise, from none.
#[test]
fn a_topics_retention_is_altered_at_runtime() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    };
    let dir = test_dir("kafka-alter-topic");
    let hour = std::time::Duration::from_secs(3600);
    let (log, server) = serve_log(dir.path(), |c| c.retention_age(hour));
    log.create_topic("t", floodgate::TopicConfig::new(2))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    let describe_key = |client: &mut Client, key: &'static str| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = StrBytes::from_static_str("t");
        r.configuration_keys = Some(vec![StrBytes::from_static_str(key)]);
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![r];
        let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &req);
        let c = &response.results[0].configs[0];
        assert!(!c.read_only);
        (c.value.as_deref().unwrap().to_owned(), c.config_source)
    };
    let describe = |client: &mut Client| describe_key(client, "retention.ms");
    let alter =
        |client: &mut Client, topic: &str, changes: &[(&str, i8, Option<&str>)], validate_only| {
            let mut res = AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = StrBytes::from_string(topic.to_owned());
            res.configs = (changes.iter())
                .map(|&(k, op, v)| {
                    let mut c = AlterableConfig::default();
                    c.name = StrBytes::from_string(k.to_owned());
                    c.config_operation = op;
                    c.value = v.map(|v| StrBytes::from_string(v.to_owned()));
                    c
                })
                .collect();
            let mut req = IncrementalAlterConfigsRequest::default();
            req.validate_only = validate_only;
            req.resources = vec![res];
            let response: IncrementalAlterConfigsResponse =
                client.call(ApiKey::IncrementalAlterConfigs, 1, &req);
            response.responses[0].error_code
        };
    let own = || log.list_topics()[0].retention_age;
    // The log's, as a static broker config.
    assert_eq!(describe(&mut client), ("3600000".to_owned(), 4));
    assert_eq!(
        alter(
            &mut client,
            "t",
            &[("retention.ms", 0, Some("60000"))],
            false
        ),
        0
    );
    assert_eq!(describe(&mut client), ("60000".to_owned(), 1));
    assert_eq!(own(), Some(std::time::Duration::from_secs(60)));
    let invalid = ResponseError::InvalidConfig.code();
    for (changes, code) in [
        (vec![("retention.ms", 0, Some("3600001"))], invalid),
        (vec![("retention.ms", 0, Some("soon"))], invalid),
        (vec![("retention.ms", 2, Some("1"))], invalid),
        (
            vec![
                ("retention.ms", 0, Some("1")),
                ("segment.bytes", 0, Some("1")),
            ],
            invalid,
        ),
    ] {
        assert_eq!(
            alter(&mut client, "t", &changes, false),
            code,
            "{changes:?}"
        );
        assert_eq!(
            own(),
            Some(std::time::Duration::from_secs(60)),
            "{changes:?}"
        );
    }
    assert_eq!(
        alter(
            &mut client,
            "absent",
            &[("retention.ms", 0, Some("1"))],
            false
        ),
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        alter(&mut client, "t", &[("retention.ms", 0, Some("1"))], true),
        0
    );
    assert_eq!(
        own(),
        Some(std::time::Duration::from_secs(60)),
        "validation only"
    );
    // Deleted: the log's again.
    assert_eq!(
        alter(&mut client, "t", &[("retention.ms", 1, None)], false),
        0
    );
    assert_eq!(describe(&mut client), ("3600000".to_owned(), 4));
    assert_eq!(own(), None);
    // Retention by size, per partition: none until set on the topic.
    let bytes = || log.list_topics()[0].retention_bytes;
    let described = |client: &mut Client| describe_key(client, "retention.bytes");
    assert_eq!(described(&mut client), ("-1".to_owned(), 5));
    let set_bytes = [("retention.bytes", 0, Some("1048576"))];
    assert_eq!(alter(&mut client, "t", &set_bytes, false), 0);
    assert_eq!(described(&mut client), ("1048576".to_owned(), 1));
    assert_eq!(bytes(), Some(1 << 20));
    for refused in ["-2", "large"] {
        let change = [("retention.bytes", 0, Some(refused))];
        assert_eq!(alter(&mut client, "t", &change, false), invalid);
    }
    assert_eq!(bytes(), Some(1 << 20));
    let none = [("retention.bytes", 0, Some("-1"))];
    assert_eq!(alter(&mut client, "t", &none, false), 0);
    assert_eq!(bytes(), None);
    assert_eq!(alter(&mut client, "t", &set_bytes, false), 0);
    let delete = [("retention.bytes", 1, None)];
    assert_eq!(alter(&mut client, "t", &delete, false), 0);
    assert_eq!(described(&mut client), ("-1".to_owned(), 5));
    // The largest batch the topic takes: a larger one is refused with MESSAGE_TOO_LARGE.
    let log_max = log.config().record_bytes_limit().to_string();
    let limit = |client: &mut Client| describe_key(client, "max.message.bytes");
    assert_eq!(limit(&mut client), (log_max.clone(), 5));
    let batch = client_batch(50);
    let produce = |client: &mut Client| {
        let response: ProduceResponse = client.call(
            ApiKey::Produce,
            9,
            &produce_request("t", 0, batch.clone(), -1),
        );
        response.responses[0].partition_responses[0].error_code
    };
    let small = (batch.len() - 1).to_string();
    let set_limit = [("max.message.bytes", 0, Some(small.as_str()))];
    assert_eq!(alter(&mut client, "t", &set_limit, false), 0);
    assert_eq!(limit(&mut client), (small.clone(), 1));
    assert_eq!(produce(&mut client), ResponseError::MessageTooLarge.code());
    let above_log = (log.config().record_bytes_limit() + 1).to_string();
    let refused = [("max.message.bytes", 0, Some(above_log.as_str()))];
    assert_eq!(alter(&mut client, "t", &refused, false), invalid);
    let delete = [("max.message.bytes", 1, None)];
    assert_eq!(alter(&mut client, "t", &delete, false), 0);
    assert_eq!(limit(&mut client), (log_max, 5));
    assert_eq!(produce(&mut client), 0);
    // A codec of the topic's own: a batch sent uncompressed is stored and fetched in gzip,
    // with the same records.
    let codec = |client: &mut Client| describe_key(client, "compression.type");
    assert_eq!(codec(&mut client), ("producer".to_owned(), 5));
    let gzip = [("compression.type", 0, Some("gzip"))];
    assert_eq!(alter(&mut client, "t", &gzip, false), 0);
    assert_eq!(codec(&mut client), ("gzip".to_owned(), 1));
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request("t", 1, batch.clone(), -1),
    );
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let mut from_1 = fetch_request("t", 0, 0);
    from_1.topics[0].partitions[0].partition = 1;
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &from_1);
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.partition_index, 1);
    let fetched = p.records.clone().unwrap();
    assert_eq!(fetched[22] & 0x07, 1, "stored in gzip");
    let values: Vec<_> = (log.read("t", 1, floodgate::Offset(0), 1 << 20).unwrap())
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    let sent: Vec<_> = (0..50).map(|i| format!("value-{i}").into_bytes()).collect();
    assert_eq!(values, sent);
    for refused in ["none", "brotli"] {
        let change = [("compression.type", 0, Some(refused))];
        assert_eq!(alter(&mut client, "t", &change, false), invalid);
    }
    let delete = [("compression.type", 1, None)];
    assert_eq!(alter(&mut client, "t", &delete, false), 0);
    assert_eq!(log.list_topics()[0].compression, None);
    // The log's append time: the answer gives it, and the stored batch carries it.
    let timestamps = |client: &mut Client| describe_key(client, "message.timestamp.type");
    assert_eq!(timestamps(&mut client), ("CreateTime".to_owned(), 5));
    let append_time = [("message.timestamp.type", 0, Some("LogAppendTime"))];
    assert_eq!(alter(&mut client, "t", &append_time, false), 0);
    assert_eq!(timestamps(&mut client), ("LogAppendTime".to_owned(), 1));
    // Another producer's batch (the same one again would be a retry, stored once).
    let another = client_batch(50);
    let response: ProduceResponse =
        client.call(ApiKey::Produce, 9, &produce_request("t", 1, another, -1));
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 50));
    let stamp = answer.log_append_time_ms;
    assert!(stamp > 1_700_000_000_000, "{stamp}");
    let mut from_50 = fetch_request("t", 50, 0);
    from_50.topics[0].partitions[0].partition = 1;
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &from_50);
    let fetched = response.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(fetched[22] & 0x08, 0x08, "LogAppendTime");
    assert_eq!(fetched[35..43], stamp.to_be_bytes());
    let bad = [("message.timestamp.type", 0, Some("Now"))];
    assert_eq!(alter(&mut client, "t", &bad, false), invalid);
    let delete = [("message.timestamp.type", 1, None)];
    assert_eq!(alter(&mut client, "t", &delete, false), 0);
    assert_eq!(timestamps(&mut client), ("CreateTime".to_owned(), 5));
    stop(log, server);
}

/// DescribeConfigs lists a topic's and the broker's configs with their values; a topic that
/// does not exist is an error for that resource only.
#[test]
fn configs_of_topics_and_the_broker_are_described() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    let dir = test_dir("kafka-configs");
    let (log, server) = serve(dir.path(), |c| c.default_partitions = 6);
    log.create_topic("t", floodgate::TopicConfig::new(1))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    let resource = |kind: i8, name: &str, keys: Option<Vec<&'static str>>| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = kind;
        r.resource_name = StrBytes::from_string(name.to_owned());
        r.configuration_keys = keys.map(|k| k.into_iter().map(StrBytes::from_static_str).collect());
        r
    };
    let mut req = DescribeConfigsRequest::default();
    req.include_documentation = true;
    req.resources = vec![
        resource(2, "t", None),
        resource(2, "t", Some(vec!["max.message.bytes"])),
        resource(4, "0", None),
        resource(2, "absent", None),
    ];
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &req);
    let value = |r: usize, name: &str| {
        let c = response.results[r]
            .configs
            .iter()
            .find(|c| c.name.as_str() == name);
        c.and_then(|c| c.value.as_ref()).map(|v| v.to_string())
    };
    assert_eq!(value(0, "cleanup.policy").as_deref(), Some("delete"));
    assert_eq!(value(0, "retention.ms").as_deref(), Some("-1"));
    assert_eq!(response.results[1].configs.len(), 1);
    let max = log.config().record_bytes_limit().to_string();
    assert_eq!(value(1, "max.message.bytes"), Some(max));
    assert_eq!(value(2, "num.partitions").as_deref(), Some("6"));
    assert!(
        response.results[2]
            .configs
            .iter()
            .all(|c| c.documentation.is_some())
    );
    assert_eq!(
        response.results[3].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    stop(log, server);
}

/// The legacy AlterConfigs (API 33) makes a resource's configs exactly those given: a topic's
/// own retention by age and size are set, and those not given go back to the log's; a group's
/// pace likewise; configs that restate the log's values pass, others are refused with
/// nothing changed; validation only changes nothing; the broker's configs are read-only.
#[test]
fn legacy_alter_configs_replaces_a_resources_configs() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{
        AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    };
    let dir = test_dir("kafka-legacy-alter");
    let hour = Duration::from_secs(3600);
    let (log, server) = serve_log(dir.path(), |c| c.retention_age(hour));
    log.create_topic("t", floodgate::TopicConfig::new(1).retention_age(hour / 2))
        .unwrap();
    let mut client = Client::connect(server.local_addr());
    let invalid = ResponseError::InvalidConfig.code();
    // Group g's pace as DescribeConfigs gives it: records, then bytes per second.
    let pace = |client: &mut Client| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = 32;
        r.resource_name = StrBytes::from_static_str("g");
        r.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![r];
        let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &req);
        let configs = &response.results[0].configs;
        [
            "floodgate.rate.msgs.per.sec",
            "floodgate.rate.bytes.per.sec",
        ]
        .map(|k| {
            let c = configs.iter().find(|c| c.name.as_str() == k).unwrap();
            c.value.as_deref().map(str::to_owned)
        })
    };
    for version in 0..=2 {
        let alter = |client: &mut Client,
                     kind: i8,
                     resource: &str,
                     configs: &[(&str, Option<&str>)],
                     validate| {
            let mut res = AlterConfigsResource::default();
            res.resource_type = kind;
            res.resource_name = StrBytes::from_string(resource.to_owned());
            res.configs = (configs.iter())
                .map(|&(k, v)| {
                    let mut c = AlterableConfig::default();
                    c.name = StrBytes::from_string(k.to_owned());
                    c.value = v.map(|v| StrBytes::from_string(v.to_owned()));
                    c
                })
                .collect();
            let mut req = AlterConfigsRequest::default();
            req.resources = vec![res];
            req.validate_only = validate;
            let response: AlterConfigsResponse = client.call(ApiKey::AlterConfigs, version, &req);
            let r = &response.responses[0];
            assert_eq!(r.resource_name.as_str(), resource);
            r.error_code
        };
        let own = || {
            let t = &log.list_topics()[0];
            (t.retention_age, t.retention_bytes)
        };
        log.set_topic_retention("t", Some(hour / 2)).unwrap();
        // Retention by size given, by age not: the age goes back to the log's.
        let sized = [
            ("retention.bytes", Some("1048576")),
            ("cleanup.policy", Some("delete")),
        ];
        assert_eq!(alter(&mut client, 2, "t", &sized, false), 0, "v{version}");
        assert_eq!(own(), (None, Some(1 << 20)), "v{version}");
        let both = [
            ("retention.ms", Some("60000")),
            ("retention.bytes", Some("2048")),
        ];
        assert_eq!(alter(&mut client, 2, "t", &both, true), 0, "v{version}");
        assert_eq!(own(), (None, Some(1 << 20)), "validation only, v{version}");
        assert_eq!(alter(&mut client, 2, "t", &both, false), 0, "v{version}");
        assert_eq!(
            own(),
            (Some(Duration::from_secs(60)), Some(2048)),
            "v{version}"
        );
        for refused in [
            vec![("retention.ms", Some("3600001"))],
            vec![("retention.bytes", Some("-5"))],
            vec![
                ("retention.ms", Some("1000")),
                ("cleanup.policy", Some("compact")),
            ],
            vec![("segment.bytes", Some("1"))],
        ] {
            assert_eq!(
                alter(&mut client, 2, "t", &refused, false),
                invalid,
                "{refused:?}"
            );
            assert_eq!(
                own(),
                (Some(Duration::from_secs(60)), Some(2048)),
                "{refused:?}"
            );
        }
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(alter(&mut client, 2, "absent", &both, false), unknown);
        // Nothing given: everything back to the log's.
        assert_eq!(alter(&mut client, 2, "t", &[], false), 0);
        assert_eq!(own(), (None, None));
        // A group's pace, replaced whole.
        let rates = [
            ("floodgate.rate.msgs.per.sec", Some("80000")),
            ("floodgate.rate.bytes.per.sec", Some("1000000")),
        ];
        assert_eq!(alter(&mut client, 32, "g", &rates, false), 0);
        let msgs_only = [("floodgate.rate.msgs.per.sec", Some("500"))];
        assert_eq!(alter(&mut client, 32, "g", &msgs_only, false), 0);
        assert_eq!(pace(&mut client), [Some("500".to_owned()), None]);
        assert_eq!(
            alter(
                &mut client,
                32,
                "g",
                &[("floodgate.rate.msgs.per.sec", Some("fast"))],
                false
            ),
            invalid
        );
        assert_eq!(pace(&mut client), [Some("500".to_owned()), None]);
        assert_eq!(alter(&mut client, 32, "g", &[], false), 0);
        assert_eq!(pace(&mut client), [None, None]);
        assert_eq!(
            alter(
                &mut client,
                4,
                "1",
                &[("log.retention.ms", Some("1"))],
                false
            ),
            invalid
        );
    }
    stop(log, server);
}

/// The ACL APIs are answered as Kafka answers them without an authorizer: SECURITY_DISABLED
/// for the filter and for each creation or deletion filter, with the reason.
#[test]
fn acl_requests_are_refused_as_without_an_authorizer() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::{
        CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
        DescribeAclsRequest, DescribeAclsResponse,
    };
    let dir = test_dir("kafka-acls");
    let (log, server) = serve(dir.path(), |_| {});
    let mut client = Client::connect(server.local_addr());
    let disabled = ResponseError::SecurityDisabled.code();
    for version in 1..=3 {
        let mut describe = DescribeAclsRequest::default();
        describe.resource_type_filter = 1;
        describe.pattern_type_filter = 1;
        describe.operation = 1;
        describe.permission_type = 1;
        let response: DescribeAclsResponse = client.call(ApiKey::DescribeAcls, version, &describe);
        assert_eq!(response.error_code, disabled);
        let why = response.error_message.as_deref().unwrap_or_default();
        assert!(why.contains("authorizer"), "{why}");
        assert!(response.resources.is_empty());
        let mut creation = AclCreation::default();
        creation.resource_type = 2;
        creation.resource_name = StrBytes::from_static_str("t");
        creation.resource_pattern_type = 3;
        creation.principal = StrBytes::from_static_str("User:a");
        creation.host = StrBytes::from_static_str("*");
        creation.operation = 3;
        creation.permission_type = 3;
        let mut create = CreateAclsRequest::default();
        create.creations = vec![creation.clone(), creation];
        let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, version, &create);
        let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [disabled, disabled]);
        let mut delete = DeleteAclsRequest::default();
        delete.filters = vec![DeleteAclsFilter::default()];
        let response: DeleteAclsResponse = client.call(ApiKey::DeleteAcls, version, &delete);
        assert_eq!(response.filter_results.len(), 1);
        assert_eq!(response.filter_results[0].error_code, disabled);
        assert!(response.filter_results[0].matching_acls.is_empty());
    }
    stop(log, server);
}
