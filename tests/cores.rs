//! Where the library's threads run: each shard writer on its core, chosen among the cores the
//! opening thread may use (as `taskset` or a cpuset leave them); the shard's helper thread on
//! the other cores. One test in its own binary, so no other log's threads are running.

use std::collections::BTreeSet;

use floodgate::cores;
use floodgate::{Config, Log};
use nix::sched::{CpuSet, sched_getaffinity};
use nix::unistd::Pid;

/// The cores each of this process's threads named `name` may run on.
fn affinities(name: &str) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        let tid: i32 = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let set = sched_getaffinity(Pid::from_raw(tid)).unwrap();
        found.push(
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap())
                .collect(),
        );
    }
    found
}

/// Opens a log of `shards` from a thread that may use only `allowed`, and checks where its
/// threads run.
fn check(allowed: Vec<usize>, shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let expected = allowed.clone();
    std::thread::spawn(move || {
        cores::pin(&expected);
        assert_eq!(cores::allowed(), expected);
        let log = Log::open(
            Config::new(dir.path())
                .shards(shards)
                .segment_bytes(16 << 20),
        )
        .unwrap();
        let writers = log.writer_cores().to_vec();
        let others = log.other_cores().to_vec();
        // Writers count down from the last allowed core, one each while cores last.
        let want: BTreeSet<usize> = expected.iter().rev().take(shards).copied().collect();
        assert_eq!(writers, want.iter().copied().collect::<Vec<_>>());
        assert_eq!(others, cores::others(&expected, &writers));
        let shard_threads = affinities("floodgate-shard");
        assert_eq!(shard_threads.len(), shards);
        for a in &shard_threads {
            assert_eq!(a.len(), 1, "a writer is pinned to one core: {a:?}");
            assert!(writers.contains(&a[0]));
        }
        let helpers = affinities("floodgate-prep-");
        assert_eq!(helpers.len(), shards);
        for a in &helpers {
            let want = if others.is_empty() {
                &expected
            } else {
                &others
            };
            assert_eq!(a, want, "helpers keep off the writers' cores");
        }
        drop(log);
        let unpinned = Log::open(Config::new(dir.path()).pin_threads(false)).unwrap();
        assert!(unpinned.writer_cores().is_empty());
        assert_eq!(unpinned.other_cores(), &expected[..]);
        for a in affinities("floodgate-shard") {
            assert_eq!(a, expected);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn writers_take_the_last_allowed_cores_and_helpers_the_rest() {
    let all = cores::allowed();
    check(all.clone(), 1);
    // A process confined to its last core (taskset -c N): the writer goes there, not to
    // core 0, and the helper shares it.
    check(vec![*all.last().unwrap()], 1);
    if all.len() >= 3 {
        check(all.clone(), 2);
    }
}
