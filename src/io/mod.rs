//! Disk I/O for the shard writer: aligned buffers, opening segment files, and the [`Device`]
//! that carries out writes and flushes.
//!
//! Two devices sit behind one trait. [`uring::UringDevice`] submits O_DIRECT writes and
//! `fdatasync`s to an io_uring instance owned by the shard thread; it never blocks the writer
//! while a commit is in flight, so the next commit is built meanwhile. [`portable::PortableDevice`]
//! runs `pwrite` + `fdatasync` synchronously on the shard thread through the page cache; it works
//! on any file system (tmpfs included) and where io_uring is disabled, and is chosen explicitly,
//! never as a silent fallback.
//!
//! Ownership: a buffer handed to [`Device::write`] belongs to the device until its completion
//! comes back from [`Device::wait`], with the buffer in it. The device also keeps the file alive
//! (an `Arc<File>`) until then. Every `unsafe` block of floodgate is in this module (with
//! `uring.rs`): buffers, system calls the standard library does not wrap.

pub mod baseline;
pub mod cores;
pub mod portable;
pub mod uring;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::format::BLOCK_BYTES;

/// Which I/O path the shard writers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring with O_DIRECT writes and reads (the default). Needs a kernel with io_uring
    /// enabled and a file system that supports O_DIRECT.
    #[default]
    IoUring,
    /// `pwrite` + `fdatasync` on the shard thread, through the page cache. Works anywhere
    /// (tmpfs, io_uring disabled); slower, and reads go through the page cache too.
    Portable,
}

impl IoBackend {
    /// The backend's name as the load tool prints it.
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::IoUring => "io_uring",
            IoBackend::Portable => "portable",
        }
    }
}

/// A heap buffer aligned to [`BLOCK_BYTES`], whose length is a multiple of it, as O_DIRECT
/// requires; zeroed when allocated ([`AlignedBuf::for_read`] may hand out a used one).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    /// The bytes it shows: `len <= cap`, a multiple of [`BLOCK_BYTES`].
    len: usize,
    /// The bytes allocated (all initialised).
    cap: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>; nothing else points to it
// except the kernel while a write is in flight, and the device holds the buffer for that time.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`, which is Sync.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes; `len` must be a non-zero multiple of [`BLOCK_BYTES`].
    pub fn new(len: usize) -> AlignedBuf {
        assert!(
            len > 0 && len.is_multiple_of(BLOCK_BYTES),
            "unaligned buffer length {len}"
        );
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (asserted above).
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len, cap: len }
    }

    /// A buffer of `len` bytes for a read, whose bytes may be those of an earlier read (the
    /// read overwrites them, and [`AlignedBuf::zero_from`] clears what a short read left): the
    /// read-ahead windows and the readers' spans come from a pool of buffers whose sizes are
    /// powers of two from [`READ_POOL_CLASS_MIN`] to [`READ_POOL_BUF_BYTES`] (a read takes the
    /// smallest that holds it, so at most twice its bytes), so reads at device speed neither
    /// fault fresh pages in nor zero them at every read.
    pub fn for_read(len: usize) -> AlignedBuf {
        let Some(class) = read_pool_class(len) else {
            return AlignedBuf::new(len);
        };
        assert!(
            len.is_multiple_of(BLOCK_BYTES),
            "unaligned read length {len}"
        );
        let pooled = {
            let mut pool = READ_POOL.lock().unwrap_or_else(|e| e.into_inner());
            let buf = pool.free[class].pop();
            if let Some(b) = &buf {
                pool.bytes -= b.cap;
            }
            buf
        };
        let mut buf = pooled.unwrap_or_else(|| AlignedBuf::new(READ_POOL_CLASS_MIN << class));
        buf.len = len;
        buf
    }

    /// Zeroes its bytes from `at` on: what a read that came back short did not fill.
    pub fn zero_from(&mut self, at: usize) {
        if let Some(rest) = self.get_mut(at..) {
            rest.fill(0);
        }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, BLOCK_BYTES).expect("buffer layout")
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to cap >= len initialised (zeroed at allocation) bytes owned by
        // self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated in `new` with exactly this layout (its size is `cap`).
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// What a device reports back for one submitted operation.
#[derive(Debug)]
pub struct Completion {
    /// The token given at submission.
    pub token: u64,
    /// Success, or the OS error.
    pub result: io::Result<()>,
    /// The buffer of a write or read, returned to its owner.
    pub buf: Option<AlignedBuf>,
}

/// Carries out a shard writer's writes and flushes. Operations complete in any order;
/// callers order them by waiting for completions.
pub trait Device: Send {
    /// Submits a write of `buf[..len]` at `pos`. `pos` and `len` are multiples of
    /// [`BLOCK_BYTES`]. The buffer comes back in the completion.
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64);
    /// Submits an `fdatasync` of `file`: it covers every write completed before this call.
    fn flush(&mut self, file: &Arc<File>, token: u64);
    /// Submits a read of `buf.len()` bytes at `pos` into `buf` (both multiples of
    /// [`BLOCK_BYTES`]); bytes past the end of the file read as zeros. The buffer comes back
    /// in the completion.
    fn read(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, token: u64);
    /// Operations submitted and not yet returned by `wait`.
    fn in_flight(&self) -> usize;
    /// Moves finished operations into `out`. Blocks until at least one finishes when `block`
    /// is set and something is in flight, or until `timeout` passes.
    fn wait(
        &mut self,
        out: &mut Vec<Completion>,
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<()>;
}

/// Creates the device of a backend (a shard's writer's, with test hooks, comes from
/// `testing::device`).
pub(crate) fn device(backend: IoBackend, queue_depth: u32) -> Result<Box<dyn Device>> {
    Ok(match backend {
        IoBackend::IoUring => Box::new(uring::UringDevice::new(queue_depth)?),
        IoBackend::Portable => Box::new(portable::PortableDevice::default()),
    })
}

/// Checks that io_uring can be set up here, with an error that names the way out.
pub fn probe_io_uring() -> Result<()> {
    uring::UringDevice::new(4).map(drop)
}

/// Opens a segment file for writing: O_DIRECT for io_uring, plain for the portable backend.
/// A file system that refuses O_DIRECT gives [`Error::DirectIoUnsupported`].
pub fn open_segment(path: &Path, backend: IoBackend, create: bool, write: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(write).create(create);
    if backend == IoBackend::IoUring {
        opts.custom_flags(libc::O_DIRECT);
    }
    match opts.open(path) {
        Ok(f) => Ok(f),
        Err(e) if backend == IoBackend::IoUring && e.raw_os_error() == Some(libc::EINVAL) => {
            Err(Error::DirectIoUnsupported {
                path: path.to_owned(),
                source: Arc::new(e),
            })
        }
        Err(e) => Err(Error::io("open", path, e)),
    }
}

/// Reads `len` bytes at `pos` (both multiples of [`BLOCK_BYTES`]) into an aligned buffer; bytes
/// past the end of the file read as zeros. Works on O_DIRECT and plain files alike.
pub fn read_aligned(file: &File, path: &Path, pos: u64, len: usize) -> Result<AlignedBuf> {
    use std::os::unix::fs::FileExt;
    assert!(pos.is_multiple_of(BLOCK_BYTES as u64) && len.is_multiple_of(BLOCK_BYTES));
    let mut buf = AlignedBuf::for_read(len);
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    buf.zero_from(done);
    Ok(buf)
}

/// Writes all of `buf` at `pos` synchronously, retrying short writes and EINTR.
pub fn write_all_at(file: &File, path: &Path, pos: u64, buf: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, pos)
        .map_err(|e| Error::io("write", path, e))
}

/// Reserves `len` bytes of disk for a file, so appends never hit ENOSPC mid-segment.
pub fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an owned, open descriptor; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate: extend the file; space is then claimed as written.
        return file.set_len(len).map_err(|e| Error::io("set_len", path, e));
    }
    Err(Error::io("fallocate", path, e))
}

/// Replaces the small file `path` atomically and durably: written to `path.tmp`, fsynced,
/// renamed over `path`, and the directory fsynced, so a crash leaves the old or the new file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = crate::layout::temporary_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so that a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Gives the calling thread's I/O the idle priority class, so the block layer (mq-deadline,
/// bfq) serves it only when no normal I/O waits. Best effort: an error only costs latency.
pub fn set_io_priority_idle() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set takes integers only; who = 0 means the calling thread.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19; on Linux, nice is per thread).
/// For background work that must not take a core from the writer or the producers when they
/// wake. Best effort: an error only costs latency.
pub fn set_cpu_priority_lowest() {
    // SAFETY: setpriority takes integers only; who = 0 means the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Asks the scheduler for short time slices for the calling thread (`sched_setattr` with
/// `SCHED_OTHER` and a `sched_runtime`: EEVDF's custom slice, Linux 6.12 on; unprivileged).
/// A thread with a shorter slice gets an earlier deadline when it wakes, so it preempts a
/// thread that is using up a longer default slice instead of waiting for that slice to end.
/// For threads that wake often and run briefly (the shard writer). Best effort: on older
/// kernels the call fails or the value is ignored, and only latency suffers.
pub fn set_short_slices(slice: std::time::Duration) {
    /// `struct sched_attr` as of Linux 3.14 (SCHED_ATTR_SIZE_VER0).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    // SAFETY: getpriority takes integers only; who = 0 means the calling thread.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: slice.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr reads `attr.size` bytes from the pointer, a live struct of that
    // size; pid 0 means the calling thread.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0);
    }
}

/// Starts writeback of `len` bytes at `pos` of a file written through the page cache, without
/// waiting (a hint that spreads a large write over time; durability still needs an fsync).
pub fn start_writeback(file: &File, pos: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes an open descriptor (borrowed from `file` for the call) and
    // integers; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            pos as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The size of the largest read buffers kept for reuse (the read-ahead window's).
pub const READ_POOL_BUF_BYTES: usize = 4 << 20;
/// The size of the smallest read buffers kept for reuse; smaller reads get fresh buffers.
pub const READ_POOL_CLASS_MIN: usize = 64 << 10;
/// Buffer sizes kept for reuse: powers of two from the least to the largest.
const READ_POOL_CLASSES: usize =
    (READ_POOL_BUF_BYTES.trailing_zeros() - READ_POOL_CLASS_MIN.trailing_zeros()) as usize + 1;
/// The most bytes of read buffers kept for reuse; more are freed. Bounds the idle memory the
/// pool holds; buffers in use are bounded by the read cache and what readers hold.
const READ_POOL_BYTES_MAX: usize = 32 << 20;

const _: () =
    assert!(READ_POOL_BUF_BYTES.is_power_of_two() && READ_POOL_CLASS_MIN.is_power_of_two());
const _: () = assert!(READ_POOL_CLASS_MIN.is_multiple_of(BLOCK_BYTES));

/// Read buffers whose last share was dropped, by size class, for the next read.
struct ReadPool {
    free: [Vec<AlignedBuf>; READ_POOL_CLASSES],
    /// Bytes of the buffers in `free`.
    bytes: usize,
}

static READ_POOL: std::sync::Mutex<ReadPool> = std::sync::Mutex::new(ReadPool {
    free: [const { Vec::new() }; READ_POOL_CLASSES],
    bytes: 0,
});

/// The pool's size class for a read of `len` bytes: the smallest buffer that holds it, if
/// the pool keeps buffers that size.
fn read_pool_class(len: usize) -> Option<usize> {
    if len > READ_POOL_BUF_BYTES || len <= READ_POOL_CLASS_MIN / 2 {
        return None;
    }
    let size = len.next_power_of_two().max(READ_POOL_CLASS_MIN);
    Some((size.trailing_zeros() - READ_POOL_CLASS_MIN.trailing_zeros()) as usize)
}

/// Owns an aligned buffer for [`shared_bytes`]; hands it back to the read pool when the last
/// `Bytes` sharing it drops.
/// (`None` only while it drops.)
struct SharedBuf(Option<AlignedBuf>);

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        let Some(buf) = self.0.take() else { return };
        let Some(class) = read_pool_class(buf.cap).filter(|&c| READ_POOL_CLASS_MIN << c == buf.cap)
        else {
            return;
        };
        let mut pool = READ_POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.bytes + buf.cap <= READ_POOL_BYTES_MAX {
            pool.bytes += buf.cap;
            pool.free[class].push(buf);
        }
    }
}

/// Bytes owning an aligned buffer (slices of them share it).
pub(crate) fn shared_bytes(buf: AlignedBuf) -> bytes::Bytes {
    bytes::Bytes::from_owner(SharedBuf(Some(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts buffers full of 0xEE in the read pool, as earlier reads leave them.
    fn dirty_pool() {
        dirty_pool_of(READ_POOL_BUF_BYTES);
    }

    /// Puts buffers of `len` bytes full of 0xEE in the read pool.
    fn dirty_pool_of(len: usize) {
        let bufs: Vec<AlignedBuf> = (0..READ_POOL_BYTES_MAX / len)
            .map(|_| {
                let mut b = AlignedBuf::for_read(len);
                b.fill(0xEE);
                b
            })
            .collect();
        drop(bufs.into_iter().map(shared_bytes).collect::<Vec<_>>());
    }

    /// A file of one block of 7s; reads of a pooled size run past its end.
    fn one_block_file(dir: &Path) -> (std::path::PathBuf, Arc<File>) {
        let path = dir.join("0.seg");
        std::fs::write(&path, [7u8; BLOCK_BYTES]).unwrap();
        (path.clone(), Arc::new(File::open(&path).unwrap()))
    }

    fn assert_block_then_zeros(buf: &[u8], len: usize) {
        assert_eq!(buf.len(), len);
        assert!(buf[..BLOCK_BYTES].iter().all(|&b| b == 7));
        let stale = buf[BLOCK_BYTES..].iter().position(|&b| b != 0);
        assert_eq!(
            stale, None,
            "bytes past the end of the file must read as zeros"
        );
    }

    /// A pooled read buffer holds an earlier read's bytes; whichever way it is read into,
    /// what lies past the end of the file reads as zeros, never as the earlier bytes (a scan
    /// of the log would take them for frames).
    #[test]
    fn reads_into_reused_buffers_see_zeros_past_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = one_block_file(dir.path());
        let len = READ_POOL_BUF_BYTES - BLOCK_BYTES;
        dirty_pool();
        let buf = read_aligned(&file, &path, 0, len).unwrap();
        assert_block_then_zeros(&buf, len);
        let devices: Vec<Box<dyn Device>> = vec![
            Box::new(portable::PortableDevice::default()),
            Box::new(uring::UringDevice::new(4).unwrap()),
        ];
        for mut device in devices {
            dirty_pool();
            device.read(&file, 0, AlignedBuf::for_read(len), 9);
            let mut done = Vec::new();
            while done.is_empty() {
                device.wait(&mut done, true, None).unwrap();
            }
            done[0].result.as_ref().unwrap();
            assert_block_then_zeros(done[0].buf.as_ref().unwrap(), len);
        }
    }

    /// A read takes the smallest pooled size that holds it; reads too small or too large for
    /// the pool take buffers of their own size.
    #[test]
    fn reads_take_the_smallest_pooled_buffer_that_holds_them() {
        assert_eq!(read_pool_class(READ_POOL_CLASS_MIN / 2), None);
        assert_eq!(
            read_pool_class(READ_POOL_CLASS_MIN / 2 + BLOCK_BYTES),
            Some(0)
        );
        assert_eq!(read_pool_class(READ_POOL_CLASS_MIN), Some(0));
        assert_eq!(read_pool_class(READ_POOL_CLASS_MIN + BLOCK_BYTES), Some(1));
        assert_eq!(
            read_pool_class(READ_POOL_BUF_BYTES),
            Some(READ_POOL_CLASSES - 1)
        );
        assert_eq!(read_pool_class(READ_POOL_BUF_BYTES + BLOCK_BYTES), None);
        for len in [3 * BLOCK_BYTES, 40 << 10, 200 << 10, 3 << 20, 5 << 20] {
            let buf = AlignedBuf::for_read(len);
            assert_eq!(buf.len(), len);
            let want = match read_pool_class(len) {
                Some(c) => READ_POOL_CLASS_MIN << c,
                None => len,
            };
            assert_eq!(buf.cap, want, "a read of {len}");
        }
        // A smaller class reused holds earlier bytes too: past the file, zeros.
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = one_block_file(dir.path());
        dirty_pool_of(256 << 10);
        let len = 200 << 10;
        assert_block_then_zeros(&read_aligned(&file, &path, 0, len).unwrap(), len);
    }

    /// The thread's slice as the scheduler reports it, where it does (`se.slice`, Linux 6.6 on).
    fn own_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// The writer's io_uring workers (its fsyncs) inherit its slice, as any thread it starts.
    #[test]
    fn short_slices_apply_to_the_calling_thread_and_threads_it_starts() {
        let outside = own_slice();
        std::thread::spawn(|| {
            let Some(before) = own_slice() else {
                eprintln!("skipped: this kernel does not report se.slice");
                return;
            };
            super::set_short_slices(std::time::Duration::from_micros(200));
            let after = own_slice().expect("reported before");
            if after == before && before != 200_000 {
                eprintln!("skipped: this kernel ignores custom slices (before 6.12)");
                return;
            }
            assert_eq!(after, 200_000);
            let started = std::thread::spawn(own_slice).join().unwrap();
            assert_eq!(started, Some(200_000));
        })
        .join()
        .unwrap();
        assert_eq!(own_slice(), outside, "other threads keep theirs");
    }
}
