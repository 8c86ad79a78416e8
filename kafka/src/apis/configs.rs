//! DescribeConfigs: every config of a topic, of the broker or of a consumer group, with its
//! value and where it comes from. floodgate's segment size, record size limit and retention by
//! size are the log's, the same for every topic: a topic's entries show the log's values,
//! read-only. A topic's `retention.ms` is its own when set (at most the log's: segments are
//! shared, and the log's retention deletes them), else the log's; IncrementalAlterConfigs sets
//! and deletes it at runtime. A group's configs are its pace (messages and bytes per second
//! that its members' fetches take together), which IncrementalAlterConfigs sets and deletes
//! at runtime too.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
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

/// A topic's own retention.
pub(crate) const RETENTION_MS: &str = "retention.ms";

/// Checks the configs a CreateTopics request gives a topic; returns the topic's own retention
/// by age, if it asks for one. Apart from `retention.ms`, a topic's configs here are the log's,
/// the same for every topic: such a config is accepted when it names one of them with the
/// value the topic gets anyway (a null value asks for that value too), and refused otherwise,
/// naming the config and its value here, so that nobody is left believing a topic keeps its
/// records for another time than it does.
pub(crate) fn check_topic_configs(
    state: &ThreadState,
    configs: &[CreatableTopicConfig],
) -> Result<Option<Duration>, String> {
    let entries = entries(state, false, None);
    let mut retention = None;
    for c in configs {
        let name = c.name.as_str();
        if name == RETENTION_MS {
            retention = match c.value.as_deref() {
                Some(v) => topic_retention(state, v)?,
                None => None,
            };
            continue;
        }
        let Some(e) = entries.iter().find(|e| e.name == name) else {
            let known: Vec<&str> = entries.iter().map(|e| e.name).collect();
            return Err(format!(
                "{name:?} is not a topic config here; a topic's configs are {}",
                known.join(", ")
            ));
        };
        match c.value.as_deref() {
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
    Ok(retention)
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
                    "from 1 to the log's, {log_ms} (segments are shared, and the log's                      retention deletes them)"
                ),
                None => "-1 (keep everything, as the log does) or at least 1".to_owned(),
            }
        )),
    }
}

/// A created topic's configs, as CreateTopics returns them from version 5.
pub(crate) fn created_topic_configs(
    state: &ThreadState,
    retention: Option<Duration>,
) -> Vec<CreatableTopicConfigs> {
    entries(state, false, retention)
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

/// The configs of a topic (`broker` false; `retention`: its own, if it has one) or of the
/// broker.
fn entries(state: &ThreadState, broker: bool, retention: Option<Duration>) -> Vec<Entry> {
    let log = &state.shared.log;
    let config = log.config();
    let (bytes, age) = config.retention_limits();
    let age_ms = age.map_or(-1, |a| a.as_millis() as i64);
    let bytes = bytes.map_or(-1, |b| b as i64);
    let segment = config.segment_size();
    let record = config.record_bytes_limit();
    let server = &state.shared.config;
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
                value: retention
                    .map_or(age_ms, |r| r.as_millis() as i64)
                    .to_string(),
                set: retention.is_some() || age.is_some(),
                dynamic: retention.is_some(),
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
            entry(
                "retention.bytes",
                bytes,
                LONG,
                bytes >= 0,
                "The log's retention by size (-1: none), for every topic.",
            ),
            entry(
                "segment.bytes",
                segment,
                INT,
                false,
                "The log's segment size, for every topic.",
            ),
            entry(
                "max.message.bytes",
                record,
                INT,
                false,
                "The largest record batch accepted.",
            ),
            entry(
                "message.timestamp.type",
                "CreateTime",
                STRING,
                false,
                "Records keep the producer's timestamps.",
            ),
            entry(
                "compression.type",
                "producer",
                STRING,
                false,
                "Batches are stored as the producer compressed them.",
            ),
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
                Some(t) => Ok(entries(state, false, t.retention_age)),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name:?}"),
                )),
            },
            BROKER if name.is_empty() || name == NODE_ID.to_string() => {
                Ok(entries(state, true, None))
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
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        let outcome = match resource.resource_type {
            GROUP | GROUP_ACL => group_name_ok(name).and_then(|()| {
                let coordinator = &state.shared.coordinator;
                let mut limit = coordinator.rate(name).unwrap_or_default();
                for c in &resource.configs {
                    let value = match c.config_operation {
                        DELETE => None,
                        SET => {
                            let v = c.value.as_deref().unwrap_or_default();
                            match v.parse::<f64>() {
                                Ok(r) if r > 0.0 && r.is_finite() => Some(r),
                                _ => {
                                    return Err((
                                        ResponseError::InvalidConfig,
                                        format!("{}: {v:?} is not a positive rate", c.name),
                                    ));
                                }
                            }
                        }
                        op => {
                            return Err((
                                ResponseError::InvalidConfig,
                                format!("{}: operation {op} does not apply to a rate", c.name),
                            ));
                        }
                    };
                    match c.name.as_str() {
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
                if !req.validate_only {
                    let paced = limit.msgs_per_s.is_some() || limit.bytes_per_s.is_some();
                    coordinator.set_rate(name, paced.then_some(limit));
                }
                Ok(())
            }),
            TOPIC => alter_topic(state, name, &resource.configs, req.validate_only),
            BROKER => Err((
                ResponseError::InvalidConfig,
                "the broker's configs are the log's, set when it is opened".to_owned(),
            )),
            t => Err((
                ResponseError::InvalidRequest,
                format!("resource type {t} has no configs here"),
            )),
        };
        if let Err((code, why)) = outcome {
            result.error_code = code.code();
            result.error_message = Some(StrBytes::from_string(why));
        }
        response.responses.push(result);
    }
    response
}

/// Sets or deletes topic `name`'s own retention; its other configs are the log's.
fn alter_topic(
    state: &ThreadState,
    name: &str,
    configs: &[AlterableConfig],
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let log = &state.shared.log;
    let Some(topic) = find(log, name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name:?}"),
        ));
    };
    let mut retention = topic.retention_age;
    for c in configs {
        if c.name.as_str() != RETENTION_MS {
            return Err((
                ResponseError::InvalidConfig,
                format!(
                    "{}: a topic's configs other than {RETENTION_MS} are the log's, set when it \
                     is opened",
                    c.name.as_str()
                ),
            ));
        }
        retention = match (c.config_operation, c.value.as_deref()) {
            (DELETE, _) => None,
            (SET, Some(v)) => {
                topic_retention(state, v).map_err(|e| (ResponseError::InvalidConfig, e))?
            }
            (SET, None) => None,
            (op, _) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("{RETENTION_MS}: operation {op} does not apply to it"),
                ));
            }
        };
    }
    if validate_only {
        return Ok(());
    }
    log.set_topic_retention(name, retention)
        .map_err(|e| match e {
            floodgate::Error::UnknownTopic(_) => {
                (ResponseError::UnknownTopicOrPartition, e.to_string())
            }
            floodgate::Error::TopicRetentionAboveLog { .. } => {
                (ResponseError::InvalidConfig, e.to_string())
            }
            _ => (ResponseError::KafkaStorageError, e.to_string()),
        })
}
