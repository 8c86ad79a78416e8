//! Which cores threads run on: the cores this process may use, and pinning to some of them.
//!
//! Shard writers are pinned one to a core (see [`crate::Config::writer_cores`]). A shard's
//! helper thread (zeroing segments, writing index files) keeps off the writers' cores when
//! there are others: whatever runs on a writer's core delays its wake-ups, and the kernel's
//! per-core block work there (the disk's interrupt, the direct-I/O completion worker) cannot
//! move elsewhere. [`crate::Log::other_cores`] tells an application which cores that leaves
//! for its own threads. The io_uring workers that run the writer's fsyncs are left where the
//! scheduler puts them: kept off the writer's core (`IORING_REGISTER_IOWQ_AFF`), every flush
//! would cost a wake-up across cores (docs/TUNING.md, "The machine").

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The cores the calling thread may run on (its affinity mask), in increasing order; every
/// core numbered below the machine's count if the mask cannot be read.
pub fn allowed() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Restricts the calling thread to `cores`. Best effort: nothing happens if `cores` is empty
/// or names no core the process may use.
pub fn pin(cores: &[usize]) {
    if let Some(set) = cpu_set(cores) {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// `cores` as a kernel CPU set, or None if it is empty or holds a core out of range.
fn cpu_set(cores: &[usize]) -> Option<CpuSet> {
    if cores.is_empty() {
        return None;
    }
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c).ok()?;
    }
    Some(set)
}

/// The cores of `allowed` not in `taken`.
pub fn others(allowed: &[usize], taken: &[usize]) -> Vec<usize> {
    allowed
        .iter()
        .copied()
        .filter(|c| !taken.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_runs_only_where_it_was_pinned_and_others_exclude_the_taken() {
        let all = allowed();
        assert!(!all.is_empty());
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let last = *all.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin(&[last]);
            allowed()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last]);
        // An empty or impossible set leaves the thread as it was.
        let kept = std::thread::spawn(|| {
            pin(&[]);
            pin(&[usize::MAX]);
            allowed()
        })
        .join()
        .unwrap();
        assert_eq!(kept, all);
        assert_eq!(others(&[0, 1, 2, 5], &[1, 5]), vec![0, 2]);
        assert_eq!(others(&[3], &[3]), Vec::<usize>::new());
    }
}
