//! The io_uring device: O_DIRECT writes and `fdatasync`s submitted from the shard thread, and
//! the O_DIRECT reads of the read-ahead thread.
//!
//! `user_data` is a slot index in the in-flight table plus a generation, never a pointer; the
//! slot owns the buffer and the file until the completion arrives, so the kernel never sees
//! freed memory. The ring is set up with DEFER_TASKRUN where the kernel has it (6.1 on): its
//! completions run only when its thread enters the kernel asking for events, which every wait
//! does (a wait that does not block enters only when the kernel flags completions waiting).
//! Short writes are resubmitted for the rest; EINTR and EAGAIN are retried; a full
//! submission queue is submitted and retried. Dropping the device waits for every operation.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, opcode, types};

use super::{AlignedBuf, Completion, Device};
use crate::error::{Error, Result};
use crate::segment::format::BLOCK_BYTES;

enum Op {
    Write {
        buf: AlignedBuf,
        pos: u64,
        len: usize,
        done: usize,
    },
    Flush,
    Read {
        buf: AlignedBuf,
        pos: u64,
        done: usize,
    },
}

struct Slot {
    generation: u32,
    busy: Option<(u64, Arc<File>, Op)>,
}

/// O_DIRECT needs the file position, the buffer's address and the length block-aligned.
fn assert_aligned(at: u64, ptr: usize, n: u32, op: &str) {
    assert!(
        at.is_multiple_of(BLOCK_BYTES as u64)
            && ptr.is_multiple_of(BLOCK_BYTES)
            && (n as usize).is_multiple_of(BLOCK_BYTES),
        "unaligned O_DIRECT {op}: position {at}, address {ptr:#x}, {n} bytes"
    );
}

/// io_uring-backed [`Device`]. Used only by the thread that created it: the ring is
/// SINGLE_ISSUER, and a submission from another thread fails.
pub struct UringDevice {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    finished: Vec<Completion>,
    /// Set when `io_uring_enter` failed in a way retrying cannot mend: every later wait
    /// returns it, and dropping the device leaks the buffers still in flight instead of
    /// waiting for completions that may never come.
    broken: Option<Arc<io::Error>>,
    /// Tests: submit each write's first part only (see
    /// `testing::IoFaults::short_writes`).
    #[cfg(any(test, feature = "testing"))]
    split_writes: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl UringDevice {
    /// Sets up a ring with room for `queue_depth` submissions.
    pub fn new(queue_depth: u32) -> Result<UringDevice> {
        // Completions run only when this thread asks for them (DEFER_TASKRUN), not as task
        // work interrupting it at any system call; kernels before 6.1 get a plain ring.
        let deferred = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(queue_depth);
        let ring = deferred
            .or_else(|_| IoUring::builder().build(queue_depth))
            .map_err(|e| {
                let what = match e.raw_os_error() {
                    Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".to_string(),
                    Some(libc::EPERM) => "io_uring_setup is not permitted (EPERM): \
                     kernel.io_uring_disabled is set, or a seccomp profile blocks it"
                        .to_string(),
                    _ => format!("io_uring_setup failed: {e}"),
                };
                Error::IoUringUnavailable { reason: what }
            })?;
        Ok(UringDevice {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            finished: Vec::new(),
            broken: None,
            #[cfg(any(test, feature = "testing"))]
            split_writes: None,
        })
    }

    /// Tests: from now on, submits only the first half (in whole blocks) of each write of more
    /// than one block, so the kernel returns a short write and the rest is resubmitted like any
    /// short write; each is counted in `done`.
    #[cfg(any(test, feature = "testing"))]
    pub fn split_writes(&mut self, done: Arc<std::sync::atomic::AtomicU64>) {
        self.split_writes = Some(done);
    }

    /// Whether writes are submitted in two parts (tests only).
    #[cfg(any(test, feature = "testing"))]
    fn splitting_writes(&self) -> bool {
        self.split_writes.is_some()
    }

    /// Without the `testing` feature, writes are never split.
    #[cfg(not(any(test, feature = "testing")))]
    fn splitting_writes(&self) -> bool {
        false
    }

    fn take_slot(&mut self, token: u64, file: &Arc<File>, op: Op) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    busy: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        assert!(slot.busy.is_none());
        slot.generation = slot.generation.wrapping_add(1);
        slot.busy = Some((token, Arc::clone(file), op));
        self.in_flight += 1;
        (u64::from(slot.generation) << 32) | u64::from(index)
    }

    /// Pushes the submission entry for the operation in `slot`.
    fn push(&mut self, user_data: u64) {
        let index = (user_data & 0xffff_ffff) as usize;
        let splitting = self.splitting_writes();
        let (_, file, op) = self.slots[index].busy.as_mut().expect("busy slot");
        let fd = types::Fd(file.as_raw_fd());
        let entry = match op {
            Op::Write {
                buf,
                pos,
                len,
                done,
            } => {
                let at = *pos + *done as u64;
                let ptr = buf[*done..].as_ptr();
                let mut n = (*len - *done) as u32;
                if splitting && *done == 0 && n as usize > BLOCK_BYTES {
                    n = (n / 2).next_multiple_of(BLOCK_BYTES as u32);
                }
                assert_aligned(at, ptr as usize, n, "write");
                opcode::Write::new(fd, ptr, n).offset(at).build()
            }
            Op::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Read { buf, pos, done } => {
                let at = *pos + *done as u64;
                // The slot owns the buffer; the kernel writes into it until the completion.
                let ptr = buf[*done..].as_mut_ptr();
                let n = (buf.len() - *done) as u32;
                assert_aligned(at, ptr as usize, n, "read");
                opcode::Read::new(fd, ptr, n).offset(at).build()
            }
        }
        .user_data(user_data);
        loop {
            // SAFETY: the entry's buffer and file are owned by the slot, which stays busy
            // (and so keeps them alive and unmoved: AlignedBuf's heap memory never moves)
            // until this entry's completion is reaped in `reap`.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                break;
            }
            // The submission queue is full: hand it to the kernel and try again.
            self.submit();
        }
        self.submit();
    }

    fn submit(&mut self) {
        while self.broken.is_none() {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is full: reap before submitting more.
                    self.reap();
                }
                Err(e) => self.broken = Some(Arc::new(e)),
            }
        }
    }

    /// The error a broken ring gives every wait.
    fn broken_error(&self) -> Option<Error> {
        let e = self.broken.as_ref()?;
        let source = io::Error::new(e.kind(), e.to_string());
        Some(Error::io("io_uring_enter", "the io_uring ring", source))
    }

    fn reap(&mut self) {
        // Deferred completions are posted only by an enter that asks for events; the flag says
        // some are waiting (the crate's submit enters with GETEVENTS then).
        if self.ring.submission().taskrun() {
            let _ = self.ring.submit();
        }
        let entries: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in entries {
            let index = (user_data & 0xffff_ffff) as usize;
            let generation = (user_data >> 32) as u32;
            let slot = &mut self.slots[index];
            assert_eq!(slot.generation, generation, "stale io_uring completion");
            let (token, file, mut op) = slot.busy.take().expect("completion for an idle slot");
            let retry = |device: &mut UringDevice, op: Op| {
                device.slots[index].busy = Some((token, file.clone(), op));
                device.push(user_data);
            };
            if result == -libc::EINTR || result == -libc::EAGAIN {
                retry(self, op);
                continue;
            }
            let outcome = if result < 0 {
                Err(io::Error::from_raw_os_error(-result))
            } else {
                Ok(result as usize)
            };
            match (&mut op, outcome) {
                (Op::Write { len, done, .. }, Ok(n)) if n > 0 && *done + n < *len => {
                    #[cfg(any(test, feature = "testing"))]
                    if let Some(done) = &self.split_writes {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    *done += n;
                    retry(self, op);
                    continue;
                }
                (Op::Read { buf, done, .. }, Ok(n))
                    if n > 0
                        && *done + n < buf.len()
                        && (*done + n).is_multiple_of(BLOCK_BYTES) =>
                {
                    *done += n;
                    retry(self, op);
                    continue;
                }
                (Op::Read { buf, done, .. }, Ok(n)) if *done + n < buf.len() => {
                    // The end of the file: what the read did not fill reads as zeros (a
                    // buffer may come from an earlier read).
                    buf.zero_from(*done + n);
                    self.complete(index, token, Ok(()), op)
                }
                (Op::Write { .. }, Ok(0)) => {
                    self.complete(index, token, Err(io::Error::other("write returned 0")), op)
                }
                (_, outcome) => self.complete(index, token, outcome.map(drop), op),
            }
        }
    }

    fn complete(&mut self, index: usize, token: u64, result: io::Result<()>, op: Op) {
        self.free.push(index as u32);
        self.in_flight -= 1;
        let buf = match op {
            Op::Write { buf, .. } | Op::Read { buf, .. } => Some(buf),
            Op::Flush => None,
        };
        self.finished.push(Completion { token, result, buf });
    }
}

impl Device for UringDevice {
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64) {
        assert!(len <= buf.len());
        let user_data = self.take_slot(
            token,
            file,
            Op::Write {
                buf,
                pos,
                len,
                done: 0,
            },
        );
        self.push(user_data);
    }

    fn flush(&mut self, file: &Arc<File>, token: u64) {
        let user_data = self.take_slot(token, file, Op::Flush);
        self.push(user_data);
    }

    fn read(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, token: u64) {
        let user_data = self.take_slot(token, file, Op::Read { buf, pos, done: 0 });
        self.push(user_data);
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        self.reap();
        if block && self.finished.is_empty() && self.in_flight > 0 {
            let waited = match timeout {
                Some(t) => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
                None => self.ring.submit_and_wait(1),
            };
            match waited {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => {
                    self.broken = Some(Arc::new(e));
                    return Err(self.broken_error().expect("just set"));
                }
            }
            self.reap();
        }
        out.append(&mut self.finished);
        Ok(())
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        // The kernel may still write from our buffers: wait for every operation first. A
        // broken ring may never complete them; its buffers are leaked rather than freed.
        while self.in_flight > 0 {
            let mut done = Vec::new();
            if self.wait(&mut done, true, None).is_err() {
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{IoBackend, open_segment};

    /// Completions are deferred until the thread asks for them: a wait that does not block
    /// still finds a finished write and flush, however long it is polled without blocking.
    #[test]
    fn a_wait_that_does_not_block_finds_finished_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.seg");
        let file = Arc::new(open_segment(&path, IoBackend::IoUring, true, true).unwrap());
        let mut device = UringDevice::new(8).unwrap();
        let mut buf = AlignedBuf::new(BLOCK_BYTES);
        buf.fill(7);
        device.write(&file, 0, buf, BLOCK_BYTES, 1);
        device.flush(&file, 2);
        let mut done = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "completions never seen: {done:?}"
            );
            device.wait(&mut done, false, None).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [1, 2]);
        assert!(done.iter().all(|c| c.result.is_ok()));
        assert_eq!(device.in_flight(), 0);
        assert_eq!(
            std::fs::read(&path).unwrap()[..BLOCK_BYTES],
            [7; BLOCK_BYTES]
        );
    }
}
