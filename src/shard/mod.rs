//! A shard: one writer thread that owns a sequential log of segment files, and the state it
//! shares with producers and readers.
//!
//! Producers hand records over through one bounded SPSC ring per (producer, shard)
//! ([`AckRing`] is the ring's acknowledgement side). The writer (writer.rs) drains every ring,
//! stamps offsets, frames batches into an aligned commit buffer, writes and flushes it, and then
//! advances each ring's `seq_acked` and each partition's `offset_acked`. Nothing here is shared
//! between shards.

pub(crate) mod checkpoint;
pub(crate) mod extents;
pub(crate) mod files;
pub(crate) mod framing;
pub(crate) mod plan;
pub(crate) mod prepare;
pub(crate) mod producers;
pub(crate) mod read;
pub(crate) mod read_cache;
pub(crate) mod readahead;
pub(crate) mod rebuild;
pub mod recovery;
pub(crate) mod retention;
pub(crate) mod rewrite;
pub(crate) mod ring;
pub(crate) mod slots;
pub(crate) mod stats;
pub(crate) mod tail_memory;
pub(crate) mod writer;

pub(crate) use files::SegmentFile;
pub(crate) use read_cache::ReadCache;
pub(crate) use ring::{AckRing, NewRing, Pending, WaitList, Waiter};
pub(crate) use stats::WriterCounters;

use crate::segment::{Offset, SegmentId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::index::{
    BatchEntry, IndexLog, IndexRun, Partition, SealedRun, SealedRuns, TopicPartition, Undistributed,
};
use crate::segment::LogPos;

/// Puts a published entry into its partition's index and moves the partition's watermark past
/// it.
fn deliver(partition: &Partition, entry: BatchEntry) {
    partition.push(entry);
    partition
        .offset_acked
        .store(entry.last_offset.next().0, Ordering::Release);
}

/// How long after a read near the newest data the writer keeps filling the tail cache.
pub(crate) const TAIL_INTEREST: Duration = Duration::from_secs(2);

/// What a shard shares with producers, readers and the `Log`.
pub(crate) struct ShardShared {
    pub id: u32,
    pub counters: CachePadded<WriterCounters>,
    pub dir: PathBuf,
    /// Set by the writer just before it parks; producers unpark it when set.
    pub sleeping: CachePadded<AtomicBool>,
    pub thread: OnceLock<Thread>,
    pub new_rings: Mutex<Vec<NewRing>>,
    /// Every partition this shard owns, by slot; append-only. Records name their partition by
    /// slot, so producers and the writer never touch a shared reference count per record.
    pub partitions: RwLock<Vec<Arc<Partition>>>,
    /// Index entries published by the writer, on their way to the partitions.
    pub index_log: Mutex<IndexLog>,
    /// Consumers waiting for new data in this shard (long-poll).
    pub data_waiters: WaitList,
    /// The newest commits, for readers.
    pub read_cache: RwLock<ReadCache>,
    tail_cache_bytes: usize,
    /// When a reader last read within `tail_cache_bytes` of the newest data (nanoseconds after
    /// `epoch`, plus 1; 0 for never): see [`ShardShared::tail_wanted`].
    tail_read_at: AtomicU64,
    epoch: Instant,
    /// Entries of sealed runs, loaded from index files.
    pub sealed_runs: SealedRuns,
    /// Where each partition's frames lie in the rewritten segments being read.
    pub extents: extents::ExtentTables,
    /// Held while entries are moved into partitions, so they arrive in order.
    distributing: Mutex<Undistributed>,
    pub new_rings_flag: AtomicBool,
    /// Latched at the first I/O failure, or `Closed` when the writer exits.
    pub failed: Arc<OnceLock<Error>>,
    pub shutdown: AtomicBool,
    /// Set while the shard's segment files leave no room under its disk cap but the one
    /// segment reserved for committed offsets: producers' records are refused meanwhile.
    pub log_full: AtomicBool,
    /// Segment files by id, for readers.
    pub segments: RwLock<BTreeMap<SegmentId, Arc<SegmentFile>>>,
    /// The end of the last acknowledged (published) commit: bytes below it never change.
    /// Written by the writer at each publish (recovery before it starts).
    pub acked_end: Mutex<LogPos>,
    /// The id of the internal offsets topic (`u32::MAX` while the log has none). Its records
    /// are compacted, not aged: their timestamps do not count toward a segment's age, and
    /// retention keeps a segment holding live ones through the protection floors.
    pub compacted_topic: AtomicU32,
    /// Sealed segments whose index file is written, with their newest record timestamp:
    /// the candidates for retention.
    sealed: Mutex<BTreeMap<SegmentId, i64>>,
    /// Offsets retention must keep, by partition: what consumer groups have not committed, and
    /// live commit records (set by the log for every shard). `None` until the log has loaded
    /// the committed offsets and set them: until then retention deletes nothing.
    protected: Mutex<Option<Arc<HashMap<TopicPartition, Offset>>>>,
    /// Told which partition stopped retention (so the offsets store can compact itself).
    on_retention_blocked: OnceLock<Arc<dyn Fn(TopicPartition) + Send + Sync>>,
    /// Idempotent producers' last batches per partition, as recovery read them from the
    /// segments it scanned; the writer takes each partition's when it first sees it.
    pub recovered_producers: Mutex<HashMap<TopicPartition, Box<framing::Producers>>>,
    /// Odd while a rewritten segment replaces its original in memory; moves at each
    /// replacement. Readers holding positions from before a move read again (see
    /// [`rewrite`]).
    pub layout: AtomicU64,
    /// Sealed segments waiting for the rewrite thread.
    pub rewrites: rewrite::RewriteQueue,
    /// Held while segment files are replaced (a rewrite) or deleted (retention).
    pub segment_files: Mutex<()>,
    /// Held while `start-offsets.json` is read and written (retention, a request to delete
    /// records).
    pub start_offsets: Mutex<()>,
}

impl ShardShared {
    pub fn new(
        id: u32,
        dir: &Path,
        tail_cache_bytes: usize,
        index_cache_bytes: usize,
    ) -> ShardShared {
        ShardShared {
            id,
            counters: CachePadded::default(),
            dir: dir.to_owned(),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            thread: OnceLock::new(),
            new_rings: Mutex::new(Vec::new()),
            new_rings_flag: AtomicBool::new(false),
            partitions: RwLock::new(Vec::new()),
            index_log: Mutex::new(IndexLog::default()),
            data_waiters: WaitList::default(),
            read_cache: RwLock::new(ReadCache::new(tail_cache_bytes)),
            tail_cache_bytes,
            tail_read_at: AtomicU64::new(0),
            epoch: Instant::now(),
            sealed_runs: SealedRuns::new(dir, index_cache_bytes),
            extents: extents::ExtentTables::default(),
            layout: AtomicU64::new(0),
            rewrites: rewrite::RewriteQueue::default(),
            segment_files: Mutex::new(()),
            start_offsets: Mutex::new(()),
            distributing: Mutex::new(Undistributed::default()),
            failed: Arc::default(),
            shutdown: AtomicBool::new(false),
            log_full: AtomicBool::new(false),
            segments: RwLock::new(BTreeMap::new()),
            compacted_topic: AtomicU32::new(u32::MAX),
            sealed: Mutex::new(BTreeMap::new()),
            acked_end: Mutex::new(LogPos::default()),
            protected: Mutex::default(),
            on_retention_blocked: OnceLock::new(),
            recovered_producers: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes the writer if it is parked. Call after pushing to a ring.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// Hands a new producer's rings to the writer.
    pub fn register(&self, ring: NewRing) {
        self.new_rings.lock().expect("rings lock").push(ring);
        self.new_rings_flag.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// The error that stopped this shard, if it has stopped.
    pub fn stopped(&self) -> Option<Error> {
        self.failed.get().cloned()
    }

    /// Notes a read whose newest frame starts at `newest`, or (`None`) a read that found
    /// nothing new: a reader at or near the newest data, which the tail cache is for.
    pub fn note_read(&self, newest: Option<LogPos>) {
        let near = newest.is_none_or(|at| {
            let end = *self.acked_end.lock().expect("acked end lock");
            at.segment == end.segment && at.pos + self.tail_cache_bytes as u64 >= end.pos
        });
        if near {
            let at = self.epoch.elapsed().as_nanos() as u64 + 1;
            self.tail_read_at.store(at, Ordering::Relaxed);
        }
    }

    /// Whether the writer should put its commits in the tail cache: a reader read near the
    /// newest data within the last [`TAIL_INTEREST`]. Copying every commit costs the writer a
    /// memcpy of everything it writes; with no reader near
    /// the tail, no reader would find those copies before they are evicted. A reader that comes
    /// to the tail reads its first frames from disk and the commits after it from memory.
    pub fn tail_wanted(&self, now: Instant) -> bool {
        let at = self.tail_read_at.load(Ordering::Relaxed);
        at != 0
            && now.saturating_duration_since(self.epoch).as_nanos() as u64
                <= at - 1 + TAIL_INTEREST.as_nanos() as u64
    }

    /// Moves the entries the writer published into their partitions' indexes and watermarks.
    /// Readers call it before they look at a partition.
    pub fn catch_up(&self) {
        let mut batch = self.distributing.lock().expect("distribute lock");
        self.distribute(&mut batch);
    }

    fn distribute(&self, batch: &mut Undistributed) {
        self.index_log
            .lock()
            .expect("index log lock")
            .take_undistributed(batch);
        if batch.is_empty() {
            return;
        }
        let table = self.partitions.read().expect("partitions lock");
        for (slot, entry) in batch.iter() {
            deliver(&table[slot as usize], entry);
        }
        batch.clear();
    }

    /// Called once `segment`'s index file is durable: each partition's entries of that segment
    /// give way to its run in the file (`runs`, with each run's entries' byte position and its
    /// chunk directory), so the memory they took is freed. With `rewrite`, the segment is then
    /// queued for its rewrite. It counts as sealed ([`ShardShared::seals_pending`]) only after
    /// both, so whoever waits for seals and then for rewrites misses neither.
    pub fn index_sealed(
        &self,
        segment: SegmentId,
        runs: Vec<(IndexRun, u64, Vec<Offset>)>,
        rewrite: bool,
    ) {
        let newest = self.newest_aged(runs.iter().map(|(r, _, _)| (r.topic_id, r.max_timestamp)));
        let mut batch = self.distributing.lock().expect("distribute lock");
        // Newer segments' entries stay for readers to distribute when they need them: with
        // nobody reading, pushing them into 10,000 partitions here took a third of the page
        // faults of a produce run.
        self.index_log
            .lock()
            .expect("index log lock")
            .take_undistributed_through(segment, &mut batch);
        let table = self.partitions.read().expect("partitions lock");
        let by_name: HashMap<TopicPartition, &Arc<Partition>> =
            table.iter().map(|p| (p.id(), p)).collect();
        for (slot, entry) in batch.iter().take_while(|(_, e)| e.segment < segment) {
            deliver(&table[slot as usize], entry);
        }
        // The sealed segment's entries not yet in their partitions need not go there first
        // (10,000 partitions: millions of pushes, each a cache miss, undone at once): the runs
        // replace them.
        let mut kept = std::collections::HashSet::new();
        for (run, entries_pos, starts) in runs {
            // Readers find the run's chunk directory cached: they need not read it back.
            let sealed = SealedRun::new(segment, run, entries_pos);
            self.sealed_runs.insert_starts(&sealed, starts.into());
            if let Some(p) = by_name.get(&run.id()) {
                if p.seal_run(segment, run, entries_pos) {
                    // The run is in place: the watermark moves past it without a visit to each
                    // of its entries (millions in a segment of one-record batches).
                    p.offset_acked
                        .fetch_max(run.last_offset.next().0, Ordering::Release);
                } else {
                    // Cannot happen unless the writer and the file disagree; the partition
                    // then keeps its entries in memory (still correct, just not freed).
                    kept.insert(p.slot);
                }
            }
        }
        if !kept.is_empty() {
            for (slot, entry) in batch.iter().skip_while(|(_, e)| e.segment < segment) {
                if kept.contains(&slot) {
                    deliver(&table[slot as usize], entry);
                }
            }
        }
        batch.clear();
        drop((table, batch));
        if rewrite {
            self.rewrites.push(segment);
        }
        self.note_sealed_at(segment, newest);
    }

    /// The layout counter as a reader starts (see [`ShardShared::layout`]).
    pub fn layout_seen(&self) -> u64 {
        self.layout.load(Ordering::Acquire)
    }

    /// Whether positions a reader found after seeing `seen` may be of a layout replaced since.
    pub fn layout_moved(&self, seen: u64) -> bool {
        seen % 2 == 1 || self.layout.load(Ordering::Acquire) != seen
    }

    /// Puts rewritten segment `id` (`file`, with its index file's `directory` and each run's
    /// chunk directory) in place of the segment for readers: the file, the read cache (spans
    /// of the old file dropped) and each partition's run. The caller made the layout counter
    /// odd before the new files took the old ones' names; this makes it even again.
    pub fn replace_segment(
        &self,
        id: SegmentId,
        file: SegmentFile,
        directory: &crate::index::IndexDirectory,
        starts: Vec<Vec<Offset>>,
    ) {
        let generation = file.generation;
        debug_assert!(self.layout.load(Ordering::Acquire) % 2 == 1);
        self.segments
            .write()
            .expect("segments lock")
            .insert(id, Arc::new(file));
        self.read_cache
            .write()
            .expect("read cache lock")
            .retire(id, generation);
        self.catch_up();
        let table = self.partitions.read().expect("partitions lock");
        let by_name: HashMap<TopicPartition, &Arc<Partition>> =
            table.iter().map(|p| (p.id(), p)).collect();
        for (run, starts) in directory.runs.iter().zip(starts) {
            let entries_pos = directory.entries_pos(run);
            let sealed = SealedRun::new(id, *run, entries_pos);
            self.sealed_runs.insert_starts(&sealed, starts.into());
            if let Some(p) = by_name.get(&run.id()) {
                p.replace_run(id, *run, entries_pos);
            }
        }
        self.layout.fetch_add(1, Ordering::AcqRel);
    }

    /// Records that `segment` is sealed with an index file holding `runs`.
    pub fn note_sealed<'a>(&self, segment: SegmentId, runs: impl Iterator<Item = &'a IndexRun>) {
        let newest = self.newest_aged(runs.map(|r| (r.topic_id, r.max_timestamp)));
        self.note_sealed_at(segment, newest);
    }

    /// The newest of `stamps` (topic id, timestamp) that retention by age goes by: the
    /// offsets topic's are left out (`i64::MIN` if none is left).
    pub fn newest_aged(&self, stamps: impl Iterator<Item = (u32, i64)>) -> i64 {
        let compacted = self.compacted_topic.load(Ordering::Relaxed);
        stamps
            .filter(|&(topic, _)| topic != compacted)
            .map(|(_, timestamp)| timestamp)
            .max()
            .unwrap_or(i64::MIN)
    }

    /// Records that `segment` is sealed, its newest record stamped `newest` (for retention by
    /// age).
    pub fn note_sealed_at(&self, segment: SegmentId, newest: i64) {
        self.sealed
            .lock()
            .expect("sealed lock")
            .insert(segment, newest);
    }

    /// Recomputes `log_full` against the disk cap: full when one more segment than the active
    /// one would leave no room for the segment reserved for committed offsets (so groups can
    /// still commit, which is what lets retention free space).
    pub fn update_full(&self, disk_bytes_max: Option<u64>, segment_bytes: u64) {
        let Some(cap) = disk_bytes_max else {
            return;
        };
        let held = self.segments.read().expect("segments lock").len() as u64;
        self.log_full
            .store((held + 2) * segment_bytes > cap, Ordering::Release);
    }

    /// The length of segment `id`'s data: `segment_bytes`, or less for a rewritten segment.
    pub fn segment_len(&self, id: SegmentId, segment_bytes: u64) -> u64 {
        let segments = self.segments.read().expect("segments lock");
        segments
            .get(&id)
            .and_then(|s| s.data_end)
            .unwrap_or(segment_bytes)
    }

    /// Where each partition's frames lie in segment `id`, if it is a rewritten one (and its
    /// table is not too large to keep: see [`extents::EXTENTS_MAX`]). None too if its index
    /// file cannot be read (retention deleted the segment meanwhile): readers then scan the
    /// segment whole, which checks every frame it hands over.
    pub fn extents(&self, id: SegmentId) -> Option<Arc<extents::Extents>> {
        let generation = {
            let segments = self.segments.read().expect("segments lock");
            match segments.get(&id) {
                Some(s) if s.data_end.is_some() => s.generation,
                _ => return None,
            }
        };
        self.extents.get(&self.dir, id, generation).ok().flatten()
    }

    /// How far segment `id` may be read and cached: bytes below this never change (the whole
    /// file for an older segment, a rewritten one's data, the last published commit's end
    /// for the newest).
    pub fn readable_end(&self, id: SegmentId) -> u64 {
        let end = *self.acked_end.lock().expect("acked end lock");
        match id.cmp(&end.segment) {
            // A rewritten segment's file ends with zeros through the next block: a read of a
            // window past its data read those (and counted them, and cached them).
            std::cmp::Ordering::Less => {
                let segments = self.segments.read().expect("segments lock");
                (segments.get(&id).and_then(|s| s.data_end)).unwrap_or(u64::MAX)
            }
            std::cmp::Ordering::Equal => end.pos,
            std::cmp::Ordering::Greater => 0,
        }
    }

    /// Replaces the offsets retention must keep.
    pub fn set_protected(&self, floors: Arc<HashMap<TopicPartition, Offset>>) {
        *self.protected.lock().expect("protected lock") = Some(floors);
    }

    pub fn set_on_retention_blocked(&self, hook: Arc<dyn Fn(TopicPartition) + Send + Sync>) {
        let _ = self.on_retention_blocked.set(hook);
    }

    /// Whether the offsets retention must keep are known yet (see `protected`).
    pub fn protection_set(&self) -> bool {
        self.protected.lock().expect("protected lock").is_some()
    }

    /// The partition that keeps segment `id` (and every later one) from being deleted: one
    /// with a batch in segments up to `id` at or after its protected offset. The hook is told
    /// about it.
    pub fn retention_blocker(&self, id: SegmentId) -> Option<TopicPartition> {
        let floors = self.protected.lock().expect("protected lock").clone();
        let floors = floors.expect("retention runs once protection is set");
        if floors.is_empty() {
            return None;
        }
        self.catch_up();
        let table = self.partitions.read().expect("partitions lock");
        let blocker = table.iter().find_map(|p| {
            let floor = floors.get(&p.id())?;
            let last = p.last_offset_through(id)?;
            (last >= *floor).then_some(p.id())
        })?;
        if let Some(hook) = self.on_retention_blocked.get() {
            hook(blocker);
        }
        Some(blocker)
    }

    /// Whether a segment before the newest has no index file yet (its seal is under way).
    pub fn seals_pending(&self) -> bool {
        let ids: Vec<SegmentId> = (self.segments.read().expect("segments lock"))
            .keys()
            .copied()
            .collect();
        let Some((_, older)) = ids.split_last() else {
            return false;
        };
        let sealed = self.sealed.lock().expect("sealed lock");
        older.iter().any(|id| !sealed.contains_key(id))
    }

    /// Sealed segments with index files, oldest first, with their newest record timestamp.
    pub fn sealed_segments(&self) -> Vec<(SegmentId, i64)> {
        let sealed = self.sealed.lock().expect("sealed lock");
        sealed.iter().map(|(&id, &ts)| (id, ts)).collect()
    }

    /// Drops every batch of segments below `keep_from` from the partitions' indexes and the
    /// caches; returns each partition's (topic id, partition, earliest offset) afterwards.
    pub fn forget_segments_below(&self, keep_from: SegmentId) -> Vec<(u32, u32, Offset)> {
        let mut batch = self.distributing.lock().expect("distribute lock");
        self.distribute(&mut batch);
        let table = self.partitions.read().expect("partitions lock");
        let earliest = table
            .iter()
            .map(|p| {
                p.forget_below(keep_from);
                // Where its stored batches start: recovery checks them dense from there.
                (p.topic_id, p.partition, p.offset_stored())
            })
            .collect();
        self.sealed_runs.forget_below(keep_from);
        let mut sealed = self.sealed.lock().expect("sealed lock");
        *sealed = sealed.split_off(&keep_from);
        earliest
    }

    /// Whether any of its partitions' topics has a retention of its own or any partition's
    /// start was moved (then retention also deletes segments nothing reads any more).
    pub fn starts_move(&self) -> bool {
        let table = self.partitions.read().expect("partitions lock");
        (table.iter()).any(|p| {
            p.retention_ms().is_some()
                || p.retention_bytes().is_some()
                || p.offset_start() > Offset(0)
        })
    }

    /// Whether nothing in segments up to `id` is read any more: every partition's batches
    /// there are below its start or of a deleted topic. The offsets topic's are left to
    /// [`ShardShared::retention_blocker`], which keeps the live commits.
    pub fn unread_through(&self, id: SegmentId) -> bool {
        self.catch_up();
        let compacted = self.compacted_topic.load(Ordering::Relaxed);
        let table = self.partitions.read().expect("partitions lock");
        (table.iter())
            .filter(|p| p.topic_id != compacted)
            .all(|p| p.unread_through(id))
    }

    /// Each partition whose start was moved past its first stored batch: (topic id, partition,
    /// start).
    pub fn moved_starts(&self) -> Vec<(u32, u32, Offset)> {
        let table = self.partitions.read().expect("partitions lock");
        (table.iter())
            .filter(|p| p.offset_start() > Offset(0))
            .map(|p| (p.topic_id, p.partition, p.offset_start()))
            .collect()
    }

    /// The offsets retention must keep, per partition, once they are known.
    pub fn protected_floors(&self) -> Option<Arc<HashMap<TopicPartition, Offset>>> {
        self.protected.lock().expect("protected lock").clone()
    }

    /// Creates a partition owned by this shard, in the next slot of its table.
    pub fn new_partition(&self, topic_id: u32, partition: u32) -> Arc<Partition> {
        let mut table = self.partitions.write().expect("partitions lock");
        let p = Arc::new(Partition::new(
            topic_id,
            partition,
            self.id,
            table.len() as u32,
        ));
        table.push(Arc::clone(&p));
        p
    }

    /// The path of segment `id`.
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        crate::layout::segment_path(&self.dir, id)
    }
}
