//! The data directory's metadata file and its lock.
//!
//! `meta.json` holds the topics and the facts fixed at creation (shard count). It is replaced
//! atomically: written to `meta.json.tmp`, fsynced, renamed over `meta.json`, and the directory
//! fsynced, so a crash leaves the old or the new file, never a mix. `LOCK` is held with
//! `flock(LOCK_EX)` for the life of a [`crate::Log`]; it names the holder's pid.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::replace_file;
use crate::layout;

/// The metadata format version this code writes.
pub const META_VERSION: u32 = 1;

/// One topic as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// Its id in frame headers; never reused, even after the topic is deleted.
    pub id: u32,
    /// Its partition count.
    pub partitions: u32,
    /// Partition p lives on shard `(first_shard + p) % shards`.
    pub first_shard: u32,
    /// The topic's own retention by age in milliseconds (Kafka's `retention.ms` set on the
    /// topic), at most the log's: its records older than that stop being readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// The topic's own retention by size in bytes per partition (Kafka's `retention.bytes`
    /// set on the topic): a partition's records in its oldest sealed segments stop being
    /// readable while it holds that much without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// The topic's own largest record batch in bytes (Kafka's `max.message.bytes` set on the
    /// topic), at most the log's `record_bytes_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_bytes_max: Option<u64>,
    /// The codec the topic stores client batches in (Kafka's `compression.type` set on the
    /// topic: `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`); absent, batches stay as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Whether the topic's batches carry the time they were appended rather than the
    /// producer's (Kafka's `message.timestamp.type=LogAppendTime` on the topic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_append_time: bool,
}

/// The whole metadata file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Format version.
    pub version: u32,
    /// Shard count, fixed at creation.
    pub shards: u32,
    /// The commit buffer size the log was last written with; recovery's torn-tail window
    /// is derived from it.
    pub commit_bytes_max: u64,
    /// The id the next topic gets.
    pub next_topic_id: u32,
    /// Live topics.
    pub topics: Vec<TopicMeta>,
    /// Producer ids below this may have been handed out (idempotent producers of the Kafka
    /// front): ids are reserved in blocks, and a log opened again starts after the block.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub producer_ids_reserved: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Meta {
    /// Reads `dir/meta.json`, or `None` when the directory has none yet.
    pub fn load(dir: &Path) -> Result<Option<Meta>> {
        let path = layout::meta_path(dir);
        let Some(meta) = read_json_file::<Meta>(&path)? else {
            return Ok(None);
        };
        if meta.version != META_VERSION {
            return Err(Error::corrupt(
                &path,
                0,
                format!(
                    "metadata version {} (this build reads {META_VERSION})",
                    meta.version
                ),
            ));
        }
        meta.check().map_err(|why| Error::corrupt(&path, 0, why))?;
        Ok(Some(meta))
    }

    /// What floodgate itself never writes: opening would otherwise act on it (a topic of 333
    /// M partitions, found by fuzzing, made open allocate and initialise each of them).
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        use crate::config::{PARTITIONS_MAX, PARTITIONS_TOTAL_MAX, SHARDS_MAX};
        if self.shards == 0 || self.shards as usize > SHARDS_MAX {
            return Err(format!("{} shards (1 to {SHARDS_MAX})", self.shards));
        }
        for (i, t) in self.topics.iter().enumerate() {
            validate_topic_name(&t.name).map_err(|e| e.to_string())?;
            if t.partitions == 0 || t.partitions > PARTITIONS_MAX {
                return Err(format!(
                    "topic {} has {} partitions (1 to {PARTITIONS_MAX})",
                    t.name, t.partitions
                ));
            }
            if t.first_shard >= self.shards || t.id >= self.next_topic_id {
                return Err(format!(
                    "topic {} has first shard {} and id {} ({} shards, next id {})",
                    t.name, t.first_shard, t.id, self.shards, self.next_topic_id
                ));
            }
            if self.topics[..i]
                .iter()
                .any(|u| u.name == t.name || u.id == t.id)
            {
                return Err(format!("topic {} (id {}) is listed twice", t.name, t.id));
            }
        }
        let total = self.partitions_held();
        if total > PARTITIONS_TOTAL_MAX {
            return Err(format!(
                "{total} partitions in all (at most {PARTITIONS_TOTAL_MAX})"
            ));
        }
        Ok(())
    }

    /// The partitions of all topics together.
    fn partitions_held(&self) -> u64 {
        self.topics.iter().map(|t| u64::from(t.partitions)).sum()
    }

    /// Fails unless a new topic of `partitions` keeps the log within
    /// [`crate::config::PARTITIONS_TOTAL_MAX`].
    pub fn check_room_for(&self, partitions: u32) -> Result<()> {
        let held = self.partitions_held();
        let max = crate::config::PARTITIONS_TOTAL_MAX;
        if held + u64::from(partitions) > max {
            return Err(Error::TooManyPartitions {
                asked: partitions,
                held,
                max,
            });
        }
        Ok(())
    }

    /// Replaces `dir/meta.json` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("metadata serialises");
        replace_file(&layout::meta_path(dir), &bytes)
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// A topic as the log itself records it (a record of the offsets topic): enough, with the
/// others, to rebuild `meta.json` from the segments if it is lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicRecord {
    /// The topic.
    #[serde(flatten)]
    pub topic: TopicMeta,
    /// The log's shard count.
    pub shards: u32,
    /// The log's commit buffer size when the record was written.
    pub commit_bytes_max: u64,
}

impl TopicRecord {
    /// The record of topic `t` of `meta`.
    pub fn of(meta: &Meta, t: &TopicMeta) -> TopicRecord {
        TopicRecord {
            topic: t.clone(),
            shards: meta.shards,
            commit_bytes_max: meta.commit_bytes_max,
        }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a topic record serialises")
    }

    /// A record from its bytes, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<TopicRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The key of topic `id`'s [`TopicRecord`] in the offsets topic. Its first byte sets it apart
/// from commit keys (which start with 1).
pub(crate) fn topic_record_key(id: u32) -> [u8; 5] {
    let mut key = [TOPIC_RECORD_KEY; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The topic id of a [`topic_record_key`], if `key` is one.
pub(crate) fn topic_record_id(key: &[u8]) -> Option<u32> {
    match key {
        [TOPIC_RECORD_KEY, id @ ..] => Some(u32::from_be_bytes(id.try_into().ok()?)),
        _ => None,
    }
}

const TOPIC_RECORD_KEY: u8 = 2;

/// The internal topic holding consumer groups' committed offsets (`consumer::offsets`).
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Checks a topic name against Kafka's rule.
pub fn validate_topic_name(name: &str) -> Result<()> {
    if is_legal_name(name) && name != "." && name != ".." {
        Ok(())
    } else {
        Err(Error::InvalidTopicName {
            name: name.to_owned(),
        })
    }
}

/// The most bytes in a consumer group name: the longest string the Kafka protocol carries
/// (Kafka itself sets no other limit). The committed offsets' keys store the length in 16 bits.
pub const GROUP_NAME_BYTES_MAX: usize = i16::MAX as usize;
const _: () = assert!(GROUP_NAME_BYTES_MAX <= u16::MAX as usize);

/// Checks a consumer group name: 1 to [`GROUP_NAME_BYTES_MAX`] bytes of UTF-8, any characters,
/// as Kafka accepts any group id a client sends (spaces, `:`, `/`, non-ASCII letters); group
/// names never become file names.
pub fn validate_group_name(name: &str) -> Result<()> {
    if !name.is_empty() && name.len() <= GROUP_NAME_BYTES_MAX {
        Ok(())
    } else {
        Err(Error::InvalidGroupName {
            name: name.to_owned(),
        })
    }
}

/// The most bytes in a topic or group name (Kafka's topic limit).
pub(crate) const NAME_BYTES_MAX: usize = 249;

/// 1 to [`NAME_BYTES_MAX`] characters of `[a-zA-Z0-9._-]`.
fn is_legal_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Reads a JSON file floodgate wrote; `None` if there is none, `Error::Corrupt` if it does not
/// parse.
pub(crate) fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::corrupt(path, e.column() as u64, e.to_string()))
}

/// The exclusive lock on a data directory, released on drop: a `flock` on the directory itself,
/// which no file operation inside it can undo, and one on its `LOCK` file, which names the
/// holder (deleting that file used to let a second process in).
#[derive(Debug)]
pub struct DirLock {
    _dir: Flock<File>,
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock, or fails with [`Error::Locked`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = layout::lock_path(dir);
        let locked = || Error::Locked {
            dir: dir.to_owned(),
            holder: fs::read_to_string(&path)
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown holder".into()),
        };
        let handle = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        let dir_lock = match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(locked()),
            Err((_, errno)) => return Err(Error::io("flock", dir, errno.into())),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            // A process that locks only the file (an older floodgate) holds it.
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(locked()),
            Err((_, errno)) => return Err(Error::io("flock", &path, errno.into())),
        };
        let me = format!("pid {}\n", std::process::id());
        let written = lock
            .set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| lock.write_all(me.as_bytes()))
            .map_err(|e| Error::io("write", &path, e));
        match written {
            // The pid only helps the next user read `Error::Locked`; the lock is the flock. A
            // full disk must not keep a log from opening to be read.
            Err(e) if e.is_no_space() => {}
            other => other?,
        }
        Ok(DirLock {
            _dir: dir_lock,
            _file: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in ["a", "orders", "A.b_c-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "ä", "a/b", &"x".repeat(250)] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(Error::InvalidTopicName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn meta_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), None);
        let mut meta = Meta {
            version: META_VERSION,
            shards: 2,
            commit_bytes_max: 1 << 20,
            next_topic_id: 1,
            producer_ids_reserved: 0,
            topics: vec![],
        };
        meta.store(dir.path()).unwrap();
        meta.topics.push(topic("t", 1, 3, 1));
        meta.next_topic_id = 2;
        meta.store(dir.path()).unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), Some(meta));
        assert!(!dir.path().join("meta.json.tmp").exists());
    }

    fn topic(name: &str, id: u32, partitions: u32, first_shard: u32) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id,
            partitions,
            first_shard,
            retention_ms: None,
            retention_bytes: None,
            message_bytes_max: None,
            compression: None,
            log_append_time: false,
        }
    }

    fn one_topic(partitions: u32) -> Meta {
        Meta {
            version: META_VERSION,
            shards: 2,
            commit_bytes_max: 1 << 20,
            next_topic_id: 2,
            producer_ids_reserved: 0,
            topics: vec![topic("t", 1, partitions, 1)],
        }
    }

    #[test]
    fn metadata_floodgate_never_writes_is_refused_before_open_acts_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let refuse = |meta: Meta, why: &str| {
            // Written as JSON directly: `store` is for metadata floodgate made.
            fs::write(
                layout::meta_path(dir.path()),
                serde_json::to_vec(&meta).unwrap(),
            )
            .unwrap();
            match Meta::load(dir.path()) {
                Err(Error::Corrupt { reason, .. }) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{why}: expected Corrupt, got {other:?}"),
            }
        };
        // The fuzzer's find: a topic of 333 M partitions made open allocate each of them.
        refuse(one_topic(333_333_333), "333333333 partitions");
        refuse(one_topic(0), "0 partitions");
        let mut m = one_topic(3);
        m.shards = 0;
        refuse(m, "0 shards");
        let mut m = one_topic(3);
        m.topics[0].first_shard = 2;
        refuse(m, "first shard 2");
        let mut m = one_topic(3);
        m.next_topic_id = 1;
        refuse(m, "next id 1");
        let mut m = one_topic(3);
        m.topics.push(m.topics[0].clone());
        m.next_topic_id = 3;
        refuse(m, "listed twice");
        let mut m = one_topic(3);
        m.topics[0].name = "a/b".into();
        refuse(m, "a/b");
        let mut m = one_topic(crate::config::PARTITIONS_MAX);
        for id in 2..=4 {
            m.topics.push(topic(
                &format!("t{id}"),
                id,
                crate::config::PARTITIONS_MAX,
                0,
            ));
        }
        m.next_topic_id = 5;
        fs::write(
            layout::meta_path(dir.path()),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        assert!(
            Meta::load(dir.path()).unwrap().is_some(),
            "4 x 2^20 is the limit"
        );
        m.topics.push(topic("t5", 5, 1, 0));
        m.next_topic_id = 6;
        refuse(m, "4194305 partitions in all");
    }

    #[test]
    fn a_new_topic_must_keep_the_log_within_its_partition_limit() {
        let mut meta = one_topic(crate::config::PARTITIONS_MAX);
        meta.topics[0].partitions = 10;
        let room = (crate::config::PARTITIONS_TOTAL_MAX - 10) as u32;
        meta.check_room_for(room).unwrap();
        match meta.check_room_for(room + 1) {
            Err(Error::TooManyPartitions {
                asked,
                held: 10,
                max,
            }) => {
                assert_eq!(
                    (asked, max),
                    (room + 1, crate::config::PARTITIONS_TOTAL_MAX)
                )
            }
            other => panic!("expected TooManyPartitions, got {other:?}"),
        }
    }

    #[test]
    fn damaged_meta_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(layout::meta_path(dir.path()), b"{\"version\": 1, \"sha").unwrap();
        let err = Meta::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { holder, .. }) => {
                assert_eq!(holder, format!("pid {}", std::process::id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }
}
