//! What stops a command: the library's error, told in the command line's terms where the
//! library's own message names a `Config` method, or the tool's own message.

use std::fmt;

/// A command's failure.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The log refused or failed.
    Log(floodgate::Error),
    /// A run found errors, or a file or an argument was wrong: the message says which.
    Failed(String),
}

/// The result of a command or a step of one.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

impl From<floodgate::Error> for CliError {
    fn from(e: floodgate::Error) -> CliError {
        CliError::Log(e)
    }
}

impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError::Failed(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> CliError {
        CliError::Failed(message.to_owned())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Log(floodgate::Error::IoUringUnavailable { reason }) => write!(
                f,
                "io_uring is unavailable: {reason}; run with --backend portable (pwrite + \
                 fdatasync), or enable io_uring (sysctl kernel.io_uring_disabled=0, the \
                 container's seccomp profile)"
            ),
            CliError::Log(floodgate::Error::DirectIoUnsupported { path, source }) => write!(
                f,
                "the file system of {} does not support O_DIRECT ({source}); give --dir on a \
                 disk-backed file system (ext4, xfs), or run with --backend portable",
                path.display()
            ),
            // The library names the Config call; the command line has a command for it.
            CliError::Log(e) => write!(
                f,
                "{}",
                e.to_string().replace(
                    "Open with Config::repair_truncate_damaged(true) to cut the log here",
                    "`floodgate repair DIR --dry-run` says what repair would cut and drop; \
                     without --dry-run it cuts the log there"
                )
            ),
            CliError::Failed(message) => f.write_str(message),
        }
    }
}
