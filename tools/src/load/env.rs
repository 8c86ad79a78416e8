//! The machine a run measured: kernel, file system, block device, CPU time.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

/// User plus system CPU time of this process so far (all threads, the library's included).
pub(crate) fn process_cpu() -> Duration {
    cpu_of(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// User plus system CPU time of the calling thread so far: what a consumer itself spends,
/// apart from the library's background threads and the host's noise in wall time.
pub(crate) fn thread_cpu() -> Duration {
    cpu_of(nix::sys::resource::UsageWho::RUSAGE_THREAD)
}

fn cpu_of(who: nix::sys::resource::UsageWho) -> Duration {
    let usage = nix::sys::resource::getrusage(who).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

/// The file system type of the directory holding `path`.
pub fn fs_type(path: &Path) -> String {
    use nix::sys::statfs::statfs;
    let probe = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match statfs(probe) {
        Ok(s) => match s.filesystem_type().0 {
            0xEF53 => "ext4".into(),
            0x5846_5342 => "xfs".into(),
            0x0102_1994 => "tmpfs".into(),
            0x8584_58F6 => "ramfs".into(),
            0x9123_683E => "btrfs".into(),
            0x2FC1_2FC1 => "zfs".into(),
            0x794C_7630 => "overlayfs".into(),
            other => format!("fs-magic-{other:#x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// Machine facts printed with every result.
pub fn env_json(dir: &Path, fs: &str) -> serde_json::Value {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "kernel": kernel,
        "cpu_model": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "file_system": fs,
        "device": block_device(dir),
        "data_dir": dir.display().to_string(),
    })
}

/// The block device holding `dir` (`vda`, `nvme0n1p2`), from its device number, or "".
pub(crate) fn block_device(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Some(dev) = dir
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
    else {
        return String::new();
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
        })
        .unwrap_or_default()
}
