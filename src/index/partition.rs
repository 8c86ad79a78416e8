//! A partition's index: its entries, sealed runs and watermarks.

use crate::segment::{LogPos, Offset, SegmentId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use super::*;
use crate::error::Result;

#[derive(Debug, Default)]
struct PartitionIndex {
    /// One run per sealed segment holding batches of the partition, in offset order.
    sealed: Vec<SealedRun>,
    /// Batches of segments whose index file is not written yet, in offset order, each with
    /// the running maximum timestamp up to it (over the sealed runs too). A ring, so a sealed
    /// segment's entries leave from the front without moving the newer ones.
    active: VecDeque<(BatchEntry, i64)>,
    /// Bytes of the frames of `active`'s batches.
    active_bytes: u64,
}

impl PartitionIndex {
    fn running_max(&self) -> Option<i64> {
        self.active
            .back()
            .map(|(_, m)| *m)
            .or(self.sealed.last().map(|r| r.running_max))
    }

    fn next_offset(&self) -> Option<Offset> {
        self.active
            .back()
            .map(|(e, _)| e.last_offset.next())
            .or(self.sealed.last().map(|r| r.run.last_offset.next()))
    }
}

/// A partition's shared state: written by its shard writer, read by anyone.
#[derive(Debug)]
pub struct Partition {
    /// The topic's id.
    pub topic_id: u32,
    /// The partition number.
    pub partition: u32,
    /// The shard that owns it.
    pub shard: u32,
    /// Its slot in the shard's partition table.
    pub slot: u32,
    /// The offset the next record will get. Written by recovery, then only by the shard
    /// writer (its own copy is `SlotState::offset_next`; this one is where it starts).
    /// Watermarks: `offset_next ≥ offset_acked ≥ offset_earliest()`.
    pub(crate) offset_next: AtomicU64,
    /// One past the last acknowledged record (durable under `Durability::Sync`, written under
    /// `Interval`): readers see offsets below it. Moved forward, with release ordering, by
    /// readers delivering the writer's published entries and by the helper sealing a run;
    /// never backwards.
    pub(crate) offset_acked: AtomicU64,
    /// Where its records start for readers, when that is past its first stored batch: the
    /// topic's own retention (or a request to delete records) moved it there. Only rises.
    offset_start: AtomicU64,
    /// Its topic's own retention by age in milliseconds; 0 when it has none.
    retention_ms: AtomicU64,
    /// Its topic's own retention by size, in bytes of this partition; `u64::MAX` when it has
    /// none.
    retention_bytes: AtomicU64,
    /// Its topic was deleted: nothing of it is read again.
    deleted: AtomicBool,
    index: RwLock<PartitionIndex>,
    /// Where a read of many partitions last stopped in this one: the offset after its last
    /// batch, and the position in the log just past that batch (its next batch lies at or after
    /// it), and the shard's layout counter the position belongs to. Saves the next such read
    /// an index lookup; only a hint, checked by the reader.
    read_hint: Mutex<Option<(Offset, LogPos, u64)>>,
}

/// Appends entries to `out` while they fit in `frame_bytes_max` bytes of frames (the first
/// always does) and lie below `visible`; returns false once one does not (the read is done).
/// Where a read of a partition's entries stops: offsets at `visible` and on (not yet
/// acknowledged), and with `before`, batches at that position of the log and after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub visible: Offset,
    pub before: Option<LogPos>,
}

fn take_entries<'a>(
    out: &mut Vec<BatchEntry>,
    entries: impl Iterator<Item = &'a BatchEntry>,
    frame_bytes_max: usize,
    limit: Limit,
) -> bool {
    let mut bytes: usize = out.iter().map(|e| e.frame_bytes as usize).sum();
    for e in entries {
        if e.base_offset >= limit.visible
            || limit.before.is_some_and(|before| e.at() >= before)
            || (!out.is_empty() && bytes + e.frame_bytes as usize > frame_bytes_max)
        {
            return false;
        }
        bytes += e.frame_bytes as usize;
        out.push(*e);
    }
    true
}

impl Partition {
    /// An empty partition.
    pub fn new(topic_id: u32, partition: u32, shard: u32, slot: u32) -> Partition {
        Partition {
            topic_id,
            partition,
            shard,
            slot,
            offset_next: AtomicU64::new(0),
            offset_acked: AtomicU64::new(0),
            offset_start: AtomicU64::new(0),
            retention_ms: AtomicU64::new(0),
            retention_bytes: AtomicU64::new(u64::MAX),
            deleted: AtomicBool::new(false),
            index: RwLock::new(PartitionIndex::default()),
            read_hint: Mutex::new(None),
        }
    }

    /// Its (topic id, partition).
    pub fn id(&self) -> TopicPartition {
        TopicPartition::new(self.topic_id, self.partition)
    }

    /// The largest record timestamp of its batches so far, if it has any (retention does not
    /// lower it: deleted batches' timestamps count).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.index.read().expect("index lock").running_max()
    }

    /// Makes room for `n` more entries (recovery, which knows how many it will push).
    pub(crate) fn reserve(&self, n: usize) {
        self.index
            .write()
            .expect("index lock")
            .active
            .reserve_exact(n);
    }

    /// Appends an entry (the writer, when the batch becomes visible; recovery).
    pub(crate) fn push(&self, entry: BatchEntry) {
        let mut index = self.index.write().expect("index lock");
        if let Some(next) = index.next_offset() {
            assert_eq!(next, entry.base_offset, "index entries must be dense");
        }
        let running_max = index
            .running_max()
            .map_or(entry.max_timestamp, |m| m.max(entry.max_timestamp));
        index.active.push_back((entry, running_max));
        index.active_bytes += u64::from(entry.frame_bytes);
    }

    /// Appends a sealed run (recovery, from an index file's directory).
    pub(crate) fn push_run(&self, segment: SegmentId, run: IndexRun, entries_pos: u64) {
        let mut index = self.index.write().expect("index lock");
        if let Some(next) = index.next_offset() {
            assert_eq!(next, run.first_offset, "index runs must be dense");
        }
        assert!(
            index.active.is_empty(),
            "sealed runs come before active entries"
        );
        let running_max = index
            .running_max()
            .map_or(run.max_timestamp, |m| m.max(run.max_timestamp));
        index.sealed.push(SealedRun {
            segment,
            run,
            entries_pos,
            running_max,
        });
    }

    /// Replaces the entries of `segment`, whose index file is now written, by its run: the
    /// partition's oldest active entries that are of that segment (all, some or none of the
    /// run's: the rest may never have been pushed) go. Returns false (and changes nothing)
    /// unless the run continues the sealed runs and those entries are a prefix of it.
    pub(crate) fn seal_run(&self, segment: SegmentId, run: IndexRun, entries_pos: u64) -> bool {
        let mut index = self.index.write().expect("index lock");
        // Found by bisection: counting the segment's entries one by one would read millions of
        // them with the index lock held, and readers would wait.
        let n = match index.active.front() {
            Some((e, _)) if e.segment == segment => {
                index.active.partition_point(|(e, _)| e.segment <= segment)
            }
            _ => 0,
        };
        let continues = index
            .sealed
            .last()
            .is_none_or(|r| r.run.last_offset.next() == run.first_offset);
        let prefix = n == 0
            || (index.active[0].0.base_offset == run.first_offset
                && index.active[n - 1].0.last_offset <= run.last_offset);
        let rest_follows = index
            .active
            .get(n)
            .is_none_or(|(e, _)| e.base_offset == run.last_offset.next());
        if !(continues && prefix && rest_follows) {
            return false;
        }
        let running_max = index
            .sealed
            .last()
            .map_or(run.max_timestamp, |r| r.running_max.max(run.max_timestamp));
        // Usually the run's every entry, whose bytes it states; else they are counted.
        index.active_bytes -= if n == run.entry_count as usize && run.bytes > 0 {
            u64::from(run.bytes)
        } else {
            index
                .active
                .range(..n)
                .map(|(e, _)| u64::from(e.frame_bytes))
                .sum()
        };
        index.active.drain(..n);
        index.sealed.push(SealedRun {
            segment,
            run,
            entries_pos,
            running_max,
        });
        true
    }

    /// Puts `run` (of sealed `segment`, rewritten: the same offsets at new positions, its
    /// entries at `entries_pos` of the new index file) in place of the partition's run of that
    /// segment. Returns false (and changes nothing) if the partition has no run there that
    /// holds the same offsets.
    pub(crate) fn replace_run(&self, segment: SegmentId, run: IndexRun, entries_pos: u64) -> bool {
        let mut index = self.index.write().expect("index lock");
        let Some(old) = index.sealed.iter_mut().find(|r| r.segment == segment) else {
            return false;
        };
        if (old.run.first_offset, old.run.last_offset) != (run.first_offset, run.last_offset) {
            return false;
        }
        old.run = run;
        old.entries_pos = entries_pos;
        true
    }

    /// Whether a rewrite replaced `run` (the partition's run of its segment is another now).
    pub(crate) fn run_replaced(&self, run: &SealedRun) -> bool {
        let index = self.index.read().expect("index lock");
        (index.sealed.iter()).any(|r| r.segment == run.segment && r != run)
    }

    /// Drops every batch of segments below `segment` (retention).
    pub(crate) fn forget_below(&self, segment: SegmentId) {
        let mut index = self.index.write().expect("index lock");
        let sealed = index.sealed.partition_point(|r| r.segment < segment);
        index.sealed.drain(..sealed);
        let active = index.active.partition_point(|(e, _)| e.segment < segment);
        let gone: u64 = (index.active.range(..active))
            .map(|(e, _)| u64::from(e.frame_bytes))
            .sum();
        index.active_bytes -= gone;
        index.active.drain(..active);
    }

    /// The last offset stored in segments up to `segment`, if any.
    pub(crate) fn last_offset_through(&self, segment: SegmentId) -> Option<Offset> {
        let index = self.index.read().expect("index lock");
        let active = index.active.partition_point(|(e, _)| e.segment <= segment);
        if active > 0 {
            return Some(index.active[active - 1].0.last_offset);
        }
        let sealed = index.sealed.partition_point(|r| r.segment <= segment);
        (sealed > 0).then(|| index.sealed[sealed - 1].run.last_offset)
    }

    /// Where in the log to look for the batch holding `offset`, if the last read of many
    /// partitions stopped there: a position at or before the batch (none of this partition's
    /// batches lies between).
    /// `layout` is the shard's layout counter now: a hint of another layout is not given.
    pub(crate) fn read_hint(&self, offset: Offset, layout: u64) -> Option<LogPos> {
        let hint = *self.read_hint.lock().unwrap_or_else(|e| e.into_inner());
        hint.filter(|&(at, _, of)| at == offset && of == layout)
            .map(|(_, pos, _)| pos)
    }

    /// Notes that a read stopped after the batch ending at `pos` in the log (of the shard's
    /// layout `layout`), `next` being the offset after it.
    pub(crate) fn set_read_hint(&self, next: Offset, pos: LogPos, layout: u64) {
        *self.read_hint.lock().unwrap_or_else(|e| e.into_inner()) = Some((next, pos, layout));
    }

    /// A position in the log at or before the batch holding `offset`, without reading an
    /// index file: the batch's own position (exact, `true`) if it is among the entries kept in
    /// memory, else the start of the sealed segment whose run holds it (`false`). None if no
    /// stored batch ends at or after `offset`.
    pub(crate) fn position_bound(&self, offset: Offset) -> Option<(LogPos, bool)> {
        let index = self.index.read().expect("index lock");
        let i = index.sealed.partition_point(|r| r.run.last_offset < offset);
        if let Some(run) = index.sealed.get(i) {
            return Some((LogPos::new(run.segment, 0), false));
        }
        let start = index
            .active
            .partition_point(|(e, _)| e.last_offset < offset);
        index.active.get(start).map(|(e, _)| (e.at(), true))
    }

    /// The earliest offset readers get: the first stored one, or where the partition's
    /// start was moved (see [`Partition::trim_to`]) if that is later.
    pub fn offset_earliest(&self) -> Offset {
        let acked = self.offset_acked();
        self.offset_stored().max(self.offset_start().min(acked))
    }

    /// The first offset of its first stored batch (the acknowledged end if it has none).
    pub(crate) fn offset_stored(&self) -> Offset {
        let index = self.index.read().expect("index lock");
        index
            .sealed
            .first()
            .map(|r| r.run.first_offset)
            .or(index.active.front().map(|(e, _)| e.base_offset))
            .unwrap_or_else(|| self.offset_acked())
    }

    /// Sets the partition's start as it was before a restart.
    pub(crate) fn restore_start(&self, offset: Offset) {
        self.offset_start.store(offset.0, Ordering::Release);
    }

    /// Where the partition's start was moved to (0 if never).
    pub(crate) fn offset_start(&self) -> Offset {
        Offset(self.offset_start.load(Ordering::Acquire))
    }

    /// Moves the partition's start up to `offset` (never past what is acknowledged, never
    /// down): records below it are no longer read. Returns whether it moved.
    pub(crate) fn trim_to(&self, offset: Offset) -> bool {
        let offset = offset.min(self.offset_acked()).0;
        self.offset_start.fetch_max(offset, Ordering::AcqRel) < offset
    }

    /// Its topic's own retention by age, if it has one.
    pub(crate) fn retention_ms(&self) -> Option<u64> {
        Some(self.retention_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// Sets (or with `None` clears) its topic's own retention by age.
    pub(crate) fn set_retention_ms(&self, ms: Option<u64>) {
        (self.retention_ms).store(ms.map_or(0, |ms| ms.max(1)), Ordering::Relaxed);
    }

    /// Its topic's own retention by size (bytes of this partition), if it has one.
    pub(crate) fn retention_bytes(&self) -> Option<u64> {
        Some(self.retention_bytes.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    /// Sets (or with `None` clears) its topic's own retention by size.
    pub(crate) fn set_retention_bytes(&self, bytes: Option<u64>) {
        (self.retention_bytes).store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Where retention by size moves its start so that it keeps at least `limit` bytes, by
    /// whole sealed segments (Kafka's rule for `retention.bytes`: the oldest segment goes while
    /// what remains is still `limit` or more; segments not yet sealed always stay): one past
    /// the last offset of the last segment to go, or `None` if none goes. Its size counts every
    /// run at or after its start, and the batches of segments not sealed yet. A run whose index
    /// file predates its byte count has its entries summed through `load`.
    pub(crate) fn retained_bytes(
        &self,
        limit: u64,
        load: &dyn RunLoader,
    ) -> Result<Option<Offset>> {
        let start = self.offset_start();
        let (runs, active_bytes) = {
            let index = self.index.read().expect("index lock");
            let from = index.sealed.partition_point(|r| r.run.last_offset < start);
            (index.sealed[from..].to_vec(), index.active_bytes)
        };
        let mut sizes = Vec::with_capacity(runs.len());
        for run in &runs {
            sizes.push(match run.run.bytes {
                0 => match self.run_bytes(run, load) {
                    Ok(bytes) => bytes,
                    // A rewrite replaced the run meanwhile: at the next pass.
                    Err(_) if self.run_replaced(run) => return Ok(None),
                    Err(e) => return Err(e),
                },
                b => u64::from(b),
            });
        }
        let total = active_bytes + sizes.iter().sum::<u64>();
        let mut over = total.saturating_sub(limit);
        let mut to = None;
        for (run, size) in runs.iter().zip(sizes) {
            if size > over {
                break;
            }
            over -= size;
            to = Some(run.run.last_offset.next());
        }
        Ok(to)
    }

    /// Bytes of `run`'s frames, from its entries.
    fn run_bytes(&self, run: &SealedRun, load: &dyn RunLoader) -> Result<u64> {
        let mut bytes = 0;
        let mut offset = run.run.first_offset;
        while offset <= run.run.last_offset {
            let entries = load.load_run(run, offset)?;
            let Some(last) = entries.last() else { break };
            bytes += entries
                .iter()
                .map(|e| u64::from(e.frame_bytes))
                .sum::<u64>();
            offset = last.last_offset.next();
        }
        Ok(bytes)
    }

    /// Marks its topic deleted: retention may delete every batch of it.
    pub(crate) fn set_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether none of its batches up to segment `id` is read any more: its topic was deleted,
    /// or its start was moved past them.
    pub(crate) fn unread_through(&self, id: SegmentId) -> bool {
        self.deleted.load(Ordering::Acquire)
            || self
                .last_offset_through(id)
                .is_none_or(|last| last < self.offset_start())
    }

    /// One past the last readable offset.
    pub fn offset_acked(&self) -> Offset {
        Offset(self.offset_acked.load(Ordering::Acquire))
    }

    /// Entries from the batch holding `offset` on, up to `frame_bytes_max` bytes of frames
    /// (at least one entry), limited to offsets below `visible`.
    pub(crate) fn entries_from(
        &self,
        offset: Offset,
        frame_bytes_max: usize,
        visible: Offset,
        load: &dyn RunLoader,
    ) -> Result<Vec<BatchEntry>> {
        let limit = Limit {
            visible,
            before: None,
        };
        self.entries_within(offset, frame_bytes_max, limit, load)
    }

    /// [`Partition::entries_from`], also stopping at the first batch at or after
    /// `limit.before` in the log (none if the batch holding `offset` is there).
    pub(crate) fn entries_within(
        &self,
        offset: Offset,
        frame_bytes_max: usize,
        limit: Limit,
        load: &dyn RunLoader,
    ) -> Result<Vec<BatchEntry>> {
        let mut out = Vec::new();
        let mut offset = offset;
        loop {
            let sealed = {
                let index = self.index.read().expect("index lock");
                let i = index.sealed.partition_point(|r| r.run.last_offset < offset);
                match index.sealed.get(i) {
                    Some(run) => *run,
                    None => {
                        let start = index
                            .active
                            .partition_point(|(e, _)| e.last_offset < offset);
                        let active = index.active.range(start..).map(|(e, _)| e);
                        take_entries(&mut out, active, frame_bytes_max, limit);
                        return Ok(out);
                    }
                }
            };
            let entries = match load.load_run(&sealed, offset) {
                Ok(entries) => entries,
                // A rewrite replaced the run (and its index file) meanwhile: again, with the
                // new one.
                Err(_) if self.run_replaced(&sealed) => continue,
                Err(e) => return Err(e),
            };
            let start = entries.partition_point(|e| e.last_offset < offset);
            if !take_entries(&mut out, entries[start..].iter(), frame_bytes_max, limit) {
                return Ok(out);
            }
            // The next chunk of this run, or the next run.
            offset = entries
                .last()
                .map_or(sealed.run.last_offset, |e| e.last_offset)
                .next();
        }
    }

    /// The first batch whose records may have a timestamp at or after `timestamp`.
    pub(crate) fn entry_for_timestamp(
        &self,
        timestamp: i64,
        visible: Offset,
        load: &dyn RunLoader,
    ) -> Result<Option<BatchEntry>> {
        let sealed = {
            let index = self.index.read().expect("index lock");
            let i = index.sealed.partition_point(|r| r.running_max < timestamp);
            match index.sealed.get(i) {
                Some(run) => *run,
                None => {
                    let i = index.active.partition_point(|(_, m)| *m < timestamp);
                    return Ok(index
                        .active
                        .get(i)
                        .map(|(e, _)| *e)
                        .filter(|e| e.base_offset < visible));
                }
            }
        };
        // Every earlier run's timestamps are below `timestamp`, so the first batch of this run
        // reaching it is the answer.
        let mut offset = sealed.run.first_offset;
        while offset <= sealed.run.last_offset {
            let entries = match load.load_run(&sealed, offset) {
                Ok(entries) => entries,
                // A rewrite replaced the run meanwhile: again, with the new one.
                Err(_) if self.run_replaced(&sealed) => {
                    return self.entry_for_timestamp(timestamp, visible, load);
                }
                Err(e) => return Err(e),
            };
            if let Some(e) = entries.iter().find(|e| e.max_timestamp >= timestamp) {
                return Ok(Some(*e).filter(|e| e.base_offset < visible));
            }
            offset = entries
                .last()
                .map_or(sealed.run.last_offset, |e| e.last_offset)
                .next();
        }
        Ok(None)
    }

    /// Batches held in memory (not yet replaced by a sealed run), for tests and metrics.
    pub fn entries_in_memory(&self) -> usize {
        self.index.read().expect("index lock").active.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;

    use std::sync::Arc;

    use super::*;
    use crate::error::Result;

    fn no_runs(_: &SealedRun, _: Offset) -> Result<Arc<[BatchEntry]>> {
        panic!("no sealed runs in this test")
    }

    /// Batch `i`: one record at offset `i`, 64 bytes, 100 to a segment.
    fn entry(i: u64) -> BatchEntry {
        BatchEntry {
            base_offset: Offset(i),
            last_offset: Offset(i),
            max_timestamp: i as i64,
            segment: SegmentId(i / 100),
            pos: i % 100 * 64,
            frame_bytes: 64,
        }
    }

    /// The run of segment `segment`'s batches (see [`entry`]), its byte count not recorded.
    fn run_of(segment: u64) -> IndexRun {
        IndexRun {
            topic_id: 1,
            partition: 0,
            first_offset: Offset(segment * 100),
            last_offset: Offset(segment * 100 + 99),
            max_timestamp: segment as i64 * 100 + 99,
            first_entry: 0,
            entry_count: 100,
            crc: 0,
            bytes: 0,
        }
    }

    #[test]
    fn lookups_by_offset_and_time() {
        let p = Partition::new(1, 0, 0, 0);
        for (i, ts) in [100, 300, 200, 400].into_iter().enumerate() {
            let base = i as u64 * 10;
            p.push(BatchEntry {
                base_offset: Offset(base),
                last_offset: Offset(base + 9),
                max_timestamp: ts,
                segment: SegmentId(0),
                pos: i as u64 * 100,
                frame_bytes: 100,
            });
        }
        p.offset_acked.store(40, Ordering::Release);
        let from = |o, max| {
            p.entries_from(Offset(o), max, Offset(40), &no_runs)
                .unwrap()
                .iter()
                .map(|e| e.base_offset.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(from(0, 1), vec![0]);
        assert_eq!(from(15, 250), vec![10, 20]);
        assert_eq!(from(39, 10_000), vec![30]);
        assert_eq!(from(40, 10_000), Vec::<u64>::new());
        let at = |ts| {
            p.entry_for_timestamp(ts, Offset(40), &no_runs)
                .unwrap()
                .map(|e| e.base_offset.0)
        };
        assert_eq!(at(250), Some(10));
        assert_eq!(at(50), Some(0));
        assert_eq!(at(401), None);
        assert_eq!(p.offset_earliest(), Offset(0));
    }

    /// Two partitions interleaved over segments 0 and 1; segment 0's index file is written and
    /// its entries replaced by runs, read back through the file.
    #[test]
    fn sealed_runs_replace_entries_and_read_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.idx");
        let parts = [Partition::new(1, 0, 0, 0), Partition::new(1, 1, 0, 1)];
        let mut frames = Vec::new();
        for i in 0..20u64 {
            let (segment, p) = (SegmentId(i / 10), (i % 2) as usize);
            let base = i / 2 * 3;
            let e = BatchEntry {
                base_offset: Offset(base),
                last_offset: Offset(base + 2),
                max_timestamp: 1000 + i as i64 * if p == 0 { 1 } else { -1 },
                segment,
                pos: (i % 10) * 64,
                frame_bytes: 64,
            };
            parts[p].push(e);
            if segment == SegmentId(0) {
                frames.push((TopicPartition::new(1, p as u32), e));
            }
        }
        for p in &parts {
            p.offset_acked.store(30, Ordering::Release);
        }
        let index = SegmentIndex {
            segment: SegmentId(0),
            generation: 0,
            data_end: 640,
            frames,
        };
        let (bytes, directory) = index.encode();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(IndexDirectory::read(&path).unwrap(), directory);
        for run in &directory.runs {
            let p = &parts[run.partition as usize];
            assert!(p.seal_run(SegmentId(0), *run, directory.entries_pos(run)));
            assert!(
                !p.seal_run(SegmentId(0), *run, directory.entries_pos(run)),
                "sealing twice changes nothing"
            );
            assert_eq!(p.entries_in_memory(), 5);
        }
        let loads = std::cell::Cell::new(0);
        let load = |run: &SealedRun, offset: Offset| -> Result<Arc<[BatchEntry]>> {
            loads.set(loads.get() + 1);
            let starts = run_chunk_starts(&path, run)?;
            Ok(read_chunk(&path, run, &starts, offset)?.1.into())
        };
        for (pi, p) in parts.iter().enumerate() {
            // Offsets 0..15 are in the sealed segment, 15..30 in memory.
            let got: Vec<_> = p
                .entries_from(Offset(4), 4 * 64, Offset(30), &load)
                .unwrap();
            assert_eq!(got.len(), 4, "the rest of segment 0");
            assert_eq!(got[0].base_offset, Offset(3));
            assert_eq!(got[0].pos, 128 + 64 * pi as u64);
            assert_eq!(got[0].segment, SegmentId(0));
            let got = p
                .entries_from(Offset(15), 10_000, Offset(30), &load)
                .unwrap();
            assert_eq!((got.len(), got[0].segment), (5, SegmentId(1)));
            let got = p
                .entries_from(Offset(0), 10_000, Offset(30), &load)
                .unwrap();
            let bases: Vec<u64> = got.iter().map(|e| e.base_offset.0).collect();
            assert_eq!(
                bases,
                (0..10).map(|i| i * 3).collect::<Vec<_>>(),
                "across segments"
            );
            assert_eq!(p.offset_earliest(), Offset(0));
        }
        // Partition 0's timestamps rise, partition 1's fall: the running maximum finds the
        // first batch that may hold a later record.
        let at = |p: &Partition, ts| {
            p.entry_for_timestamp(ts, Offset(30), &load)
                .unwrap()
                .map(|e| e.base_offset.0)
        };
        assert_eq!(at(&parts[0], 1004), Some(6));
        assert_eq!(at(&parts[0], 1018), Some(27));
        assert_eq!(at(&parts[0], 1019), None);
        assert_eq!(at(&parts[1], 999), Some(0));
        assert_eq!(at(&parts[1], 1000), None);
        assert!(loads.get() > 0);
        // Damage in a run's entries is caught when they are loaded.
        let mut damaged = bytes.clone();
        let last = bytes.len() - 10;
        damaged[last] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            parts[1].entries_from(Offset(0), 10_000, Offset(30), &load),
            Err(Error::Corrupt { .. })
        ));
        // Retention forgets whole segments.
        parts[0].forget_below(SegmentId(1));
        assert_eq!(parts[0].offset_earliest(), Offset(15));
    }

    /// Retention by size counts each sealed run's bytes (from the index file's directory, or
    /// summed from its entries where an older file has none) and the batches in memory, and
    /// lets the oldest runs go while what remains is at least the limit.
    #[test]
    fn retention_by_size_counts_runs_and_batches_in_memory() {
        for known in [true, false] {
            let p = Partition::new(1, 0, 0, 0);
            for i in 0..450 {
                p.push(entry(i));
            }
            let loads = std::cell::Cell::new(0);
            let load = |run: &SealedRun, _: Offset| -> Result<Arc<[BatchEntry]>> {
                loads.set(loads.get() + 1);
                Ok((run.run.first_offset.0..=run.run.last_offset.0)
                    .map(entry)
                    .collect())
            };
            for segment in 0..4u64 {
                let run = IndexRun {
                    bytes: if known { 6400 } else { 0 },
                    ..run_of(segment)
                };
                assert!(p.seal_run(SegmentId(segment), run, 0));
            }
            // Four runs of 6,400 bytes and 50 batches of 64 in memory: 28,800 bytes.
            let cut = |limit| p.retained_bytes(limit, &load).unwrap().map(|o| o.0);
            assert_eq!(cut(28_800), None);
            assert_eq!(cut(22_400), Some(100));
            assert_eq!(cut(22_401), None);
            assert_eq!(cut(9_600), Some(300));
            assert_eq!(cut(0), Some(400), "batches in memory always stay");
            // Runs below the start no longer count.
            p.offset_acked.store(450, Ordering::Release);
            assert!(p.trim_to(Offset(100)));
            assert_eq!(cut(16_000), Some(200));
            assert_eq!(cut(16_001), None);
            assert_eq!(
                loads.get() > 0,
                !known,
                "entries summed only without a count"
            );
        }
    }

    /// Segments sealed in turn while newer batches keep arriving: each seal takes exactly its
    /// segment's batches from the front of the in-memory ones (which wrap around their ring),
    /// the rest stay in order, and a seal that does not match leaves everything in place.
    #[test]
    fn sealing_in_turn_keeps_newer_entries_in_order() {
        let p = Partition::new(1, 0, 0, 0);
        for i in 0..150 {
            p.push(entry(i));
        }
        for segment in 0..8u64 {
            // Batches of the next segment but one arrive before this one is sealed.
            for i in (segment + 1) * 100 + 50..(segment + 2) * 100 + 50 {
                p.push(entry(i));
            }
            let wrong = IndexRun {
                last_offset: Offset(segment * 100 + 98),
                ..run_of(segment)
            };
            let id = SegmentId(segment);
            assert!(!p.seal_run(id, wrong, 0), "a run ending early");
            assert!(
                !p.seal_run(id.next(), run_of(segment + 1), 0),
                "not the oldest"
            );
            assert_eq!(p.entries_in_memory(), 250);
            assert!(p.seal_run(id, run_of(segment), 0));
            assert_eq!(p.entries_in_memory(), 150);
            let index = p.index.read().unwrap();
            let bases: Vec<u64> = index.active.iter().map(|(e, _)| e.base_offset.0).collect();
            let first = (segment + 1) * 100;
            assert_eq!(bases, (first..first + 150).collect::<Vec<_>>());
            assert_eq!(index.sealed.len() as u64, segment + 1);
        }
    }
}
