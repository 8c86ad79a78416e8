//! The device's own sequential bandwidth on a directory's file system, measured the way fio
//! measures it (O_DIRECT, 1 MiB blocks, 4 in flight, io_uring, into a fallocated file), so a
//! load's MB/s can be given as a ratio of it in the same run (the load tool's
//! `--compare-device`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{AlignedBuf, Completion, IoBackend};
use crate::error::{Error, Result};

const BLOCK: usize = 1 << 20;
const _: () = assert!(BLOCK.is_multiple_of(crate::segment::format::BLOCK_BYTES));
const DEPTH: usize = 4;

/// Sequential O_DIRECT write (then one fdatasync) and read bandwidth of a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceBaseline {
    /// Write bandwidth, MB/s (10^6 bytes), the closing fdatasync included.
    pub write_mb_per_s: f64,
    /// Read bandwidth, MB/s.
    pub read_mb_per_s: f64,
}

/// Writes and reads back `bytes` (rounded up to 1 MiB) in a scratch file in `dir`, removed
/// afterwards.
pub fn measure_device(dir: &Path, bytes: u64) -> Result<DeviceBaseline> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let path = dir.join("device-baseline.tmp");
    let outcome = run(&path, bytes.div_ceil(BLOCK as u64).max(1));
    let _ = std::fs::remove_file(&path);
    outcome
}

fn run(path: &Path, blocks: u64) -> Result<DeviceBaseline> {
    let file = Arc::new(super::open_segment(path, IoBackend::IoUring, true, true)?);
    super::preallocate(&file, path, blocks * BLOCK as u64)?;
    let mut device = super::device(IoBackend::IoUring, DEPTH as u32)?;
    let mut spare: Vec<AlignedBuf> = (0..DEPTH)
        .map(|i| {
            let mut b = AlignedBuf::new(BLOCK);
            b.fill(i as u8 + 1);
            b
        })
        .collect();
    // Keeps DEPTH operations in flight over every block; `submit(block, buf)` starts one.
    let mut pass = |write: bool| -> Result<f64> {
        let start = Instant::now();
        let mut next = 0u64;
        let mut done: Vec<Completion> = Vec::new();
        while next < blocks || device.in_flight() > 0 {
            while next < blocks
                && let Some(buf) = spare.pop()
            {
                let pos = next * BLOCK as u64;
                if write {
                    device.write(&file, pos, buf, BLOCK, next);
                } else {
                    device.read(&file, pos, buf, next);
                }
                next += 1;
            }
            done.clear();
            device.wait(&mut done, true, None)?;
            for c in done.drain(..) {
                let op = if write { "write" } else { "read" };
                c.result.map_err(|e| Error::io(op, path, e))?;
                spare.push(c.buf.expect("reads and writes return their buffer"));
            }
        }
        if write {
            device.flush(&file, u64::MAX);
            device.wait(&mut done, true, None)?;
            for c in done.drain(..) {
                c.result.map_err(|e| Error::io("fdatasync", path, e))?;
            }
        }
        Ok((blocks * BLOCK as u64) as f64 / 1e6 / start.elapsed().as_secs_f64())
    };
    let write_mb_per_s = pass(true)?;
    let read_mb_per_s = pass(false)?;
    Ok(DeviceBaseline {
        write_mb_per_s,
        read_mb_per_s,
    })
}
