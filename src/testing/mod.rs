//! Fault injection for tests, compiled only with the `testing` feature (and in the library's
//! own unit tests): [`IoFaults`] stalls, fails or splits a shard writer's I/O and can make its
//! thread panic; [`IoRecorder`] keeps every write and flush, so a test can build the disk image
//! a power loss would leave at any point. A configuration carries them through
//! [`crate::Config::testing_io_faults`] and [`crate::Config::testing_io_recorder`]; a build
//! without the feature has neither, and its devices take no test branch.

mod faults;

pub use faults::{FaultyDevice, IoEvent, IoFaults, IoRecorder, RecordingDevice};

use std::sync::Arc;

use crate::error::Result;
use crate::io::{self, Device, IoBackend};

/// Test hooks a configuration hands to each shard writer's device: injected faults and a
/// recorder of every write and flush. Empty unless the `testing` feature is on.
#[derive(Debug, Clone, Default)]
pub(crate) struct IoHooks {
    pub faults: Option<Arc<IoFaults>>,
    pub recorder: Option<Arc<IoRecorder>>,
}

/// A shard writer's device, wrapped in the test hooks that are set.
pub(crate) fn device(
    backend: IoBackend,
    queue_depth: u32,
    hooks: &IoHooks,
) -> Result<Box<dyn Device>> {
    let split = hooks.faults.as_ref().filter(|f| f.short_writes_on());
    let mut device: Box<dyn Device> = match (backend, split) {
        (IoBackend::IoUring, Some(f)) => {
            let mut uring = io::uring::UringDevice::new(queue_depth)?;
            uring.split_writes(f.short_writes_counter());
            Box::new(uring)
        }
        _ => io::device(backend, queue_depth)?,
    };
    if let Some(f) = &hooks.faults {
        device = Box::new(FaultyDevice::new(device, Arc::clone(f)));
    }
    if let Some(r) = &hooks.recorder {
        device = Box::new(RecordingDevice::new(device, Arc::clone(r)));
    }
    Ok(device)
}
