//! Read-ahead for consumers catching up from disk: one thread per shard reads the next windows
//! of the segment a consumer is reading, through the shard's I/O backend (io_uring: O_DIRECT
//! reads, several in flight), into the shard's read cache, while the consumer decodes what it
//! has. Without it a consumer alternates between decoding and waiting for its next read.
//!
//! Windows lie on a fixed grid of [`WINDOW_BYTES`] within a segment and are read only as far
//! as the segment is published (bytes below that never change, so caching them is safe). A
//! reader that misses the cache on a read under way waits for it instead of reading it again.
//! In a rewritten segment a reader asks instead for the ranges holding its partitions'
//! stretches ([`Readahead::prefetch`], `shard::extents`).
//!
//! Readers scanning the log (consumers of many partitions) share what is read: a scanner that
//! falls behind another by more than the read cache holds reads every window again on its own.
//! The members of a group draining a backlog each own a share of the partitions of the same
//! log, so each scans all of it; a member held up (a commit, the host taking its core) fell
//! out of the others' windows and the group read the log two or three times. So a member
//! about to ask for windows the cache could not hold together with those of another member
//! of its group behind it, still reading, waits for that one (see [`Readahead::advise`]). In
//! rewritten segments members read apart, each its own stretches, and count as reading
//! ([`Readahead::touch`]), so that they scan the log after them together again.
//! Consumers of different groups do not wait for each other: a slow one would hold a fast one
//! back.

use crate::segment::SegmentId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::TAIL_CACHE_BYTES_DEFAULT;
use crate::error::{Error, Result};
use crate::io::{self, AlignedBuf, Completion, IoBackend};
use crate::segment::LogPos;
use crate::segment::format::BLOCK_BYTES;
use crate::shard::rewrite::REWRITE_YIELDS_ABOVE_BYTES_PER_S;
use crate::shard::stats::WriterLoad;
use crate::shard::{ShardShared, WriterCounters};

/// The grid of reads from disk: a consumer's read and each read-ahead cover at most one
/// window (a frame crossing a window's end extends its read).
pub(crate) const WINDOW_BYTES: u64 = 4 << 20;
/// Windows read ahead of the one a consumer is in, at most: as many as the read cache holds
/// twice over (see [`windows_ahead`]).
const WINDOWS_AHEAD: u64 = 4;

/// Windows to read ahead with a read cache of `cache_bytes`: windows evicted before the
/// consumer reached them were read for nothing and read again (a 1 MiB cache read the log
/// five times over), so none with a cache smaller than two windows.
fn windows_ahead(cache_bytes: usize) -> u64 {
    (cache_bytes as u64 / (2 * WINDOW_BYTES)).min(WINDOWS_AHEAD)
}

const _: () = assert!(WINDOW_BYTES.is_multiple_of(BLOCK_BYTES as u64));
// Windows read ahead land in the read cache: by default it holds them twice over.
const _: () = assert!(WINDOW_BYTES * WINDOWS_AHEAD * 2 <= TAIL_CACHE_BYTES_DEFAULT as u64);
/// The longest read ahead: a window, or a stretch asked for by [`Readahead::prefetch`].
pub(crate) const READ_BYTES_MAX: u64 = WINDOW_BYTES;
/// Reads in flight at once.
const QUEUE_DEPTH: u32 = 4;
/// While the shard's writer is busy (it appends more than [`REWRITE_YIELDS_ABOVE_BYTES_PER_S`],
/// the rate rewrites yield above), reads ahead are at most this long and one at a time: the
/// device serves them in turn with the writer's commits, and a commit queued behind four 4 MiB
/// reads waited for all of them. The peak scenario over the protocol with a consumer the server
/// does not pace (so read ahead): ack p99 median 2.92 ms with four windows in flight, 1.69 ms
/// with this (docs/TUNING.md).
const BUSY_READ_BYTES: u64 = 512 << 10;
const _: () = assert!(BUSY_READ_BYTES.is_multiple_of(BLOCK_BYTES as u64));
/// How often the read-ahead thread looks at how busy the writer is.
const BUSY_LOOK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Window {
    segment: SegmentId,
    start: u64,
    end: u64,
}

/// A scanner that has not moved for this long no longer holds others back: it stopped, or
/// reads far slower than they do (an application that takes its time over each record).
const SCANNER_ACTIVE: Duration = Duration::from_millis(100);
/// A scanner not seen for this long is forgotten (its consumer closed).
const SCANNER_FORGET: Duration = Duration::from_secs(10);

/// Identifies a scanner (a consumer's scans of the log) across its scans, and the party it
/// reads with (its group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScanTag {
    /// Unique to the scanner; 0: an anonymous scan (one fetch), which neither waits nor is
    /// waited for.
    pub id: u64,
    /// Scanners of the same party (not 0) wait for each other.
    pub party: u64,
}

impl ScanTag {
    /// A scanner not tagged before, of `party` (0: none).
    pub(crate) fn new(party: u64) -> ScanTag {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ScanTag {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            party,
        }
    }
}

/// A scanner as last seen.
#[derive(Debug, Clone, Copy)]
struct Scanner {
    party: u64,
    /// The frame it last read.
    at: LogPos,
    /// When it last read.
    seen: Instant,
    /// The furthest window it asked for.
    asked: LogPos,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Window>,
    /// Queued or being read: (segment, start) → end.
    pending: BTreeMap<LogPos, u64>,
    /// The furthest window an anonymous scan asked for, so readers skip asking again.
    furthest: LogPos,
    /// Scanners, by id.
    scanners: HashMap<u64, Scanner>,
    /// Scanners waiting for one behind them.
    holding: usize,
    shutdown: bool,
}

impl State {
    /// Queues a read of `w` unless one from the same start is pending; returns whether it did.
    fn enqueue(&mut self, w: Window) -> bool {
        let key = LogPos::new(w.segment, w.start);
        if self.pending.contains_key(&key) {
            return false;
        }
        self.pending.insert(key, w.end);
        self.queue.push_back(w);
        true
    }

    /// The next read to start, if any: the queue's first, or while the writer is `busy` its
    /// first [`BUSY_READ_BYTES`], the rest left first in the queue and both pending.
    fn next_read(&mut self, busy: bool) -> Option<Window> {
        let w = self.queue.pop_front()?;
        if !busy || w.end - w.start <= BUSY_READ_BYTES {
            return Some(w);
        }
        let (first, rest) = (
            Window {
                end: w.start + BUSY_READ_BYTES,
                ..w
            },
            Window {
                start: w.start + BUSY_READ_BYTES,
                ..w
            },
        );
        self.pending
            .insert(LogPos::new(w.segment, first.start), first.end);
        self.pending
            .insert(LogPos::new(w.segment, rest.start), rest.end);
        self.queue.push_front(rest);
        Some(first)
    }

    /// Whether a pending read covers `at` (reads are at most [`READ_BYTES_MAX`] long).
    fn pending_at(&self, at: LogPos) -> bool {
        let from = LogPos::new(at.segment, at.pos.saturating_sub(READ_BYTES_MAX));
        (self.pending.range(from..=at)).any(|(_, &end)| end > at.pos)
    }
}

/// See [`Readahead::prefetch_bytes`]: half of `cache_bytes` shared by `readers`, at least
/// one read.
fn prefetch_bytes(cache_bytes: u64, readers: u64) -> u64 {
    let share = cache_bytes / 2 / readers.max(1);
    (share - share % BLOCK_BYTES as u64).max(READ_BYTES_MAX)
}

/// How far the end of the windows a scanner asks for (`ahead` of the one it is in) may lie
/// past the window of a scanner of its party behind it, with a read cache of `cache_bytes`:
/// the cache less two windows (crossing frames and fresh commits land there too). None (no
/// waiting) when that would not leave it a window ahead of the other: with a cache of two or
/// three windows scanners would take turns reading one window each.
fn hold_bytes(cache_bytes: u64, ahead: u64) -> Option<u64> {
    let hold = cache_bytes.saturating_sub(2 * WINDOW_BYTES);
    (hold >= (ahead + 2) * WINDOW_BYTES).then_some(hold)
}

/// Bytes of the log from `from` to `to` (0 if `to` is not after it), each segment before
/// `to`'s as long as `len_of` says (a rewritten segment is shorter than the segment size);
/// once past `cap`, anything more than `cap`.
fn distance(from: LogPos, to: LogPos, len_of: &dyn Fn(SegmentId) -> u64, cap: u64) -> u64 {
    if to <= from {
        return 0;
    }
    if to.segment == from.segment {
        return to.pos - from.pos;
    }
    let mut bytes = len_of(from.segment).saturating_sub(from.pos);
    let mut id = from.segment.next();
    while id < to.segment && bytes <= cap {
        bytes += len_of(id);
        id = id.next();
    }
    bytes + to.pos
}

/// A shard's read-ahead thread, stopped by `shutdown`.
pub(crate) struct Readahead {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Readahead {
    /// Starts the thread of `shard`.
    pub fn start(shard: Arc<ShardShared>, backend: IoBackend) -> Result<Self> {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let thread_state = Arc::clone(&state);
        let dir = shard.dir.clone();
        let thread = std::thread::Builder::new()
            .name(format!("floodgate-read-{}", shard.id))
            .spawn(move || run(&thread_state, &shard, backend))
            .map_err(|e| Error::io("spawn read-ahead thread", dir, e))?;
        Ok(Readahead {
            state,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A consumer read the frame at `at`: queues the next windows (as far as published)
    /// unless they are cached or asked for already. A `scanner` of a party about to ask for
    /// windows further than [`hold_bytes`] past the window of another scanner of its party
    /// behind it and still reading, first waits until that one comes closer or stops (has not
    /// read for [`SCANNER_ACTIVE`]). One further behind than the cache holds is waited for
    /// too: the members of a group draining a backlog finish together at best, and from
    /// where they meet they read each window once instead of once each.
    pub fn advise(&self, shard: &ShardShared, at: LogPos, segment_bytes: u64, scanner: ScanTag) {
        let LogPos { segment, pos } = at;
        let cache_bytes = shard
            .read_cache
            .read()
            .expect("read cache lock")
            .bytes_max();
        let ahead = windows_ahead(cache_bytes);
        if ahead == 0 {
            return;
        }
        let next = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
        let last = next + (ahead - 1) * WINDOW_BYTES;
        let (lock, cv) = &*self.state;
        {
            let mut state = locked(lock);
            let asked = if scanner.id == 0 {
                state.furthest
            } else {
                let end = LogPos::new(segment, last + WINDOW_BYTES);
                let len_of = |id| shard.segment_len(id, segment_bytes);
                state = self.hold(
                    state,
                    scanner,
                    (at, end),
                    (cache_bytes as u64, &len_of),
                    ahead,
                );
                state
                    .scanners
                    .get(&scanner.id)
                    .map_or(state.furthest, |s| s.asked)
            };
            if asked >= LogPos::new(segment, last) {
                return;
            }
        }
        let readable = (shard.readable_end(segment)).min(shard.segment_len(segment, segment_bytes));
        let mut wanted = Vec::new();
        {
            let cache = shard.read_cache.read().expect("read cache lock");
            for k in 0..ahead {
                let start = next + k * WINDOW_BYTES;
                if start >= readable {
                    break;
                }
                if cache.get(LogPos::new(segment, start), 1).is_none() {
                    wanted.push(Window {
                        segment,
                        start,
                        end: (start + WINDOW_BYTES).min(readable),
                    });
                }
            }
        }
        let mut state = locked(lock);
        // Only whole windows count as asked for: a partly published one is asked again later.
        if readable >= last + WINDOW_BYTES {
            let asked = match state.scanners.get_mut(&scanner.id) {
                Some(s) => &mut s.asked,
                None => &mut state.furthest,
            };
            *asked = (*asked).max(LogPos::new(segment, last));
        }
        let mut queued = false;
        for w in wanted {
            queued |= state.enqueue(w);
        }
        if queued {
            cv.notify_all();
        }
    }

    /// Queues reads of `ranges` (`[start, end)` of `segment`, readable, in the order they are
    /// wanted) that the cache does not hold from their start and that are not being read: a
    /// consumer reading only its partitions' stretches of a rewritten segment asks for the
    /// next ones it will read (see `shard::extents`). Each read starts at the block holding
    /// its range's start.
    pub fn prefetch(&self, shard: &ShardShared, segment: SegmentId, ranges: &[(u64, u64)]) {
        let block = BLOCK_BYTES as u64;
        let wanted: Vec<Window> = {
            let cache = shard.read_cache.read().expect("read cache lock");
            let mut wanted = Vec::with_capacity(ranges.len());
            for &(mut start, end) in ranges {
                // From the first byte the cache does not hold (a block of it read on its own
                // must not keep the rest from being read ahead).
                while start < end
                    && let Some(b) =
                        cache.get_upto(LogPos::new(segment, start), (end - start) as usize)
                    && !b.is_empty()
                {
                    start += b.len() as u64;
                }
                if start < end {
                    let start = start - start % block;
                    let end = end.min(start + READ_BYTES_MAX);
                    wanted.push(Window {
                        segment,
                        start,
                        end,
                    });
                }
            }
            wanted
        };
        let (lock, cv) = &*self.state;
        let mut state = locked(lock);
        let mut queued = false;
        for w in wanted {
            if !state.pending_at(LogPos::new(segment, w.end - 1)) {
                queued |= state.enqueue(w);
            }
        }
        if queued {
            cv.notify_all();
        }
    }

    /// Notes that `me` read the frame at `at` and is about to ask for `ahead` windows, up to
    /// `end`; waits while a scanner of its party behind it would then be further than
    /// [`hold_bytes`] behind (from the start of its window; for a cache of `reach.0` bytes,
    /// segments of `reach.1`), and read within [`SCANNER_ACTIVE`]: as long as it keeps
    /// moving, or until it stops.
    fn hold<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        me: ScanTag,
        (at, end): (LogPos, LogPos),
        (cache_bytes, len_of): (u64, &dyn Fn(SegmentId) -> u64),
        ahead: u64,
    ) -> MutexGuard<'a, State> {
        let (_, cv) = &*self.state;
        Self::note(&mut state, cv, me, at);
        let Some(hold_bytes) = hold_bytes(cache_bytes, ahead).filter(|_| me.party != 0) else {
            return state;
        };
        loop {
            let now = Instant::now();
            // The latest moment a laggard to wait for stops counting as reading.
            let until = state
                .scanners
                .iter()
                .filter(|&(&id, s)| {
                    let window = LogPos::new(s.at.segment, s.at.pos - s.at.pos % WINDOW_BYTES);
                    id != me.id
                        && s.party == me.party
                        && s.at < at
                        && distance(window, end, len_of, hold_bytes) > hold_bytes
                        && now.duration_since(s.seen) < SCANNER_ACTIVE
                })
                .map(|(_, s)| s.seen + SCANNER_ACTIVE)
                .max();
            let Some(until) = until else {
                return state;
            };
            if state.shutdown {
                return state;
            }
            state.holding += 1;
            let (s, _) = cv
                .wait_timeout(state, until.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner);
            state = s;
            state.holding -= 1;
        }
    }

    /// How far ahead of its read position a reader of its partitions' stretches of a
    /// rewritten segment asks for them to be read ([`Readahead::prefetch`]): what is read
    /// ahead for every reader lands in the read cache and must stay there until read, so a
    /// quarter of the cache each for up to two readers, less for more of them (those that
    /// read within [`SCANNER_ACTIVE`]), and never less than one read.
    pub fn prefetch_bytes(&self, shard: &ShardShared) -> u64 {
        let cache_bytes = shard
            .read_cache
            .read()
            .expect("read cache lock")
            .bytes_max() as u64;
        let now = Instant::now();
        let readers = {
            let state = locked(&self.state.0);
            (state.scanners.values())
                .filter(|s| now.duration_since(s.seen) < SCANNER_ACTIVE)
                .count()
                .max(2)
        };
        prefetch_bytes(cache_bytes, readers as u64)
    }

    /// Notes that `scanner` read the frame at `at` without scanning the log there (it reads
    /// its partitions' stretches of a rewritten segment): members of its party ahead of it
    /// wait for it as for one scanning (see [`Readahead::advise`]), so that the group scans
    /// the log after the rewritten segments together.
    pub fn touch(&self, at: LogPos, scanner: ScanTag) {
        if scanner.id == 0 {
            return;
        }
        let (lock, cv) = &*self.state;
        Self::note(&mut locked(lock), cv, scanner, at);
    }

    /// Notes that `me` read the frame at `at` now, waking scanners waiting for it to move.
    fn note(state: &mut State, cv: &Condvar, me: ScanTag, at: LogPos) {
        let now = Instant::now();
        let entry = state.scanners.entry(me.id).or_insert(Scanner {
            party: me.party,
            at,
            seen: now,
            asked: LogPos::default(),
        });
        let moved = entry.at != at;
        (entry.at, entry.seen) = (at, now);
        if moved && state.holding > 0 {
            cv.notify_all();
        }
        state
            .scanners
            .retain(|_, s| now.duration_since(s.seen) < SCANNER_FORGET);
    }

    /// If a read ahead holding `at` is queued or under way, waits until it is in the cache (or
    /// failed); returns whether it waited.
    pub fn wait_for(&self, at: LogPos) -> bool {
        let (lock, cv) = &*self.state;
        let mut state = locked(lock);
        if !state.pending_at(at) {
            return false;
        }
        while state.pending_at(at) && !state.shutdown {
            state = cv.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        true
    }
}

impl Readahead {
    /// Stops the thread (readers then read for themselves).
    pub fn shutdown(&self) {
        let (lock, cv) = &*self.state;
        locked(lock).shutdown = true;
        cv.notify_all();
        if let Some(t) = self.thread.lock().expect("read-ahead thread lock").take() {
            let _ = t.join();
        }
    }
}

/// Dropped when the thread ends, a panic included: readers waiting for a window are woken and
/// read for themselves.
struct Stopped<'a>(&'a (Mutex<State>, Condvar));

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        drop_all(self.0);
    }
}

fn run(state: &(Mutex<State>, Condvar), shard: &ShardShared, backend: IoBackend) {
    let _stopped = Stopped(state);
    let (lock, cv) = state;
    let Ok(mut device) = io::device(backend, QUEUE_DEPTH) else {
        // No read-ahead then: readers read for themselves.
        return;
    };
    // Reads in flight, by token; a new one starts as soon as one finishes.
    let mut slots: Vec<Option<(Window, u32)>> = vec![None; QUEUE_DEPTH as usize];
    let mut done: Vec<Completion> = Vec::new();
    let mut load = WriterLoad::new(&shard.counters.log_bytes);
    let mut busy = false;
    loop {
        let mut start = Vec::new();
        {
            let mut s = locked(lock);
            while s.queue.is_empty() && device.in_flight() == 0 && !s.shutdown {
                s = cv.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            if s.shutdown {
                break;
            }
            busy = load.busy(busy, REWRITE_YIELDS_ABOVE_BYTES_PER_S, BUSY_LOOK_EVERY);
            let mut in_flight = slots.iter().filter(|s| s.is_some()).count();
            for (token, slot) in slots.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                if busy && in_flight > 0 {
                    break;
                }
                let Some(w) = s.next_read(busy) else {
                    break;
                };
                in_flight += 1;
                let file = shard
                    .segments
                    .read()
                    .expect("segments lock")
                    .get(&w.segment)
                    .and_then(|f| Some((f.file.try_clone().ok()?, f.generation)));
                match file {
                    Some((file, generation)) => {
                        *slot = Some((w, generation));
                        start.push((token, w, Arc::new(file)));
                    }
                    // Deleted by retention meanwhile, or out of descriptors: not read ahead.
                    None => {
                        s.pending.remove(&LogPos::new(w.segment, w.start));
                        cv.notify_all();
                    }
                }
            }
        }
        for (token, w, file) in start {
            let len = (w.end - w.start).next_multiple_of(BLOCK_BYTES as u64) as usize;
            WriterCounters::add(&shard.counters.read_disk_bytes, len as u64);
            device.read(&file, w.start, AlignedBuf::for_read(len), token as u64);
        }
        if device.in_flight() == 0 {
            continue;
        }
        done.clear();
        if device.wait(&mut done, true, None).is_err() {
            break;
        }
        let mut finished = Vec::with_capacity(done.len());
        for c in done.drain(..) {
            let (w, generation) = slots[c.token as usize].take().expect("a read in flight");
            // A failed read is dropped: the reader then reads for itself and reports it.
            if let (Ok(()), Some(buf)) = (c.result, c.buf) {
                let bytes = io::shared_bytes(buf).slice(..(w.end - w.start) as usize);
                shard
                    .read_cache
                    .write()
                    .expect("read cache lock")
                    .insert_read(LogPos::new(w.segment, w.start), generation, bytes);
            }
            finished.push(w);
        }
        let mut s = locked(lock);
        for w in finished {
            s.pending.remove(&LogPos::new(w.segment, w.start));
        }
        cv.notify_all();
    }
    // Dropping the device waits for reads still in flight; then `_stopped` wakes anyone
    // waiting on a window that will not come.
}

/// The read-ahead state. A panic of the thread may have poisoned its lock; the state is still
/// whole (every change to it is a single step), so readers and the cleanup go on with it.
fn locked(lock: &Mutex<State>) -> MutexGuard<'_, State> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

fn drop_all(state: &(Mutex<State>, Condvar)) {
    let (lock, cv) = state;
    let mut s = locked(lock);
    s.queue.clear();
    s.pending.clear();
    s.shutdown = true;
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanners_wait_only_where_the_cache_holds_both() {
        const W: u64 = WINDOW_BYTES;
        // The default cache: 16 windows, 4 read ahead; the one ahead may end 14 windows past
        // the window of the one behind.
        assert_eq!(windows_ahead(64 << 20), 4);
        assert_eq!(hold_bytes(64 << 20, 4), Some(14 * W));
        assert_eq!(hold_bytes(32 << 20, 4), Some(6 * W));
        // Too small to leave the one ahead a window of its own: no waiting.
        assert_eq!(hold_bytes(16 << 20, windows_ahead(16 << 20)), None);
        assert_eq!(hold_bytes(8 << 20, windows_ahead(8 << 20)), None);
        assert_eq!(hold_bytes(0, 0), None);
        // Read ahead by stretches: half the cache shared, at least one read.
        assert_eq!(prefetch_bytes(64 << 20, 2), 16 << 20);
        assert_eq!(prefetch_bytes(64 << 20, 4), 8 << 20);
        assert_eq!(prefetch_bytes(64 << 20, 64), READ_BYTES_MAX);
        assert_eq!(prefetch_bytes(64 << 20, 3) % BLOCK_BYTES as u64, 0);
        let at = |segment, pos| LogPos::new(SegmentId(segment), pos);
        let len = |_| W;
        let far = u64::MAX;
        assert_eq!(distance(at(3, 100), at(3, 5000), &len, far), 4900);
        assert_eq!(distance(at(3, 5000), at(3, 100), &len, far), 0, "not after");
        assert_eq!(
            distance(at(2, W - 10), at(4, 20), &len, far),
            W + 30,
            "across segments"
        );
        assert_eq!(distance(at(4, 20), at(2, W - 10), &len, far), 0);
        // Segment 3 rewritten to a third of its length: the scanners are that much closer.
        let rewritten = |id: SegmentId| if id == SegmentId(3) { W / 3 } else { W };
        assert_eq!(
            distance(at(2, W - 10), at(4, 20), &rewritten, far),
            W / 3 + 30
        );
        // Far apart: counted until past the cap.
        assert!(distance(at(1, 0), at(1000, 0), &len, 2 * W) > 2 * W);
    }

    #[test]
    fn while_the_writer_is_busy_windows_are_read_in_pieces_each_pending_until_read() {
        let w = |start, end| Window {
            segment: SegmentId(7),
            start,
            end,
        };
        let mut state = State::default();
        assert!(state.enqueue(w(0, WINDOW_BYTES)));
        assert!(state.enqueue(w(WINDOW_BYTES, WINDOW_BYTES + 100_000)));
        assert!(!state.enqueue(w(0, WINDOW_BYTES)), "pending already");
        // A quiet writer: whole windows.
        let mut quiet = State::default();
        quiet.enqueue(w(0, WINDOW_BYTES));
        assert_eq!(quiet.next_read(false), Some(w(0, WINDOW_BYTES)));
        assert_eq!(quiet.next_read(false), None);
        // A busy one: the window in pieces, in order, the rest pending meanwhile.
        let pieces = WINDOW_BYTES / BUSY_READ_BYTES;
        for k in 0..pieces {
            let first = state.next_read(true).expect("a piece");
            assert_eq!(first, w(k * BUSY_READ_BYTES, (k + 1) * BUSY_READ_BYTES));
            // Every byte not yet read is still pending: readers wait for it, none asks again.
            for pos in [first.start, first.end - 1, WINDOW_BYTES - 1] {
                assert!(
                    state.pending_at(LogPos::new(SegmentId(7), pos)),
                    "{k} {pos}"
                );
            }
            // The piece is read: its bytes are no longer pending, the rest still are.
            state
                .pending
                .remove(&LogPos::new(SegmentId(7), first.start));
            assert!(!state.pending_at(LogPos::new(SegmentId(7), first.start)));
            if k + 1 < pieces {
                assert!(state.pending_at(LogPos::new(SegmentId(7), first.end)));
            }
        }
        // A window shorter than a piece is read whole.
        assert_eq!(
            state.next_read(true),
            Some(w(WINDOW_BYTES, WINDOW_BYTES + 100_000))
        );
        assert_eq!(state.next_read(true), None);
    }
}
