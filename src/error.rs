//! Errors a user of floodgate can meet.
//!
//! Operating errors (disk, user input, bytes read back from disk) are values of [`Error`]; each
//! keeps its source and enough context (path, position, limit) to act on without a debugger.
//! Broken internal invariants are `assert!`s, not errors.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// The result type of every fallible floodgate call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in floodgate.
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", "fdatasync", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// Another `Log` (in this process or another one) holds the data directory.
    #[error(
        "data directory {dir} is locked by another floodgate instance ({holder}); \
         close it first or use another directory"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Who holds the lock, as written in the lock file (for example "pid 4242").
        holder: String,
    },

    /// io_uring cannot be used on this machine.
    #[error(
        "io_uring is unavailable: {reason}; choose the portable backend with \
         Config::io_backend(IoBackend::Portable) (pwrite + fdatasync on the shard thread) \
         or enable io_uring (sysctl kernel.io_uring_disabled=0, container seccomp profile)"
    )]
    IoUringUnavailable {
        /// What the kernel said.
        reason: String,
    },

    /// The file system of the data directory refuses O_DIRECT (ramfs, some network and FUSE file
    /// systems, tmpfs before Linux 6.6).
    #[error(
        "the file system of {path} does not support O_DIRECT ({source}); put the data directory \
         on a disk-backed file system (ext4, xfs), or choose the portable backend with \
         Config::io_backend(IoBackend::Portable), which uses the page cache and fdatasync"
    )]
    DirectIoUnsupported {
        /// The file that could not be opened with O_DIRECT.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// Bytes on disk do not decode, or fail their checksum.
    #[error("corrupt data in {path} at byte {pos}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte position of the damage in that file.
        pos: u64,
        /// What is wrong.
        reason: String,
    },

    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A topic name breaks Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`.
    #[error(
        "invalid topic name {name:?}: a topic name is 1 to 249 characters of [a-zA-Z0-9._-], \
         and not \".\" or \"..\""
    )]
    InvalidTopicName {
        /// The rejected name.
        name: String,
    },

    /// A consumer group name is empty or longer than [`crate::GROUP_NAME_BYTES_MAX`] bytes.
    #[error(
        "invalid consumer group name ({} bytes): a group name is 1 to 32767 bytes",
        name.len()
    )]
    InvalidGroupName {
        /// The rejected name.
        name: String,
    },

    /// A commit's metadata string is longer than [`crate::OFFSET_METADATA_BYTES_MAX`]
    /// (Kafka's `offset.metadata.max.bytes`); nothing was committed.
    #[error("commit metadata of {bytes} bytes exceeds the limit of {max}")]
    OffsetMetadataTooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },

    /// An idempotent producer's batch (see [`crate::Producer::try_append_batch`]) whose first
    /// sequence is not the one after that producer's last batch in the partition: a batch in
    /// between was lost. Nothing was stored.
    #[error("out of order sequence: the batch does not follow the producer's last one")]
    OutOfOrderSequence,

    /// An idempotent producer's batch with an epoch older than the producer's latest in the
    /// partition: a newer instance of the producer took over (it is fenced). Nothing was
    /// stored.
    #[error("the producer's epoch is older than its latest: it was fenced")]
    ProducerFenced,

    /// A topic with that name exists already.
    #[error("topic {0:?} exists already")]
    TopicExists(String),

    /// A topic's own retention that is zero or longer than the log's: segments are shared by
    /// every topic, so the log's retention bounds every topic's.
    #[error(
        "topic {topic:?}: a retention of {asked:?} is {}",
        match log {
            Some(log) if !asked.is_zero() => format!("longer than the log's ({log:?}), which every topic's is bounded by"),
            _ => "not a retention".to_owned(),
        }
    )]
    TopicRetentionAboveLog {
        /// The topic.
        topic: String,
        /// The retention asked for.
        asked: std::time::Duration,
        /// The log's retention by age, if it has one.
        log: Option<std::time::Duration>,
    },

    /// A topic's own largest record batch that is zero or above the log's `record_bytes_max`.
    #[error(
        "topic {topic:?}: a largest record batch of {asked} bytes is {}",
        if *asked == 0 { "not a limit".to_owned() } else { format!("above the log's record_bytes_max ({log})") }
    )]
    TopicMessageBytesAboveLog {
        /// The topic.
        topic: String,
        /// The limit asked for.
        asked: usize,
        /// The log's `record_bytes_max`.
        log: usize,
    },

    /// No topic has that name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    /// The topic has no such partition.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// A topic must have between 1 and `partitions_max` partitions.
    #[error("a topic has 1 to {max} partitions; {asked} asked for")]
    InvalidPartitionCount {
        /// The count asked for.
        asked: u32,
        /// The limit.
        max: u32,
    },

    /// Partitions can be added to a topic, never taken away: the count asked for is not above
    /// the topic's.
    #[error(
        "topic {topic:?} has {partitions} partitions; partitions can only be added, and {asked} asked for"
    )]
    PartitionCountNotIncreased {
        /// The topic.
        topic: String,
        /// Its partitions now.
        partitions: u32,
        /// The count asked for.
        asked: u32,
    },

    /// The topics together would have more than `config::PARTITIONS_TOTAL_MAX`
    /// partitions.
    #[error("the log holds {held} partitions; {asked} more would pass its limit of {max}")]
    TooManyPartitions {
        /// The partitions the new topic asked for.
        asked: u32,
        /// The partitions the log's topics have now.
        held: u64,
        /// The limit.
        max: u64,
    },

    /// A record is larger than `record_bytes_max` once encoded; nothing was written.
    #[error("record of {bytes} bytes (encoded) exceeds record_bytes_max = {max}")]
    RecordTooLarge {
        /// The encoded size of the record.
        bytes: usize,
        /// The configured limit.
        max: usize,
    },

    /// A read asked for an offset outside the partition's readable range.
    #[error(
        "offset {offset} of {topic}/{partition} is out of range: the earliest offset is \
         {earliest} and the next offset is {next}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: crate::offset::Offset,
        /// The earliest offset still stored.
        earliest: crate::offset::Offset,
        /// The offset the next record will get (one past the last readable record).
        next: crate::offset::Offset,
    },

    /// A shard's writer stopped on an I/O error, or its thread panicked, and accepts no more
    /// writes. Records that were not acknowledged before the failure may or may not be on
    /// disk; acknowledged records are.
    #[error("shard {shard} has failed and accepts no more writes: {cause}")]
    ShardFailed {
        /// The shard.
        shard: u32,
        /// The first error: the failed operation, or [`Error::Panicked`].
        #[source]
        cause: Arc<Error>,
    },

    /// A floodgate thread panicked: a bug, reported instead of leaving waiters blocked.
    #[error("the {thread} thread panicked: {message}")]
    Panicked {
        /// Which thread ("shard 0 writer", ...).
        thread: String,
        /// The panic's message.
        message: String,
    },

    /// The log is closed.
    #[error("the log is closed")]
    Closed,

    /// The name is reserved for floodgate's internal topics.
    #[error("topic name {0:?} is reserved for floodgate's own use")]
    ReservedTopicName(String),

    /// The log has reached `Config::disk_bytes_max` and retention may not delete anything
    /// (groups protect unconsumed records): nothing more is accepted until consumers commit
    /// and retention frees a segment.
    #[error(
        "shard {shard} is full: its segment files reached the disk cap and retention may not \
         delete unconsumed records; records are accepted again once consumer groups commit"
    )]
    LogFull {
        /// The shard.
        shard: u32,
    },

    /// An operation needs the consumer to be in a group.
    #[error("{0} needs a consumer group (ConsumerBuilder::group)")]
    NoGroup(&'static str),

    /// A bounded queue is full (backpressure); try again later.
    #[error("the shard's queue is full")]
    Full,

    /// A record batch handed to [`crate::Producer::append_batch`] is malformed (its length,
    /// magic, checksum or records do not hold together); nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),

    /// A well-formed record batch of a kind floodgate does not store (compressed, or part of
    /// a transaction); nothing was written.
    #[error("unsupported record batch: {0}")]
    UnsupportedBatch(String),

    /// Waiting took longer than the caller allowed.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    /// An [`Error::Io`] from an operation, a path and the OS error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// An [`Error::Panicked`] from a panic's payload.
    pub(crate) fn panicked(thread: String, payload: &(dyn std::any::Any + Send)) -> Error {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Error::Panicked { thread, message }
    }

    /// Whether this is an I/O error for lack of disk space (ENOSPC or EDQUOT), or a shard
    /// failed by one.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            Error::ShardFailed { cause, .. } => cause.is_no_space(),
            _ => false,
        }
    }

    /// An [`Error::Corrupt`].
    pub fn corrupt(path: impl Into<PathBuf>, pos: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            pos,
            reason: reason.into(),
        }
    }
}
