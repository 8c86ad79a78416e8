//! Injected I/O faults, for tests: a [`Device`] wrapper that can stall (a disk that stops
//! answering) and fail the next write or flush with a chosen errno (EIO, ENOSPC).
//!
//! Enabled only through [`crate::Config::testing_io_faults`]; a production configuration never
//! constructs one.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{AlignedBuf, Completion, Device};
use crate::error::Result;

/// Switches shared between a test and the shard writers' devices.
#[derive(Debug, Default)]
pub struct IoFaults {
    paused: Mutex<bool>,
    resumed: Condvar,
    write_errno: AtomicI32,
    flush_errno: AtomicI32,
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

    /// The next flush fails with `errno`.
    pub fn fail_next_flush(&self, errno: i32) {
        self.flush_errno.store(errno, Ordering::SeqCst);
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
}

impl FaultyDevice {
    /// Wraps a device.
    pub fn new(inner: Box<dyn Device>, faults: Arc<IoFaults>) -> FaultyDevice {
        FaultyDevice {
            inner,
            faults,
            failed: Vec::new(),
        }
    }
}

impl Device for FaultyDevice {
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64) {
        self.faults.wait_while_paused();
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

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.failed.len()
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
        self.inner.wait(out, block, timeout)
    }
}
