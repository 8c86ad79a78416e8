//! Injected I/O faults, for tests: a [`Device`] wrapper that can stall (a disk that stops
//! answering), fail the next write or flush with a chosen errno (EIO, ENOSPC), and slow every
//! flush down; and a switch that makes the io_uring device submit each write in two parts, so
//! the kernel returns short writes.
//!
//! Enabled only through [`crate::Config::testing_io_faults`]; a configuration without it never
//! constructs one.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::io::{AlignedBuf, Completion, Device};

/// Switches shared between a test and the shard writers' devices.
#[derive(Debug, Default)]
pub struct IoFaults {
    paused: Mutex<bool>,
    resumed: Condvar,
    write_errno: AtomicI32,
    flush_errno: AtomicI32,
    flush_delay: Mutex<Duration>,
    short_writes: AtomicBool,
    short_writes_done: Arc<AtomicU64>,
    panic_next_write: AtomicBool,
}

impl IoFaults {
    /// New switches, all off.
    pub fn new() -> Arc<IoFaults> {
        Arc::default()
    }

    /// From now on, submitting a write or flush blocks until [`IoFaults::resume`].
    pub fn pause(&self) {
        *self.paused.lock().expect("faults lock") = true;
    }

    /// Lets stalled submissions go on.
    pub fn resume(&self) {
        *self.paused.lock().expect("faults lock") = false;
        self.resumed.notify_all();
    }

    /// The next write fails with `errno` (without reaching the disk).
    pub fn fail_next_write(&self, errno: i32) {
        self.write_errno.store(errno, Ordering::SeqCst);
    }

    /// The next write submission panics, on the thread that submits it (a shard writer): a
    /// stand-in for any bug that panics a writer.
    pub fn panic_next_write(&self) {
        self.panic_next_write.store(true, Ordering::SeqCst);
    }

    /// The next flush fails with `errno`.
    pub fn fail_next_flush(&self, errno: i32) {
        self.flush_errno.store(errno, Ordering::SeqCst);
    }

    /// From now on, each flush completes `delay` after the disk finished it.
    pub fn slow_flushes(&self, delay: Duration) {
        *self.flush_delay.lock().expect("faults lock") = delay;
    }

    /// Makes io_uring devices created from now on submit each write of more than one block in
    /// two parts: the kernel returns a short write, and the device must write the rest.
    pub fn short_writes(&self, on: bool) {
        self.short_writes.store(on, Ordering::SeqCst);
    }

    /// Whether devices should split writes (see [`IoFaults::short_writes`]).
    pub(crate) fn short_writes_on(&self) -> bool {
        self.short_writes.load(Ordering::SeqCst)
    }

    /// The counter of short writes a splitting device bumps.
    pub(crate) fn short_writes_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.short_writes_done)
    }

    /// How many short writes devices have seen and completed.
    pub fn short_writes_done(&self) -> u64 {
        self.short_writes_done.load(Ordering::SeqCst)
    }

    fn wait_while_paused(&self) {
        let mut paused = self.paused.lock().expect("faults lock");
        while *paused {
            paused = self.resumed.wait(paused).expect("faults lock");
        }
    }
}

/// A [`Device`] with faults injected.
pub struct FaultyDevice {
    inner: Box<dyn Device>,
    faults: Arc<IoFaults>,
    failed: Vec<Completion>,
    /// Flush completions held back by a slow-flush delay, with when they may go.
    held: Vec<(Instant, Completion)>,
}

impl FaultyDevice {
    /// Wraps a device.
    pub fn new(inner: Box<dyn Device>, faults: Arc<IoFaults>) -> FaultyDevice {
        FaultyDevice {
            inner,
            faults,
            failed: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl Device for FaultyDevice {
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64) {
        self.faults.wait_while_paused();
        if self.faults.panic_next_write.swap(false, Ordering::SeqCst) {
            panic!("injected panic in a write submission");
        }
        match self.faults.write_errno.swap(0, Ordering::SeqCst) {
            0 => self.inner.write(file, pos, buf, len, token),
            errno => self.failed.push(Completion {
                token,
                result: Err(io::Error::from_raw_os_error(errno)),
                buf: Some(buf),
            }),
        }
    }

    fn flush(&mut self, file: &Arc<File>, token: u64) {
        self.faults.wait_while_paused();
        match self.faults.flush_errno.swap(0, Ordering::SeqCst) {
            0 => self.inner.flush(file, token),
            errno => self.failed.push(Completion {
                token,
                result: Err(io::Error::from_raw_os_error(errno)),
                buf: None,
            }),
        }
    }

    fn read(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, token: u64) {
        self.inner.read(file, pos, buf, token);
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.failed.len() + self.held.len()
    }

    fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if !self.failed.is_empty() {
            out.append(&mut self.failed);
            return self.inner.wait(out, false, None);
        }
        let delay = *self.faults.flush_delay.lock().expect("faults lock");
        if delay.is_zero() && self.held.is_empty() {
            return self.inner.wait(out, block, timeout);
        }
        // Wait no longer than until the first held flush may go.
        let now = Instant::now();
        let first_due = self.held.iter().map(|(at, _)| *at).min();
        let timeout = match (timeout, first_due) {
            (t, None) => t,
            (None, Some(due)) => Some(due.saturating_duration_since(now)),
            (Some(t), Some(due)) => Some(t.min(due.saturating_duration_since(now))),
        };
        let blocking = block && self.inner.in_flight() > 0;
        let mut done = Vec::new();
        self.inner.wait(&mut done, blocking, timeout)?;
        if block
            && !blocking
            && let Some(t) = timeout
        {
            std::thread::sleep(t);
        }
        let now = Instant::now();
        for c in done {
            if c.buf.is_none() && !delay.is_zero() {
                self.held.push((now + delay, c));
            } else {
                out.push(c);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(at, _)| *at <= now);
        self.held = later;
        out.extend(due.into_iter().map(|(_, c)| c));
        Ok(())
    }
}

/// What a [`RecordingDevice`] saw, in order: the history a power loss can cut anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoEvent {
    /// A write was submitted: the bytes may land, whole or torn at sectors, from now on.
    WriteSubmitted {
        /// Its number.
        id: u64,
        /// The file's inode.
        inode: u64,
        /// Byte position in the file.
        pos: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The write completed (still in the device's volatile cache until a flush).
    WriteDone {
        /// Its number.
        id: u64,
    },
    /// A flush was submitted: it covers every write to its file completed before this event.
    FlushSubmitted {
        /// Its number.
        id: u64,
        /// The file's inode.
        inode: u64,
    },
    /// The flush completed.
    FlushDone {
        /// Its number.
        id: u64,
    },
    /// A test's note that a record was acknowledged: (partition, offset, hash of the value).
    Acked {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// A hash of the value, as the test computes it.
        hash: u64,
    },
}

/// The shared history of I/O events, for power-loss tests.
#[derive(Debug, Default)]
pub struct IoRecorder {
    events: Mutex<Vec<IoEvent>>,
}

impl IoRecorder {
    /// A new, empty history.
    pub fn new() -> Arc<IoRecorder> {
        Arc::default()
    }

    /// Appends an event (tests use it for `Acked`).
    pub fn note(&self, event: IoEvent) {
        self.events.lock().expect("recorder lock").push(event);
    }

    /// The history so far.
    pub fn events(&self) -> Vec<IoEvent> {
        self.events.lock().expect("recorder lock").clone()
    }
}

/// A [`Device`] that records every write and flush in an [`IoRecorder`].
pub struct RecordingDevice {
    inner: Box<dyn Device>,
    recorder: Arc<IoRecorder>,
    next_id: u64,
    /// Token of each operation in flight → (event id, is a write).
    pending: std::collections::HashMap<u64, (u64, bool)>,
}

impl RecordingDevice {
    /// Wraps a device.
    pub fn new(inner: Box<dyn Device>, recorder: Arc<IoRecorder>) -> RecordingDevice {
        RecordingDevice {
            inner,
            recorder,
            next_id: 0,
            pending: std::collections::HashMap::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Device for RecordingDevice {
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64) {
        use std::os::unix::fs::MetadataExt;
        let id = self.id();
        let inode = file.metadata().map_or(0, |m| m.ino());
        self.recorder.note(IoEvent::WriteSubmitted {
            id,
            inode,
            pos,
            data: buf[..len].to_vec(),
        });
        self.pending.insert(token, (id, true));
        self.inner.write(file, pos, buf, len, token);
    }

    fn flush(&mut self, file: &Arc<File>, token: u64) {
        use std::os::unix::fs::MetadataExt;
        let id = self.id();
        let inode = file.metadata().map_or(0, |m| m.ino());
        self.recorder.note(IoEvent::FlushSubmitted { id, inode });
        self.pending.insert(token, (id, false));
        self.inner.flush(file, token);
    }

    fn read(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, token: u64) {
        self.inner.read(file, pos, buf, token);
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let before = out.len();
        self.inner.wait(out, block, timeout)?;
        for c in &out[before..] {
            if let Some((id, write)) = self.pending.remove(&c.token)
                && c.result.is_ok()
            {
                self.recorder.note(if write {
                    IoEvent::WriteDone { id }
                } else {
                    IoEvent::FlushDone { id }
                });
            }
        }
        Ok(())
    }
}
