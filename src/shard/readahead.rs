//! Read-ahead for consumers catching up from disk: one thread per shard reads the next windows
//! of the segment a consumer is reading, through the shard's I/O backend (io_uring: O_DIRECT
//! reads, several in flight), into the shard's read cache, while the consumer decodes what it
//! has. Without it a consumer alternates between decoding and waiting for its next read.
//!
//! Windows lie on a fixed grid of [`WINDOW_BYTES`] within a segment and are read only as far
//! as the segment is published (bytes below that never change, so caching them is safe). A
//! reader that misses the cache on a window being read waits for it instead of reading it
//! again.

use crate::segment::SegmentId;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::config::TAIL_CACHE_BYTES_DEFAULT;
use crate::error::{Error, Result};
use crate::io::{self, AlignedBuf, Completion, IoBackend};
use crate::segment::LogPos;
use crate::segment::format::BLOCK_BYTES;
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
/// Reads in flight at once.
const QUEUE_DEPTH: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Window {
    segment: SegmentId,
    start: u64,
    end: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Window>,
    /// Queued or being read, by (segment, start).
    pending: HashSet<LogPos>,
    /// The furthest window asked for, so readers skip asking again.
    furthest: LogPos,
    shutdown: bool,
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
    /// unless they are cached or asked for already.
    pub fn advise(&self, shard: &ShardShared, at: LogPos, segment_bytes: u64) {
        let LogPos { segment, pos } = at;
        let ahead = windows_ahead(
            shard
                .read_cache
                .read()
                .expect("read cache lock")
                .bytes_max(),
        );
        if ahead == 0 {
            return;
        }
        let next = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
        let last = next + (ahead - 1) * WINDOW_BYTES;
        let (lock, cv) = &*self.state;
        if locked(lock).furthest >= LogPos::new(segment, last) {
            return;
        }
        let readable = shard.readable_end(segment).min(segment_bytes);
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
            state.furthest = state.furthest.max(LogPos::new(segment, last));
        }
        let mut queued = false;
        for w in wanted {
            if state.pending.insert(LogPos::new(w.segment, w.start)) {
                state.queue.push_back(w);
                queued = true;
            }
        }
        if queued {
            cv.notify_all();
        }
    }

    /// If the window holding `at` is being read ahead, waits until it is in the cache (or
    /// failed); returns whether it waited.
    pub fn wait_for(&self, at: LogPos) -> bool {
        let key = LogPos::new(at.segment, at.pos - at.pos % WINDOW_BYTES);
        let (lock, cv) = &*self.state;
        let mut state = locked(lock);
        if !state.pending.contains(&key) {
            return false;
        }
        while state.pending.contains(&key) && !state.shutdown {
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
    let mut slots: Vec<Option<Window>> = vec![None; QUEUE_DEPTH as usize];
    let mut done: Vec<Completion> = Vec::new();
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
            for (token, slot) in slots.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let Some(w) = s.queue.pop_front() else {
                    break;
                };
                let file = shard
                    .segments
                    .read()
                    .expect("segments lock")
                    .get(&w.segment)
                    .and_then(|f| f.file.try_clone().ok());
                match file {
                    Some(file) => {
                        *slot = Some(w);
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
            let w = slots[c.token as usize].take().expect("a read in flight");
            // A failed read is dropped: the reader then reads for itself and reports it.
            if let (Ok(()), Some(buf)) = (c.result, c.buf) {
                let bytes = io::shared_bytes(buf).slice(..(w.end - w.start) as usize);
                shard
                    .read_cache
                    .write()
                    .expect("read cache lock")
                    .insert(LogPos::new(w.segment, w.start), bytes);
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
