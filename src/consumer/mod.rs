//! Consuming: pull records of a topic's partitions by offset, at a controlled rate.
//!
//! A [`Consumer`] is used from one thread. It keeps a position per partition (the next offset
//! it will deliver), reads whole batches ahead into a small buffer (`fetch_bytes` per read),
//! and hands records out through its rate limiter. `poll` long-polls: with nothing to
//! deliver it parks until a shard writer publishes new records or the timeout passes; it never
//! spins. Consumers see only acknowledged records (below each partition's visible offset).
//!
//! Delivery is at-least-once across restarts once committed offsets exist (consumer groups);
//! within one `Consumer`, every record is delivered exactly once, in offset order per
//! partition.

mod builder;
mod committer;
mod fetch;
pub(crate) mod group;
pub(crate) mod groups;
pub(crate) mod offsets;
pub(crate) mod rate;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consumer::group::{Group, MemberId};
use crate::consumer::groups::Groups;
use crate::consumer::offsets::{OffsetKey, OffsetValue};
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::segment::records::StoredRecord;
use crate::segment::{LogPos, Offset};
use crate::shard::Waiter;
use crate::shard::read::LogScan;

use crate::store::Store;

pub use builder::ConsumerBuilder;
use builder::check_limit;
pub use rate::{RateLimit, RateLimiter};

/// Where a consumer starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The earliest stored record.
    #[default]
    Earliest,
    /// After the last record stored now: only new records.
    Latest,
    /// This offset (it must lie in each partition's stored range).
    Offset(Offset),
    /// The first record with a timestamp at or after this one (ms); the end if none.
    Timestamp(i64),
}

/// A record delivered by [`Consumer::poll`], with its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The partition it came from.
    pub partition: u32,
    /// The record.
    pub record: StoredRecord,
}

/// Bytes a consumer reads from a partition at a time, by default, when it is not rate limited.
pub const FETCH_BYTES_DEFAULT: usize = 256 << 10;
/// ...and when it is: a rate-limited consumer needs little per read, and every read of the
/// backlog occupies the disk ahead of the writer's commits, whose ack latency grows with the
/// read size (docs/TUNING.md, `fetch_bytes`).
pub const FETCH_BYTES_RATE_LIMITED: usize = 16 << 10;
/// A rate-limited consumer that falls behind its rate (it owes records: its reads take longer
/// than the rate allows, as when a record of many partitions carries a batch's headers and
/// each 16 KiB read brings fewer of them) doubles its reads up to this, and halves them back
/// once it has caught up.
pub const FETCH_BYTES_RATE_LIMITED_MAX: usize = 256 << 10;
/// A rate-limited consumer hands out records at most this often by default (what it may
/// deliver keeps accruing meanwhile, within the limiter's burst): at 80,000/s, batches of
/// about 80 records instead of one to six, each a wake-up. A 1-second window's count moves by
/// at most this much of the rate.
pub const PACED_POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(1);
/// Records one `poll` returns at most, by default.
pub const POLL_RECORDS_MAX_DEFAULT: usize = 10_000;

const _: () = assert!(FETCH_BYTES_RATE_LIMITED <= FETCH_BYTES_DEFAULT);
const _: () = assert!(FETCH_BYTES_RATE_LIMITED <= FETCH_BYTES_RATE_LIMITED_MAX);
// A paced consumer's hand-out interval is within the limiter's burst, so nothing accrued
// while it waits is lost.
const _: () = assert!(PACED_POLL_INTERVAL_DEFAULT.as_nanos() <= rate::BURST.as_nanos());

/// A consumer's place in its group.
struct Membership {
    group: Arc<Group>,
    member: MemberId,
    /// The group generation last acted on.
    generation: u64,
    auto_commit: Option<Duration>,
    next_auto_commit: Instant,
    /// What this member last committed, per partition (unchanged positions are not
    /// committed again).
    committed: LastCommitted,
}

/// Sleeps until `at`, or until `deadline` if that comes first; returns whether it was the
/// deadline.
fn sleep_until(now: Instant, at: Instant, deadline: Instant) -> bool {
    std::thread::sleep(at.min(deadline).saturating_duration_since(now));
    at >= deadline
}

fn start_position(log: &Store, topic: &str, partition: u32, start: StartAt) -> Result<Offset> {
    let p = log.partition(topic, partition)?;
    let (earliest, next) = (p.offset_earliest(), p.offset_acked());
    Ok(match start {
        StartAt::Earliest => earliest,
        StartAt::Latest => next,
        StartAt::Offset(o) if (earliest..=next).contains(&o) => o,
        StartAt::Offset(o) => {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: o,
                earliest,
                next,
            });
        }
        StartAt::Timestamp(ts) => log
            .offset_for_timestamp(topic, partition, ts)?
            .unwrap_or(next),
    })
}

#[derive(Debug, Clone)]
struct PartitionState {
    partition: u32,
    /// The shard holding it.
    shard: u32,
    /// The next offset to deliver.
    position: Offset,
    /// The next offset to read (records in between are in the buffer).
    fetched: Offset,
    paused: bool,
    /// The log scan found its next batch missing (retention deleted it): read on its own.
    stray: bool,
}

/// Pulls records of one topic. See the module documentation.
pub struct Consumer {
    store: Arc<Store>,
    groups: Arc<Groups>,
    topic: String,
    topic_id: u32,
    start: StartAt,
    membership: Option<Membership>,
    /// Writes commits (created at the first one).
    commit_producer: Option<Producer>,
    /// Writes auto-commits in the background (started at the first one).
    committer: Option<committer::Committer>,
    skip_deleted: bool,
    /// Records retention deleted before this consumer read them (with `skip_deleted`).
    skipped: u64,
    partitions: Vec<PartitionState>,
    /// Where the round-robin over partitions continues.
    next: usize,
    buffer: VecDeque<ConsumerRecord>,
    limiter: RateLimiter,
    /// When a rate-limited consumer may hand records out again, and how long after the last.
    paced_next: Option<Instant>,
    paced_interval: Duration,
    poll_records_max: usize,
    /// Bytes per read, if chosen (else by whether a rate limit applies).
    fetch_bytes: Option<usize>,
    /// A rate-limited consumer's read size now (see [`FETCH_BYTES_RATE_LIMITED_MAX`]).
    paced_read_bytes: usize,
    /// Per shard (by id), where this consumer's scan of the shard's log goes on (`None`: it
    /// consumes no partition there). Empty until placed; cleared whenever a position moves
    /// other than by the scan (seek, resume, a change of assignment, a stray read).
    cursors: Vec<Option<LogPos>>,
    /// Per shard, its layout counter when the cursors were placed: a rewrite of a sealed
    /// segment moves positions, and the cursors are placed again (`shard::rewrite`).
    cursor_layouts: Vec<u64>,
    /// The vectors of the last scan (emptied), kept for the next.
    scan: LogScan,
    /// Per shard, how far this consumer's stretches of a rewritten segment were asked to be
    /// read ahead (see `Consumer::own_stretches`).
    prefetched: Vec<LogPos>,
    /// The runs of stretches last planned, kept for the next plan.
    runs: Vec<(u64, u64)>,
    /// The shard whose log the next scan reads (round robin).
    next_shard: usize,
    /// Partition number → its index in `partitions` (`u32::MAX`: not consumed here).
    slot_of: Vec<u32>,
    /// Partitions marked `stray`.
    strays: usize,
}

impl Consumer {
    /// Returns the next records, waiting up to `timeout` for some to be available and allowed
    /// by the rate limit. An empty result means the timeout passed.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        // From here on the application waits for records; while the log holds some, time it
        // is held up (reading, or the host stalling the thread) is made up by the rate limits.
        let mut held_since = Instant::now();
        loop {
            self.sync_group()?;
            let now = Instant::now();
            self.maybe_auto_commit(now)?;
            if !self.buffer.is_empty() {
                // A paced consumer hands records out at most every `paced_interval`: token by
                // token it woke 13,000 times a second at 80,000/s.
                if let Some(next) = self.paced_next
                    && next > now
                {
                    if sleep_until(now, next, deadline) {
                        return Ok(Vec::new());
                    }
                    continue;
                }
                let n = self.take_tokens(now, held_since);
                if n > 0 {
                    self.paced_next = self.rate_limited().then(|| now + self.paced_interval);
                    let mut out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
                    // Paying back a hold-up, it reads on while its limits allow: one fetch (about
                    // 130 records of 100 bytes) a poll falls short of twice 80,000/s, and a long
                    // hold-up's debt would spill into the next second.
                    while self.buffer.is_empty()
                        && out.len() < self.poll_records_max
                        && self.repaying()
                        && self.fetch()?
                    {
                        let more = self.take_tokens(now, held_since);
                        out.extend(self.buffer.drain(..more));
                        if more == 0 {
                            break;
                        }
                    }
                    for r in &out {
                        let state = self.state_mut(r.partition).expect("a consumed partition");
                        state.position = r.record.offset + 1;
                    }
                    return Ok(out);
                }
                let ready = self.ready_at(now, held_since);
                if sleep_until(now, ready, deadline) {
                    return Ok(Vec::new());
                }
                continue;
            }
            if self.fetch()? {
                self.fetch_more()?;
                continue;
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            self.wait_for_data(deadline)?;
            // Waiting for new records is not being held up.
            held_since = Instant::now();
        }
    }

    /// How many buffered records the consumer's and its group's rate limits let out now
    /// (their tokens are taken).
    fn take_tokens(&mut self, now: Instant, held_since: Instant) -> usize {
        let sizes: Vec<usize> = self
            .buffer
            .iter()
            .take(self.poll_records_max)
            .map(record_bytes)
            .collect();
        let held_since = Some(held_since);
        let mine = self.limiter.take(now, held_since, sizes.iter().copied());
        let Some(m) = &self.membership else {
            return mine;
        };
        let mut group = m.group.limiter.lock().expect("group limiter lock");
        let Some(group) = group.as_mut() else {
            return mine;
        };
        let both = group.take(now, held_since, sizes[..mine].iter().copied());
        self.limiter.give_back(sizes[both..mine].iter().copied());
        both
    }

    /// When the rate limits let the next record out.
    fn ready_at(&mut self, now: Instant, held_since: Instant) -> Instant {
        let held_since = Some(held_since);
        let mine = self.limiter.ready_at(now, held_since);
        let group = self.membership.as_ref().and_then(|m| {
            let mut limiter = m.group.limiter.lock().expect("group limiter lock");
            limiter.as_mut().map(|l| l.ready_at(now, held_since))
        });
        group.map_or(mine, |g| g.max(mine))
    }

    /// Acts on a change in the group: gives up partitions now assigned to another member
    /// (committing them first with auto-commit), and takes free ones assigned to this one.
    fn sync_group(&mut self) -> Result<()> {
        let Some(m) = &mut self.membership else {
            return Ok(());
        };
        let generation = m.group.generation();
        if generation == m.generation {
            return Ok(());
        }
        m.generation = generation;
        let (group, member, auto) = (Arc::clone(&m.group), m.member, m.auto_commit.is_some());
        let changes = group.changes(member);
        if !changes.release.is_empty() {
            if auto {
                self.commit_partitions(&changes.release)?;
            }
            // By a table of the released: a search of the list per partition and per buffered
            // record took 110-145 ms when a member of 10,000 partitions gave up two thirds.
            let mut released = vec![false; self.slot_of.len()];
            for &p in &changes.release {
                if let Some(r) = released.get_mut(p as usize) {
                    *r = true;
                }
            }
            let kept = |p: u32| !released.get(p as usize).copied().unwrap_or(false);
            self.partitions.retain(|s| kept(s.partition));
            self.buffer.retain(|r| kept(r.partition));
            group.release(member, &changes.release);
        }
        for p in group.take(member, &changes.take) {
            let position = self.group_start(p)?;
            let shard = self.store.partition(&self.topic, p)?.shard;
            self.partitions.push(PartitionState {
                partition: p,
                shard,
                position,
                fetched: position,
                paused: false,
                stray: false,
            });
        }
        self.reindex();
        Ok(())
    }

    /// Where a partition taken from the group starts: its committed offset (moved up to the
    /// earliest stored one if retention deleted past it), or the start policy.
    fn group_start(&self, partition: u32) -> Result<Offset> {
        let Some(committed) = self.committed(partition) else {
            return start_position(&self.store, &self.topic, partition, self.start);
        };
        let p = self.store.partition(&self.topic, partition)?;
        Ok(committed.clamp(p.offset_earliest(), p.offset_acked()))
    }

    fn offset_key(&self, group: &Group, partition: u32) -> OffsetKey {
        OffsetKey {
            group: group.name.clone(),
            topic_id: self.topic_id,
            partition,
        }
    }

    /// The group's committed offset of `partition` (the next offset it will consume), if any.
    pub fn committed(&self, partition: u32) -> Option<Offset> {
        let m = self.membership.as_ref()?;
        self.groups
            .offsets
            .get(&self.offset_key(&m.group, partition))
    }

    /// Commits the position of every partition this consumer holds: the group resumes from
    /// there after a restart or a rebalance. Returns once the commit is durable (as durable as
    /// any acknowledged record).
    ///
    /// Delivery is at-least-once: records delivered after the last commit are delivered
    /// again (to this consumer after a restart, or to another member after a rebalance).
    /// Commit after processing, not before, to never lose one.
    pub fn commit(&mut self) -> Result<()> {
        let held: Vec<u32> = self.partitions.iter().map(|s| s.partition).collect();
        self.commit_partitions(&held)
    }

    /// Commits these offsets (partition, next offset to consume) of partitions it holds.
    pub fn commit_offsets(&mut self, offsets: &[(u32, Offset)]) -> Result<()> {
        for &(p, _) in offsets {
            self.state(p)?;
        }
        self.write_commits(offsets)
    }

    fn commit_partitions(&mut self, partitions: &[u32]) -> Result<()> {
        let offsets = self.positions(partitions);
        self.write_commits(&offsets)
    }

    /// The positions of `partitions` this consumer holds, to commit.
    fn positions(&self, partitions: &[u32]) -> Vec<(u32, Offset)> {
        // By the partition table: a search of `partitions` for each took 100 M comparisons a
        // commit at 10,000 partitions.
        partitions
            .iter()
            .filter_map(|&p| self.state(p).ok().map(|s| (p, s.position)))
            .collect()
    }

    /// The commit entries of `offsets` that differ from what this member last committed.
    fn entries(&self, offsets: &[(u32, Offset)]) -> Result<Vec<(OffsetKey, Option<OffsetValue>)>> {
        let Some(m) = &self.membership else {
            return Err(Error::NoGroup("commit"));
        };
        Ok(offsets
            .iter()
            .filter(|&&(p, o)| m.committed.get(p) != Some(o))
            .map(|&(p, o)| (self.offset_key(&m.group, p), Some(OffsetValue::of(o))))
            .collect())
    }

    fn write_commits(&mut self, offsets: &[(u32, Offset)]) -> Result<()> {
        // In the order made: the background one in flight first.
        self.wait_background()?;
        let entries = self.entries(offsets)?;
        if entries.is_empty() {
            return Ok(());
        }
        let producer = self
            .commit_producer
            .get_or_insert_with(|| Producer::internal(Arc::clone(&self.store)));
        self.groups.offsets.commit(producer, &entries)?;
        let m = self.membership.as_mut().expect("checked by entries");
        m.committed.extend(offsets);
        self.groups.update_protection();
        Ok(())
    }

    /// Waits for the auto-commit in flight, if one is; its failure makes the next commit
    /// write every partition again.
    fn wait_background(&mut self) -> Result<()> {
        let Some(c) = &self.committer else {
            return Ok(());
        };
        let outcome = c.wait();
        if outcome.is_err()
            && let Some(m) = &mut self.membership
        {
            m.committed.clear();
        }
        outcome
    }

    /// Hands the positions of every partition held to the background committer (see
    /// `committer.rs`), unless a commit is still in flight.
    fn commit_in_background(&mut self) -> Result<()> {
        if let Some(c) = &self.committer {
            if let Some(e) = c.take_error() {
                if let Some(m) = &mut self.membership {
                    m.committed.clear();
                }
                return Err(e);
            }
            if c.busy() {
                return Ok(());
            }
        }
        let held: Vec<u32> = self.partitions.iter().map(|s| s.partition).collect();
        let offsets = self.positions(&held);
        let entries = self.entries(&offsets)?;
        if entries.is_empty() {
            return Ok(());
        }
        if self.committer.is_none() {
            let c = committer::Committer::start(Arc::clone(&self.store), Arc::clone(&self.groups))?;
            self.committer = Some(c);
        }
        let m = self.membership.as_mut().expect("checked by entries");
        m.committed.extend(&offsets);
        self.committer
            .as_ref()
            .expect("started above")
            .submit(entries);
        Ok(())
    }

    fn maybe_auto_commit(&mut self, now: Instant) -> Result<()> {
        let Some(m) = &mut self.membership else {
            return Ok(());
        };
        let Some(interval) = m.auto_commit else {
            return Ok(());
        };
        if now < m.next_auto_commit {
            return Ok(());
        }
        m.next_auto_commit = now + interval;
        self.commit_in_background()
    }

    /// Records skipped because retention deleted them first (see
    /// [`ConsumerBuilder::skip_deleted`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The partitions this consumer holds now (all it was built with, or its group's share).
    pub fn assignment(&self) -> Vec<u32> {
        self.partitions.iter().map(|s| s.partition).collect()
    }

    /// Leaves the group (committing first, with auto-commit), reporting any error; dropping
    /// the consumer does the same and ignores errors.
    pub fn close(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        let outcome = if m.auto_commit.is_some() {
            self.commit()
        } else {
            Ok(())
        };
        let m = self.membership.take().expect("checked above");
        m.group.leave(m.member);
        outcome
    }

    /// Sets the group-wide rate limit (for every member); `None` removes it.
    pub fn set_group_rate_limit(&mut self, limit: Option<RateLimit>) -> Result<()> {
        let Some(m) = &self.membership else {
            return Err(Error::NoGroup("a group rate limit"));
        };
        if let Some(l) = limit {
            check_limit(l)?;
        }
        m.group.set_rate_limit(limit, Instant::now());
        Ok(())
    }

    /// Whether a rate limit (this consumer's or its group's) paces delivery.
    fn rate_limited(&self) -> bool {
        let limited = |l: RateLimit| l.msgs_per_s.is_some() || l.bytes_per_s.is_some();
        limited(self.limiter.limit())
            || self
                .membership
                .as_ref()
                .and_then(|m| m.group.rate_limit())
                .is_some_and(limited)
    }

    /// Whether this consumer's or its group's limiter is paying back a hold-up.
    fn repaying(&self) -> bool {
        self.limiter.repaying()
            || self.membership.as_ref().is_some_and(|m| {
                m.group
                    .limiter
                    .lock()
                    .expect("group limiter lock")
                    .as_ref()
                    .is_some_and(RateLimiter::repaying)
            })
    }

    /// Parks until a shard publishes, the deadline passes, or data is already there.
    fn wait_for_data(&mut self, deadline: Instant) -> Result<()> {
        let topic = self.store.topic(&self.topic)?;
        let mut shards: Vec<u32> = self
            .partitions
            .iter()
            .map(|s| topic.partitions[s.partition as usize].shard)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for &s in &shards {
            self.store.shards[s as usize]
                .data_waiters
                .add(Waiter::Thread(std::thread::current()));
        }
        // Look once more after registering, so a publish in between is not missed.
        if self.strays > 0 {
            return Ok(());
        }
        if !self.cursors.is_empty() {
            let behind = |(s, c): (usize, &Option<LogPos>)| {
                c.is_some_and(|c| c < self.store.acked_end(s as u32))
            };
            if self.cursors.iter().enumerate().any(behind) {
                return Ok(());
            }
        }
        for state in self
            .partitions
            .iter()
            .filter(|s| !s.paused && self.cursors.is_empty())
        {
            let p = self.store.partition(&self.topic, state.partition)?;
            if p.offset_acked() > state.fetched {
                return Ok(());
            }
        }
        for &s in &shards {
            if let Some(e @ Error::ShardFailed { .. }) = self.store.shards[s as usize].stopped() {
                return Err(e);
            }
        }
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        Ok(())
    }

    fn state_mut(&mut self, partition: u32) -> Option<&mut PartitionState> {
        let i = *self.slot_of.get(partition as usize)?;
        self.partitions.get_mut(i as usize)
    }

    fn state(&self, partition: u32) -> Result<&PartitionState> {
        let i = self.slot_of.get(partition as usize).copied();
        i.and_then(|i| self.partitions.get(i as usize))
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.topic.clone(),
                partition,
                partitions: self.partitions.len() as u32,
            })
    }

    /// The next offset this consumer delivers from `partition`.
    pub fn position(&self, partition: u32) -> Result<Offset> {
        Ok(self.state(partition)?.position)
    }

    /// Moves `partition` to `offset`, which must lie in its stored range.
    pub fn seek(&mut self, partition: u32, offset: Offset) -> Result<()> {
        self.state(partition)?;
        let p = self.store.partition(&self.topic, partition)?;
        let (earliest, next) = (p.offset_earliest(), p.offset_acked());
        if !(earliest..=next).contains(&offset) {
            return Err(Error::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition,
                offset,
                earliest,
                next,
            });
        }
        self.buffer.retain(|r| r.partition != partition);
        let state = self.state_mut(partition).expect("checked above");
        state.position = offset;
        state.fetched = offset;
        self.cursors.clear();
        Ok(())
    }

    /// Stops delivering from these partitions until resumed (records already read stay
    /// buffered for when they resume).
    pub fn pause(&mut self, partitions: &[u32]) {
        self.set_paused(partitions, true);
    }

    /// Delivers from these partitions again.
    pub fn resume(&mut self, partitions: &[u32]) {
        self.set_paused(partitions, false);
    }

    fn set_paused(&mut self, partitions: &[u32], paused: bool) {
        for s in &mut self.partitions {
            if partitions.contains(&s.partition) {
                s.paused = paused;
            }
        }
        if paused {
            // Paused partitions' buffered records go back to being unread.
            let held: Vec<(u32, Offset)> = self
                .partitions
                .iter()
                .filter(|s| s.paused)
                .map(|s| (s.partition, s.position))
                .collect();
            self.buffer
                .retain(|r| !held.iter().any(|(p, _)| *p == r.partition));
            for s in &mut self.partitions {
                if s.paused {
                    s.fetched = s.position;
                }
            }
        }
        // Scans passed over paused partitions' frames.
        self.cursors.clear();
    }

    /// Records stored but not yet delivered, per partition: (partition, lag).
    pub fn lag(&self) -> Result<Vec<(u32, u64)>> {
        self.partitions
            .iter()
            .map(|s| {
                let p = self.store.partition(&self.topic, s.partition)?;
                Ok((s.partition, p.offset_acked().since(s.position)))
            })
            .collect()
    }

    /// The rate limits in force.
    pub fn rate_limit(&self) -> RateLimit {
        self.limiter.limit()
    }

    /// Changes the rate limits while consuming.
    pub fn set_rate_limit(&mut self, limit: RateLimit) -> Result<()> {
        check_limit(limit)?;
        self.limiter.set_limit(limit, Instant::now());
        Ok(())
    }

    /// How long the current lag takes to drain at the message rate limit, if there is one.
    pub fn time_to_drain(&self) -> Result<Option<Duration>> {
        let lag: u64 = self.lag()?.iter().map(|(_, l)| l).sum();
        Ok(self
            .limiter
            .limit()
            .msgs_per_s
            .map(|r| Duration::from_secs_f64(lag as f64 / r)))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

/// A record's payload size for the byte limit: key, value and headers.
fn record_bytes(r: &ConsumerRecord) -> usize {
    let r = &r.record;
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// What a member last committed, by partition number: looked up for every partition it holds
/// at each auto-commit (10,000 a second), so an array, not a hash table.
#[derive(Debug, Default)]
struct LastCommitted(Vec<Option<Offset>>);

impl LastCommitted {
    fn get(&self, partition: u32) -> Option<Offset> {
        self.0.get(partition as usize).copied().flatten()
    }

    fn extend(&mut self, offsets: &[(u32, Offset)]) {
        for &(p, o) in offsets {
            let at = p as usize;
            if self.0.len() <= at {
                self.0.resize(at + 1, None);
            }
            self.0[at] = Some(o);
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}
