//! [`ConsumerBuilder`]: a consumer's settings, checked, and the consumer built from them (its
//! start positions resolved, its group joined).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::consumer::groups::Groups;
use crate::error::{Error, Result};
use crate::store::Store;

/// Configures a [`Consumer`]; from [`crate::Log::consumer`].
pub struct ConsumerBuilder {
    store: Arc<Store>,
    groups: Arc<Groups>,
    topic: String,
    start: StartAt,
    partitions: Option<Vec<u32>>,
    limit: RateLimit,
    poll_records_max: usize,
    paced_interval: Duration,
    fetch_bytes: Option<usize>,
    group: Option<String>,
    auto_commit: Option<Duration>,
    group_limit: Option<RateLimit>,
    skip_deleted: bool,
}

impl ConsumerBuilder {
    pub(crate) fn new(store: Arc<Store>, groups: Arc<Groups>, topic: &str) -> ConsumerBuilder {
        ConsumerBuilder {
            store,
            groups,
            topic: topic.to_owned(),
            start: StartAt::Earliest,
            partitions: None,
            limit: RateLimit::default(),
            poll_records_max: POLL_RECORDS_MAX_DEFAULT,
            paced_interval: PACED_POLL_INTERVAL_DEFAULT,
            fetch_bytes: None,
            group: None,
            auto_commit: None,
            group_limit: None,
            skip_deleted: false,
        }
    }

    /// When retention deletes records this consumer has not read yet (a position below a
    /// partition's earliest offset), continue from the earliest stored record and count what
    /// was skipped ([`Consumer::skipped`]), instead of failing `poll` with
    /// [`Error::OffsetOutOfRange`] (the default). [`crate::Config::protect_unconsumed`] keeps
    /// this from happening to consumer groups.
    pub fn skip_deleted(mut self, skip: bool) -> ConsumerBuilder {
        self.skip_deleted = skip;
        self
    }

    /// Joins consumer group `name`: the group's members (consumers of this topic with the
    /// same group, in this process) share the topic's partitions, and each partition starts
    /// at the group's committed offset (or at [`ConsumerBuilder::start_at`] where the group
    /// has none). See [`Consumer::commit`] for the delivery guarantee.
    pub fn group(mut self, name: &str) -> ConsumerBuilder {
        self.group = Some(name.to_owned());
        self
    }

    /// Commits the positions of the consumer's partitions every `interval` (checked in
    /// `poll`), before it gives partitions up in a rebalance, and when it is dropped.
    pub fn auto_commit(mut self, interval: Duration) -> ConsumerBuilder {
        self.auto_commit = Some(interval);
        self
    }

    /// A rate limit shared by every member of the group (in addition to this consumer's own).
    /// Setting it from any member changes it for all.
    pub fn group_rate_limit(mut self, limit: RateLimit) -> ConsumerBuilder {
        self.group_limit = Some(limit);
        self
    }

    /// Bytes to read from a partition at a time (default: [`FETCH_BYTES_DEFAULT`], or
    /// [`FETCH_BYTES_RATE_LIMITED`] with a rate limit). At least one batch is read, however
    /// large.
    pub fn fetch_bytes(mut self, n: usize) -> ConsumerBuilder {
        self.fetch_bytes = Some(n.max(1));
        self
    }

    /// Where to start (default: the earliest stored record).
    pub fn start_at(mut self, start: StartAt) -> ConsumerBuilder {
        self.start = start;
        self
    }

    /// Consume only these partitions (default: all of the topic's).
    pub fn partitions(mut self, partitions: Vec<u32>) -> ConsumerBuilder {
        self.partitions = Some(partitions);
        self
    }

    /// Deliver at most this many records per second.
    pub fn max_rate(mut self, msgs_per_s: f64) -> ConsumerBuilder {
        self.limit.msgs_per_s = Some(msgs_per_s);
        self
    }

    /// Deliver at most this many payload bytes per second.
    pub fn max_bytes_rate(mut self, bytes_per_s: f64) -> ConsumerBuilder {
        self.limit.bytes_per_s = Some(bytes_per_s);
        self
    }

    /// How often a rate-limited consumer hands out records at most (default
    /// [`PACED_POLL_INTERVAL_DEFAULT`]; zero: as soon as the limit lets one out). Longer means
    /// larger batches and fewer wake-ups; a 1-second window's count moves by up to this much
    /// of the rate. At most the limiter's burst (10 ms of rate), so nothing is lost waiting.
    pub fn paced_poll_interval(mut self, interval: Duration) -> ConsumerBuilder {
        self.paced_interval = interval.min(rate::BURST);
        self
    }

    /// Records one `poll` returns at most.
    pub fn poll_records_max(mut self, n: usize) -> ConsumerBuilder {
        self.poll_records_max = n.max(1);
        self
    }

    /// Creates the consumer, resolving its start positions (and joining its group).
    pub fn build(self) -> Result<Consumer> {
        check_limit(self.limit)?;
        if let Some(limit) = self.group_limit {
            check_limit(limit)?;
        }
        let topic = self.store.topic(&self.topic)?;
        let count = topic.partitions.len() as u32;
        let membership = match &self.group {
            Some(_) if self.partitions.is_some() => {
                return Err(Error::Config(
                    "a group member is assigned its partitions; do not choose them".into(),
                ));
            }
            Some(name) => {
                let group = self.groups.group(name, &self.topic)?;
                if let Some(limit) = self.group_limit {
                    group.set_rate_limit(Some(limit), Instant::now());
                }
                let member = group.join();
                Some(Membership {
                    group,
                    member,
                    generation: u64::MAX,
                    auto_commit: self.auto_commit,
                    next_auto_commit: Instant::now() + self.auto_commit.unwrap_or_default(),
                    committed: Default::default(),
                })
            }
            None if self.auto_commit.is_some() || self.group_limit.is_some() => {
                return Err(Error::NoGroup("auto-commit or a group rate limit"));
            }
            None => None,
        };
        let chosen = match membership {
            Some(_) => Vec::new(),
            None => self.partitions.unwrap_or_else(|| (0..count).collect()),
        };
        let mut partitions = Vec::with_capacity(chosen.len());
        for p in chosen {
            let position = start_position(&self.store, &self.topic, p, self.start)?;
            partitions.push(PartitionState {
                partition: p,
                shard: topic.partitions[p as usize].shard,
                position,
                fetched: position,
                paused: false,
                stray: false,
            });
        }
        // Members of a group read the log together (see `Readahead::advise`).
        let party = membership
            .as_ref()
            .map_or(0, |m| Arc::as_ptr(&m.group) as u64);
        let mut consumer = Consumer {
            store: self.store,
            groups: self.groups,
            topic: self.topic,
            topic_id: topic.id,
            start: self.start,
            membership,
            commit_producer: None,
            committer: None,
            skip_deleted: self.skip_deleted,
            skipped: 0,
            partitions,
            next: 0,
            buffer: VecDeque::new(),
            limiter: RateLimiter::new(self.limit, Instant::now()),
            paced_next: None,
            paced_interval: self.paced_interval,
            poll_records_max: self.poll_records_max,
            fetch_bytes: self.fetch_bytes,
            paced_read_bytes: super::FETCH_BYTES_RATE_LIMITED,
            cursors: Vec::new(),
            cursor_layouts: Vec::new(),
            scan: LogScan::tagged(party),
            prefetched: Vec::new(),
            runs: Vec::new(),
            next_shard: 0,
            slot_of: Vec::new(),
            strays: 0,
        };
        consumer.reindex();
        consumer.sync_group()?;
        Ok(consumer)
    }
}

pub(super) fn check_limit(limit: RateLimit) -> Result<()> {
    for rate in [limit.msgs_per_s, limit.bytes_per_s].into_iter().flatten() {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(Error::Config(format!(
                "a consumer rate must be positive and finite, not {rate}"
            )));
        }
    }
    Ok(())
}
