//! DescribeConfigs: every config of a topic, of the broker or of a consumer group, with its
//! value and where it comes from. floodgate's segment size is the log's, the same for every
//! topic: a topic's entries show the log's values, read-only. A topic's `retention.ms` is its
//! own when set (at most the log's: segments are shared, and the log's retention deletes them),
//! else the log's; so are its `retention.bytes` (per partition, as in Kafka; the log's is for
//! the whole log), its `max.message.bytes` (at most the log's), its `compression.type` and its
//! `message.timestamp.type`. IncrementalAlterConfigs sets and deletes them at runtime; the
//! legacy AlterConfigs replaces them all. A group's configs are its pace (messages and bytes per second
//! that its members' fetches take together), which IncrementalAlterConfigs sets and deletes
//! at runtime too.

use floodgate::{Codec, RateLimit, TimestampType};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;

use super::metadata::{NODE_ID, find};
use crate::conn::ThreadState;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's `ConfigResource.Type.GROUP`; librdkafka's admin API names groups 3 (its ACL
/// resource type), taken as the same.
const GROUP: i8 = 32;
const GROUP_ACL: i8 = 3;
/// `config_source` of a config set on its resource.
const DYNAMIC_CONFIG: i8 = 1;
/// A group's pace: records per second its members' fetches take together.
pub(crate) const GROUP_RATE_MSGS: &str = "floodgate.rate.msgs.per.sec";
/// And bytes per second (of the stored batches handed out).
pub(crate) const GROUP_RATE_BYTES: &str = "floodgate.rate.bytes.per.sec";
const DOUBLE: i8 = 6;
/// IncrementalAlterConfigs' operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
/// `config_source` values.
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// `config_type` values.
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;

/// A config as listed: name, value, type, whether it was set (or is floodgate's default), and
/// what it means.
struct Entry {
    name: &'static str,
    value: String,
    kind: i8,
    set: bool,
    doc: &'static str,
    /// Set at runtime on its resource (a group's pace, a topic's own retention).
    dynamic: bool,
    /// Whether IncrementalAlterConfigs may change it.
    alterable: bool,
}

impl Entry {
    /// Where its value comes from, as DescribeConfigs and CreateTopics give it.
    fn source(&self) -> i8 {
        match (self.set, self.dynamic) {
            (true, true) => DYNAMIC_CONFIG,
            (true, false) => STATIC_BROKER_CONFIG,
            (false, _) => DEFAULT_CONFIG,
        }
    }

    /// Whether `value`, as a client gives it, is this config's value.
    fn holds(&self, value: &str) -> bool {
        let value = value.trim();
        match self.kind {
            INT | LONG => value.parse::<i64>().ok() == self.value.parse::<i64>().ok(),
            _ => value.eq_ignore_ascii_case(&self.value),
        }
    }
}

/// A topic's own retention by age.
pub(crate) const RETENTION_MS: &str = "retention.ms";
/// A topic's own retention by size, per partition.
pub(crate) const RETENTION_BYTES: &str = "retention.bytes";
/// A topic's own largest record batch.
pub(crate) const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// The codec a topic stores client batches in.
pub(crate) const COMPRESSION_TYPE: &str = "compression.type";
/// Which time a topic's records carry.
pub(crate) const TIMESTAMP_TYPE: &str = "message.timestamp.type";

/// The configs a topic has of its own: its retention by age and by size per partition, its
/// largest record batch, the codec it stores batches in and which time its records carry,
/// each `None` where the log's applies (for the codec: batches stay as the producer
/// compressed them; for the time: the producer's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TopicOwn {
    pub age: Option<Duration>,
    pub bytes: Option<u64>,
    pub message_bytes: Option<usize>,
    pub codec: Option<Codec>,
    pub timestamps: Option<TimestampType>,
}

impl TopicOwn {
    /// What topic `t` has of its own.
    pub fn of(t: &floodgate::TopicInfo) -> TopicOwn {
        TopicOwn {
            age: t.retention_age,
            bytes: t.retention_bytes,
            message_bytes: t.message_bytes_max,
            codec: t.compression,
            timestamps: Some(t.timestamp_type).filter(|&t| t == TimestampType::LogAppendTime),
        }
    }

    /// A topic config of `partitions` partitions with these.
    pub fn config(&self, partitions: u32) -> floodgate::TopicConfig {
        let mut config = floodgate::TopicConfig::new(partitions);
        if let Some(age) = self.age {
            config = config.retention_age(age);
        }
        if let Some(bytes) = self.bytes {
            config = config.retention_bytes(bytes);
        }
        if let Some(bytes) = self.message_bytes {
            config = config.max_message_bytes(bytes);
        }
        if let Some(codec) = self.codec {
            config = config.compression(codec);
        }
        if let Some(timestamps) = self.timestamps {
            config = config.timestamp_type(timestamps);
        }
        config
    }

    /// Sets `name` (one of the topic's own configs) to `value` as a client gives it (`None`:
    /// back to the log's); `Ok(false)` if `name` is not one of them.
    fn set(
        &mut self,
        state: &ThreadState,
        name: &str,
        value: Option<&str>,
    ) -> Result<bool, String> {
        match name {
            RETENTION_MS => {
                self.age = value
                    .map(|v| topic_retention(state, v))
                    .transpose()?
                    .flatten()
            }
            RETENTION_BYTES => self.bytes = value.map(topic_retention_bytes).transpose()?.flatten(),
            MAX_MESSAGE_BYTES => {
                self.message_bytes = value.map(|v| topic_message_bytes(state, v)).transpose()?
            }
            COMPRESSION_TYPE => self.codec = value.map(topic_codec).transpose()?.flatten(),
            TIMESTAMP_TYPE => {
                self.timestamps = match value.map(str::trim) {
                    None | Some("CreateTime") => None,
                    Some("LogAppendTime") => Some(TimestampType::LogAppendTime),
                    Some(v) => {
                        return Err(format!(
                            "{TIMESTAMP_TYPE}={v:?}: a topic's records carry CreateTime or \
                             LogAppendTime"
                        ));
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Checks the configs a CreateTopics (or a legacy AlterConfigs) request gives a topic; returns
/// what the topic gets of its own. Apart from `retention.ms` and `retention.bytes`, a topic's
/// configs here are the log's, the same for every topic: such a config is accepted when it
/// names one of them with the value the topic gets anyway (a null value asks for that value
/// too), and refused otherwise, naming the config and its value here, so that nobody is left
/// believing a topic keeps its records for another time than it does.
pub(crate) fn check_topic_configs<'a>(
    state: &ThreadState,
    configs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<TopicOwn, String> {
    let entries = entries(state, false, TopicOwn::default());
    let mut own = TopicOwn::default();
    for (name, value) in configs {
        if own.set(state, name, value)? {
            continue;
        }
        let Some(e) = entries.iter().find(|e| e.name == name) else {
            let known: Vec<&str> = entries.iter().map(|e| e.name).collect();
            return Err(format!(
                "{name:?} is not a topic config here; a topic's configs are {}",
                known.join(", ")
            ));
        };
        match value {
            Some(v) if !e.holds(v) => {
                return Err(format!(
                    "{name}={v:?}: every topic here has {name}={}, the log's, set when it is \
                     opened",
                    e.value
                ));
            }
            _ => {}
        }
    }
    Ok(own)
}

/// The configs of a CreateTopics request's topic, as names and values.
pub(crate) fn creatable(
    configs: &[CreatableTopicConfig],
) -> impl Iterator<Item = (&str, Option<&str>)> {
    configs
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_deref()))
}

/// A topic's own retention by size per partition as a client gives `retention.bytes`: -1 for
/// none, else at least 0.
fn topic_retention_bytes(value: &str) -> Result<Option<u64>, String> {
    match value.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(b) if b >= 0 => Ok(Some(b as u64)),
        _ => Err(format!(
            "{RETENTION_BYTES}={value:?}: a topic's retention by size is -1 (none) or its bytes \
             per partition, at least 0"
        )),
    }
}

/// A topic's own largest record batch as a client gives `max.message.bytes`: from 1 to the
/// log's.
fn topic_message_bytes(state: &ThreadState, value: &str) -> Result<usize, String> {
    let log = state.shared.log.config().record_bytes_limit();
    match value.trim().parse::<usize>() {
        Ok(b) if (1..=log).contains(&b) => Ok(b),
        _ => Err(format!(
            "{MAX_MESSAGE_BYTES}={value:?}: a topic's largest record batch here is from 1 to the \
             log's, {log}"
        )),
    }
}

/// A topic's codec as a client gives `compression.type`: `producer` (batches as sent) or one
/// Kafka's brokers store in.
fn topic_codec(value: &str) -> Result<Option<Codec>, String> {
    match value.trim() {
        "producer" => Ok(None),
        "none" => Err(format!(
            "{COMPRESSION_TYPE}=\"none\": a topic's value for it is \"uncompressed\""
        )),
        v => Codec::from_name(v).map(Some).ok_or_else(|| {
            format!(
                "{COMPRESSION_TYPE}={value:?}: a topic's codec is producer, uncompressed, gzip, \
                 snappy, lz4 or zstd"
            )
        }),
    }
}

/// The name `compression.type` gives `codec`.
fn codec_value(codec: Option<Codec>) -> &'static str {
    match codec {
        None => "producer",
        Some(Codec::None) => "uncompressed",
        Some(c) => c.name(),
    }
}

/// A topic's own retention as a client gives `retention.ms`: -1 (none) only where the log
/// keeps records for ever, and else at least 1 and at most the log's.
fn topic_retention(state: &ThreadState, value: &str) -> Result<Option<Duration>, String> {
    let log_age = state.shared.log.config().retention_limits().1;
    let log_ms = log_age.map_or(-1, |a| a.as_millis() as i64);
    match value.trim().parse::<i64>() {
        Ok(-1) if log_age.is_none() => Ok(None),
        Ok(ms) if ms >= 1 && (log_ms == -1 || ms <= log_ms) => {
            Ok(Some(Duration::from_millis(ms as u64)))
        }
        _ => Err(format!(
            "{RETENTION_MS}={value:?}: a topic's retention here is {}",
            match log_age {
                Some(_) => format!(
                    "from 1 to the log's, {log_ms} (segments are shared, and the log's \
                     retention deletes them)"
                ),
                None => "-1 (keep everything, as the log does) or at least 1".to_owned(),
            }
        )),
    }
}

/// A created topic's configs, as CreateTopics returns them from version 5.
pub(crate) fn created_topic_configs(
    state: &ThreadState,
    own: TopicOwn,
) -> Vec<CreatableTopicConfigs> {
    entries(state, false, own)
        .into_iter()
        .map(|e| {
            let mut c = CreatableTopicConfigs::default();
            c.name = StrBytes::from_static_str(e.name);
            c.read_only = !e.alterable;
            c.config_source = e.source();
            c.value = Some(StrBytes::from_string(e.value));
            c
        })
        .collect()
}

fn entry(
    name: &'static str,
    value: impl ToString,
    kind: i8,
    set: bool,
    doc: &'static str,
) -> Entry {
    Entry {
        name,
        value: value.to_string(),
        kind,
        set,
        doc,
        dynamic: false,
        alterable: false,
    }
}

/// A group's configs: its pace, unset (no value) when it has none.
fn group_entries(state: &ThreadState, group: &str) -> Vec<Entry> {
    let limit = state.shared.coordinator.rate(group).unwrap_or_default();
    let rate = |name, value: Option<f64>, doc| Entry {
        name,
        set: value.is_some(),
        value: value.map_or_else(String::new, |v| v.to_string()),
        kind: DOUBLE,
        doc,
        dynamic: true,
        alterable: true,
    };
    vec![
        rate(
            GROUP_RATE_MSGS,
            limit.msgs_per_s,
            "Records per second the group's members' fetches take together (none: unpaced).",
        ),
        rate(
            GROUP_RATE_BYTES,
            limit.bytes_per_s,
            "Bytes per second of stored batches the group's members' fetches take together.",
        ),
    ]
}

/// Whether `name` may be a group's config resource name.
fn group_name_ok(name: &str) -> Result<(), (ResponseError, String)> {
    floodgate::validate_group_name(name).map_err(|e| (ResponseError::InvalidGroupId, e.to_string()))
}

/// The configs of a topic (`broker` false; `own`: what it has of its own) or of the broker.
fn entries(state: &ThreadState, broker: bool, own: TopicOwn) -> Vec<Entry> {
    let log = &state.shared.log;
    let config = log.config();
    let (bytes, age) = config.retention_limits();
    let age_ms = age.map_or(-1, |a| a.as_millis() as i64);
    let bytes = bytes.map_or(-1, |b| b as i64);
    let segment = config.segment_size();
    let record = config.record_bytes_limit();
    let server = &state.shared.config;
    let groups = &server.groups;
    if !broker {
        return vec![
            entry(
                "cleanup.policy",
                "delete",
                STRING,
                false,
                "Old segments are deleted by retention; floodgate does not compact.",
            ),
            Entry {
                value: own.age.map_or(age_ms, |r| r.as_millis() as i64).to_string(),
                set: own.age.is_some() || age.is_some(),
                dynamic: own.age.is_some(),
                alterable: true,
                ..entry(
                    RETENTION_MS,
                    0,
                    LONG,
                    false,
                    "The topic's retention by age, at most the log's (-1: none); the log's \
                     unless set on the topic.",
                )
            },
            Entry {
                value: own.bytes.map_or(bytes, |b| b as i64).to_string(),
                set: own.bytes.is_some() || bytes >= 0,
                dynamic: own.bytes.is_some(),
                alterable: true,
                ..entry(
                    RETENTION_BYTES,
                    0,
                    LONG,
                    false,
                    "The topic's retention by size, in bytes per partition (-1: none); unless \
                     set on the topic, the log's (for the whole log).",
                )
            },
            entry(
                "segment.bytes",
                segment,
                INT,
                false,
                "The log's segment size, for every topic.",
            ),
            Entry {
                value: own.message_bytes.unwrap_or(record).to_string(),
                set: own.message_bytes.is_some(),
                dynamic: own.message_bytes.is_some(),
                alterable: true,
                ..entry(
                    MAX_MESSAGE_BYTES,
                    0,
                    INT,
                    false,
                    "The largest record batch the topic accepts, at most the log's; the log's \
                     unless set on the topic.",
                )
            },
            Entry {
                value: match own.timestamps {
                    Some(TimestampType::LogAppendTime) => "LogAppendTime",
                    _ => "CreateTime",
                }
                .to_owned(),
                set: own.timestamps.is_some(),
                dynamic: own.timestamps.is_some(),
                alterable: true,
                ..entry(
                    TIMESTAMP_TYPE,
                    0,
                    STRING,
                    false,
                    "Which time the records carry: the producer's (CreateTime) or the time \
                     they are appended (LogAppendTime).",
                )
            },
            Entry {
                value: codec_value(own.codec).to_owned(),
                set: own.codec.is_some(),
                dynamic: own.codec.is_some(),
                alterable: true,
                ..entry(
                    COMPRESSION_TYPE,
                    0,
                    STRING,
                    false,
                    "The codec client batches are stored in, compressed again if sent in \
                     another (producer: as the producer compressed them).",
                )
            },
            entry(
                "min.insync.replicas",
                1,
                INT,
                false,
                "One broker: an ack means durable on it.",
            ),
        ];
    }
    vec![
        entry("broker.id", NODE_ID, INT, false, "The only broker."),
        entry(
            "log.dirs",
            config.dir().display(),
            STRING,
            true,
            "The data directory.",
        ),
        entry(
            "num.partitions",
            server.default_partitions,
            INT,
            true,
            "Partitions of an auto-created topic.",
        ),
        entry(
            "auto.create.topics.enable",
            server.auto_create_topics,
            BOOLEAN,
            true,
            "Whether topics are created on first use.",
        ),
        entry(
            "socket.request.max.bytes",
            server.max_request_bytes,
            INT,
            true,
            "The largest request accepted.",
        ),
        entry(
            "message.max.bytes",
            record,
            INT,
            false,
            "The largest record batch accepted.",
        ),
        entry(
            "log.segment.bytes",
            segment,
            INT,
            false,
            "The segment size.",
        ),
        entry(
            "log.retention.ms",
            age_ms,
            LONG,
            age.is_some(),
            "Retention by age (-1: none).",
        ),
        entry(
            "log.retention.bytes",
            bytes,
            LONG,
            bytes >= 0,
            "Retention by size (-1: none).",
        ),
        entry(
            "group.initial.rebalance.delay.ms",
            groups.initial_rebalance_delay.as_millis(),
            INT,
            true,
            "How long a new classic group's first rebalance waits for more members.",
        ),
        entry(
            "group.min.session.timeout.ms",
            groups.min_session.as_millis(),
            INT,
            true,
            "The shortest session a classic group's member may ask for.",
        ),
        entry(
            "group.max.session.timeout.ms",
            groups.max_session.as_millis(),
            INT,
            true,
            "The longest session a classic group's member may ask for.",
        ),
        entry(
            "group.consumer.heartbeat.interval.ms",
            groups.consumer_heartbeat_interval.as_millis(),
            INT,
            true,
            "How often consumer-protocol members heartbeat (how soon they learn of a new \
             assignment).",
        ),
        entry(
            "group.consumer.session.timeout.ms",
            groups.consumer_session.as_millis(),
            INT,
            true,
            "How long a silent consumer-protocol member stays in its group.",
        ),
    ]
}

pub(crate) fn describe_configs(
    state: &ThreadState,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in &req.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        let found = match resource.resource_type {
            TOPIC => match find(&state.shared.log, name) {
                Some(t) => Ok(entries(state, false, TopicOwn::of(&t))),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name:?}"),
                )),
            },
            BROKER if name.is_empty() || name == NODE_ID.to_string() => {
                Ok(entries(state, true, TopicOwn::default()))
            }
            BROKER => Err((
                ResponseError::InvalidRequest,
                format!("no broker {name:?}: this is broker {NODE_ID}"),
            )),
            GROUP | GROUP_ACL => group_name_ok(name).map(|()| group_entries(state, name)),
            t => Err((
                ResponseError::InvalidRequest,
                format!("resource type {t} has no configs here"),
            )),
        };
        match found {
            Ok(entries) => {
                let wanted = |e: &Entry| {
                    resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
                };
                result.configs = entries
                    .into_iter()
                    .filter(wanted)
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = StrBytes::from_static_str(e.name);
                        c.read_only = !e.alterable;
                        c.config_source = e.source();
                        c.value = match (e.dynamic, e.set) {
                            (true, false) => None,
                            _ => Some(StrBytes::from_string(e.value)),
                        };
                        c.config_type = e.kind;
                        if req.include_documentation {
                            c.documentation = Some(StrBytes::from_static_str(e.doc));
                        }
                        c
                    })
                    .collect();
            }
            Err((code, why)) => {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(why));
            }
        }
        response.results.push(result);
    }
    response
}

/// IncrementalAlterConfigs: a group's pace and a topic's own retention are set (SET) or
/// removed (DELETE) at runtime; the log's and the broker's configs are read-only here.
pub(crate) fn incremental_alter_configs(
    state: &ThreadState,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in &req.resources {
        let name = resource.resource_name.as_str();
        let outcome = match resource.resource_type {
            GROUP | GROUP_ACL => incremental_changes(&resource.configs).and_then(|changes| {
                let limit = state.shared.coordinator.rate(name).unwrap_or_default();
                alter_group(state, name, limit, changes, req.validate_only)
            }),
            TOPIC => alter_topic(state, name, &resource.configs, req.validate_only),
            other => not_alterable(other),
        };
        let mut result = IncrementalResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        (result.error_code, result.error_message) = error_of(outcome);
        response.responses.push(result);
    }
    response
}

/// AlterConfigs, the API before IncrementalAlterConfigs (kept by Kafka for older tools): each
/// resource's configs become exactly those given, and any not given goes back to its default,
/// as in Kafka. A topic's own `retention.ms` and `retention.bytes` are set or removed (its
/// other configs may only restate the log's, as at creation); a group's pace likewise; the
/// broker's configs are read-only here.
pub(crate) fn alter_configs(state: &ThreadState, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in &req.resources {
        let name = resource.resource_name.as_str();
        let given = || (resource.configs.iter()).map(|c| (c.name.as_str(), c.value.as_deref()));
        let outcome = match resource.resource_type {
            GROUP | GROUP_ACL => {
                let changes = given().collect();
                alter_group(
                    state,
                    name,
                    RateLimit::default(),
                    changes,
                    req.validate_only,
                )
            }
            TOPIC => match find(&state.shared.log, name) {
                None => Err(unknown_topic(name)),
                Some(_) => match check_topic_configs(state, given()) {
                    Err(why) => Err((ResponseError::InvalidConfig, why)),
                    Ok(_) if req.validate_only => Ok(()),
                    Ok(own) => set_topic_own(state, name, own),
                },
            },
            other => not_alterable(other),
        };
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        (result.error_code, result.error_message) = error_of(outcome);
        response.responses.push(result);
    }
    response
}

/// A resource's error code and message in an alter request's answer.
fn error_of(outcome: Result<(), (ResponseError, String)>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((code, why)) => (code.code(), Some(StrBytes::from_string(why))),
    }
}

/// The refusal of a resource type whose configs cannot be altered here.
fn not_alterable(resource_type: i8) -> Result<(), (ResponseError, String)> {
    Err(match resource_type {
        BROKER => (
            ResponseError::InvalidConfig,
            "the broker's configs are the log's, set when it is opened".to_owned(),
        ),
        t => (
            ResponseError::InvalidRequest,
            format!("resource type {t} has no configs here"),
        ),
    })
}

fn unknown_topic(name: &str) -> (ResponseError, String) {
    (
        ResponseError::UnknownTopicOrPartition,
        format!("no topic {name:?}"),
    )
}

/// Changes to configs as (name, value): `None` removes it.
type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;

/// IncrementalAlterConfigs' changes to a group's configs.
fn incremental_changes(
    configs: &[AlterableConfig],
) -> Result<Changes<'_>, (ResponseError, String)> {
    (configs.iter())
        .map(|c| match c.config_operation {
            DELETE => Ok((c.name.as_str(), None)),
            SET => Ok((
                c.name.as_str(),
                Some(c.value.as_deref().unwrap_or_default()),
            )),
            op => Err((
                ResponseError::InvalidConfig,
                format!(
                    "{}: operation {op} does not apply to a rate",
                    c.name.as_str()
                ),
            )),
        })
        .collect()
}

/// Applies `changes` ((name, value): `None` removes it) to group `name`'s pace `limit`.
fn alter_group(
    state: &ThreadState,
    name: &str,
    mut limit: RateLimit,
    changes: Changes<'_>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    group_name_ok(name)?;
    for (config, value) in changes {
        let value = match value {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Some(r),
                _ => {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("{config}: {v:?} is not a positive rate"),
                    ));
                }
            },
        };
        match config {
            GROUP_RATE_MSGS => limit.msgs_per_s = value,
            GROUP_RATE_BYTES => limit.bytes_per_s = value,
            other => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("a group has no config {other:?}"),
                ));
            }
        }
    }
    if !validate_only {
        let paced = limit.msgs_per_s.is_some() || limit.bytes_per_s.is_some();
        state
            .shared
            .coordinator
            .set_rate(name, paced.then_some(limit));
    }
    Ok(())
}

/// Sets or deletes topic `name`'s own retention by age or size; its other configs are the
/// log's.
fn alter_topic(
    state: &ThreadState,
    name: &str,
    configs: &[AlterableConfig],
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let Some(topic) = find(&state.shared.log, name) else {
        return Err(unknown_topic(name));
    };
    let mut own = TopicOwn::of(&topic);
    for c in configs {
        let config = c.name.as_str();
        let value = match c.config_operation {
            DELETE => None,
            SET => c.value.as_deref(),
            op => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("{config}: operation {op} does not apply to it"),
                ));
            }
        };
        match own.set(state, config, value) {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "{config}: a topic's configs other than {RETENTION_MS}, \
                         {RETENTION_BYTES}, {MAX_MESSAGE_BYTES}, {COMPRESSION_TYPE} and \
                         {TIMESTAMP_TYPE} are the log's, set when it is opened"
                    ),
                ));
            }
            Err(why) => return Err((ResponseError::InvalidConfig, why)),
        }
    }
    if validate_only {
        return Ok(());
    }
    set_topic_own(state, name, own)
}

/// Gives topic `name` `own` as its own configs.
pub(crate) fn set_topic_own(
    state: &ThreadState,
    name: &str,
    own: TopicOwn,
) -> Result<(), (ResponseError, String)> {
    // All at once: one write of the log's metadata, nothing half applied.
    (state.shared.log)
        .set_topic_configs(name, &own.config(1))
        .map_err(|e| match e {
            floodgate::Error::UnknownTopic(_) => {
                (ResponseError::UnknownTopicOrPartition, e.to_string())
            }
            floodgate::Error::TopicRetentionAboveLog { .. }
            | floodgate::Error::TopicMessageBytesAboveLog { .. } => {
                (ResponseError::InvalidConfig, e.to_string())
            }
            _ => (ResponseError::KafkaStorageError, e.to_string()),
        })
}
