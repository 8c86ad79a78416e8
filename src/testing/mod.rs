//! Fault injection for tests, compiled only with the `testing` feature (and in the library's
//! own unit tests): [`IoFaults`] stalls, fails or splits a shard writer's I/O and can make its
//! thread panic; [`IoRecorder`] keeps every write and flush, so a test can build the disk image
//! a power loss would leave at any point. A configuration carries them through
//! [`crate::Config::testing_io_faults`] and [`crate::Config::testing_io_recorder`]; a build
//! without the feature has neither, and its devices take no test branch.

mod faults;

pub use faults::{FaultyDevice, IoEvent, IoFaults, IoRecorder, RecordingDevice};
