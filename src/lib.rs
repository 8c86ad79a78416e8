//! floodgate: a single-node, durable, high-throughput log store for Linux, on io_uring.
//!
//! Producers append records to partitioned topics; each shard's writer thread group-commits
//! them into one sequential log of preallocated segment files with aligned O_DIRECT writes and
//! `fdatasync`; consumers read by offset. With [`Durability::Sync`] (the default) a record is
//! acknowledged only once it is on stable storage, and it survives any crash from then on.
//!
//! ```no_run
//! use floodgate::{Config, Log, Record, TopicConfig};
//! let log = Log::open(Config::new("data"))?;
//! log.create_topic("orders", TopicConfig::new(8))?;
//! let mut producer = log.producer();
//! let at = producer.send("orders", Record::new(b"order-123").key(b"user-9"))?.wait()?;
//! let records = log.read("orders", at.partition, at.offset, 1 << 20)?;
//! assert_eq!(records[0].value.as_deref(), Some(&b"order-123"[..]));
//! # Ok::<(), floodgate::Error>(())
//! ```
//!
//! # The data path, module by module
//!
//! A record from `send` to the disk: [`Producer`] (`producer.rs`: routing by key, encoding
//! the record on the caller's thread) → `shard/ring.rs` (one bounded SPSC ring per producer
//! and shard; `shard/slots.rs` holds each record's offset for its ack) → `shard/writer.rs`
//! (the shard's pinned writer thread: drains the rings, frames batches with `segment/format.rs`,
//! writes and flushes through `io/` — `io/uring.rs`, or `io/portable.rs` — into the files of
//! `shard/files.rs`, then publishes index entries to `index/published.rs` and advances the
//! acks). Beside it, `shard/prepare.rs` (the helper thread) zero-fills the next segment,
//! writes sealed segments' index files (`index/file.rs`, `index/file_io.rs`) and applies
//! `shard/retention.rs`.
//!
//! A consumer's `poll`: [`Consumer`] (`consumer/mod.rs`: positions, the rate limit of
//! `consumer/rate.rs`, groups in `consumer/group.rs` and `consumer/groups.rs`, committed offsets
//! in `consumer/offsets.rs`) → `store.rs` (topic and partition; the offset's range) →
//! `shard/read.rs` (the partition's index, `index/partition.rs`, gives the batches' positions,
//! loading sealed runs through `index/cache.rs`; the bytes come from `shard/read_cache.rs` or
//! an aligned read, ahead of time by `shard/readahead.rs`) → `segment/records.rs` (records
//! decoded, sharing the read buffer).
//!
//! Opening: `log.rs` (the facade) locks the directory, reads `meta.rs`, recovers each shard
//! with `shard/recovery.rs` (scanning with `segment/scan.rs`), starts the threads. Every path
//! in a data directory is named in [`layout`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]
#![warn(rustdoc::broken_intra_doc_links, rustdoc::private_intra_doc_links)]

pub(crate) mod batches;
pub mod config;
pub mod consumer;
pub mod error;
pub(crate) mod index;
pub mod inspect;
pub(crate) mod io;
pub mod layout;
pub(crate) mod log;
pub(crate) mod meta;
pub(crate) mod offset;
pub mod producer;
pub mod segment;
pub(crate) mod shard;
pub(crate) mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use batches::{BatchesAsk, PartitionBatches};
pub use config::{Config, Durability};
pub use consumer::groups::{GroupLag, GroupOffset, OFFSET_METADATA_BYTES_MAX, PartitionLag};
pub use consumer::{Consumer, ConsumerBuilder, ConsumerRecord, RateLimit, StartAt};
pub use error::{Error, Result};
pub use io::baseline::{DeviceBaseline, measure_device};
pub use io::{IoBackend, cores};
pub use log::{Log, PublishMark, Published, ShardState};
pub use meta::{GROUP_NAME_BYTES_MAX, validate_group_name};
pub use offset::Offset;
pub use producer::{Ack, Acked, Producer, Record};
pub use segment::compression::Codec;
pub use segment::records::StoredRecord;
pub use shard::recovery::{DamagedCommits, RecoveryReport};
pub use shard::stats::ShardStats;
pub use store::{TimestampType, TopicConfig, TopicInfo};
