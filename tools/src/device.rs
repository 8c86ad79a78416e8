//! `--compare-device`: the device's own sequential bandwidth on the data directory's file
//! system, measured the way fio measures it (O_DIRECT, 1 MiB blocks, 4 in flight, io_uring,
//! into a fallocated file), so the load's MB/s can be given as a ratio of it in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use floodgate::IoBackend;
use floodgate::io::{self, AlignedBuf, Completion};

const BLOCK: usize = 1 << 20;
const DEPTH: usize = 4;

/// Sequential O_DIRECT write (then one fdatasync) and read bandwidth, MB/s.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub write_mb_per_s: f64,
    pub read_mb_per_s: f64,
}

/// Writes and reads back `bytes` (rounded up to 1 MiB) in a scratch file in `dir`.
pub fn measure(dir: &Path, bytes: u64) -> Result<Baseline, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("device-baseline.tmp");
    let outcome = run(&path, bytes.div_ceil(BLOCK as u64).max(1));
    let _ = std::fs::remove_file(&path);
    outcome
}

fn run(path: &Path, blocks: u64) -> Result<Baseline, String> {
    let err = |e: floodgate::Error| e.to_string();
    let file = Arc::new(io::open_segment(path, IoBackend::IoUring, true, true).map_err(err)?);
    io::preallocate(&file, path, blocks * BLOCK as u64).map_err(err)?;
    let mut device = io::device(IoBackend::IoUring, DEPTH as u32, None, None).map_err(err)?;
    let mut spare: Vec<AlignedBuf> = (0..DEPTH)
        .map(|i| {
            let mut b = AlignedBuf::new(BLOCK);
            b.fill(i as u8 + 1);
            b
        })
        .collect();
    // Keeps DEPTH operations in flight over every block; `submit(block, buf)` starts one.
    let mut pass = |write: bool| -> Result<f64, String> {
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
            device.wait(&mut done, true, None).map_err(err)?;
            for c in done.drain(..) {
                c.result.map_err(|e| format!("{}: {e}", path.display()))?;
                spare.push(c.buf.expect("reads and writes return their buffer"));
            }
        }
        if write {
            device.flush(&file, u64::MAX);
            device.wait(&mut done, true, None).map_err(err)?;
            for c in done.drain(..) {
                c.result.map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok((blocks * BLOCK as u64) as f64 / 1e6 / start.elapsed().as_secs_f64())
    };
    let write_mb_per_s = pass(true)?;
    let read_mb_per_s = pass(false)?;
    Ok(Baseline {
        write_mb_per_s,
        read_mb_per_s,
    })
}
