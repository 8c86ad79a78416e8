//! The portable device: `pwrite` + `fdatasync` (and `pread`), done synchronously on the shard thread at
//! submission. Works on any file system and without io_uring; the writer cannot overlap the
//! next commit with the disk, so it is slower.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::{AlignedBuf, Completion, Device};
use crate::error::Result;

/// Synchronous [`Device`].
#[derive(Default)]
pub struct PortableDevice {
    finished: Vec<Completion>,
}

impl Device for PortableDevice {
    fn write(&mut self, file: &Arc<File>, pos: u64, buf: AlignedBuf, len: usize, token: u64) {
        let result = file.write_all_at(&buf[..len], pos);
        self.finished.push(Completion {
            token,
            result,
            buf: Some(buf),
        });
    }

    fn flush(&mut self, file: &Arc<File>, token: u64) {
        self.finished.push(Completion {
            token,
            result: file.sync_data(),
            buf: None,
        });
    }

    fn read(&mut self, file: &Arc<File>, pos: u64, mut buf: AlignedBuf, token: u64) {
        let mut done = 0;
        let result = loop {
            match file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => {
                    buf.zero_from(done);
                    break Ok(());
                }
                Ok(n) if done + n == buf.len() => break Ok(()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.finished.push(Completion {
            token,
            result,
            buf: Some(buf),
        });
    }

    fn in_flight(&self) -> usize {
        self.finished.len()
    }

    fn wait(&mut self, out: &mut Vec<Completion>, _: bool, _: Option<Duration>) -> Result<()> {
        out.append(&mut self.finished);
        Ok(())
    }
}
