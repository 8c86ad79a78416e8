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
//! Modules, along the data path: [`producer`] (routing, encoding, acks) → `shard` (rings, the
//! writer thread, its helper that zero-fills segments and writes index files, the read cache)
//! → [`io`] (io_uring and portable devices, aligned buffers, injected faults for tests) →
//! [`segment`] (the frame format, recovery, reading back) and [`index`] (offset and time
//! lookups) → [`consumer`] (pull by offset, long-poll, exact rate limits); [`meta`] keeps
//! topics; [`log`] ties them together.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod config;
pub mod consumer;
pub mod error;
pub mod index;
pub mod inspect;
pub mod io;
pub mod layout;
pub mod log;
pub mod meta;
pub mod producer;
pub mod segment;
pub(crate) mod shard;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{Config, Durability};
pub use consumer::{Consumer, ConsumerRecord, RateLimit, StartAt};
pub use error::{Error, Result};
pub use io::IoBackend;
pub use io::baseline::{DeviceBaseline, measure_device};
pub use log::{GroupLag, Log, PartitionLag, ShardStats, TopicConfig, TopicInfo};
pub use producer::{Ack, Acked, Producer, Record};
pub use segment::records::StoredRecord;
pub use shard::recovery::RecoveryReport;
