//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test crate uses its own subset of these helpers"
)]

use floodgate::Offset;
use std::path::PathBuf;

use floodgate::{Config, IoBackend};

/// Both I/O backends; every integration test runs against each.
pub const BACKENDS: [IoBackend; 2] = [IoBackend::IoUring, IoBackend::Portable];

/// A fresh directory on the build's file system (not /tmp, which may be tmpfs and refuse
/// O_DIRECT).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// A configuration with small segments and commits, so tests roll segments quickly.
pub fn small_config(dir: &std::path::Path, backend: IoBackend) -> Config {
    Config::new(dir)
        .io_backend(backend)
        .segment_bytes(256 << 10)
        .commit_bytes_max(64 << 10)
        .record_bytes_max(16 << 10)
        .ring_records(1024)
        .pin_threads(false)
}

/// Creates `topic` with `partitions` partitions and sends it `partitions * per` records of 100
/// bytes, record `i` to partition `i % partitions` with `i` in its first 8 bytes (so partition
/// `p`'s offset `o` holds `o * partitions + p`); waits for their acks. Returns the shard's
/// bytes written.
pub fn produce_numbered(log: &floodgate::Log, topic: &str, partitions: u32, per: u64) -> u64 {
    log.create_topic(topic, floodgate::TopicConfig::new(partitions))
        .unwrap();
    let mut producer = log.producer();
    let mut acks = Vec::new();
    for i in 0..u64::from(partitions) * per {
        let mut v = [0u8; 100];
        v[..8].copy_from_slice(&i.to_le_bytes());
        let r = floodgate::Record::new(&v).partition((i % u64::from(partitions)) as u32);
        producer.send_batch(topic, [r], &mut acks).unwrap();
    }
    for a in acks {
        a.wait().unwrap();
    }
    log.stats()[0].write_bytes
}

/// Polls `consumer` of a topic [`produce_numbered`] filled (`partitions` partitions) until it
/// has handed out `want` records, partition `p`'s from offset `next[p]` on: each once, in order
/// per partition, holding the number its offset says. Moves `next` on.
pub fn poll_numbered(
    consumer: &mut floodgate::Consumer,
    partitions: u32,
    next: &mut [u64],
    want: u64,
) {
    let mut got = 0u64;
    while got < want {
        let records = consumer.poll(std::time::Duration::from_secs(5)).unwrap();
        assert!(!records.is_empty(), "{got} of {want} records");
        for r in records {
            check_numbered(&r, partitions, next);
            got += 1;
        }
    }
}

/// Checks that `r`, of a topic [`produce_numbered`] filled (`partitions` partitions), is its
/// partition's record at offset `next[p]`, holding the number that offset says; moves `next`
/// on.
pub fn check_numbered(r: &floodgate::ConsumerRecord, partitions: u32, next: &mut [u64]) {
    let p = r.partition as usize;
    assert_eq!(r.record.offset, Offset(next[p]), "partition {p}");
    let v = r.record.value.as_deref().unwrap();
    let i = u64::from_le_bytes(v[..8].try_into().unwrap());
    assert_eq!(i, next[p] * u64::from(partitions) + p as u64);
    next[p] += 1;
}

/// A deterministic payload for record `i` of `len` bytes.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The segment files of shard `shard`, in order.
pub fn segments(dir: &std::path::Path, shard: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("shard-{shard:03}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A seeded PRNG (xorshift64*) for tests that print their seed and replay from it.
pub struct Rng(pub u64);

impl Rng {
    /// A generator; a zero seed is replaced, as xorshift needs a non-zero state.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Copies a log directory (without its lock file): a crash image to open.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "LOCK" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// A test mount, unmounted when dropped.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Mounts a file system of type `fs` (with mount `options`, if any) at `at`; `None` where this
/// process may not mount (it needs root), after saying the test skips.
pub fn mount(fs: &str, options: Option<&str>, at: &std::path::Path) -> Option<Mount> {
    let mut cmd = std::process::Command::new("mount");
    cmd.args(["-t", fs]);
    if let Some(o) = options {
        cmd.args(["-o", o]);
    }
    let mounted = (cmd.arg(fs).arg(at))
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a {fs} here (needs root)");
        return None;
    }
    Some(Mount(at.to_owned()))
}

/// Every record of partition 0 of topic "t", in order: each value. Offsets are dense up to
/// the records' end (a repair's gap may follow them, which reads as nothing).
pub fn read_values(log: &floodgate::Log) -> Vec<Vec<u8>> {
    let (_, next) = log.offsets("t", 0).unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < next.0 {
        let records = log.read("t", 0, Offset(out.len() as u64), 1 << 20).unwrap();
        if records.is_empty() {
            break;
        }
        for r in records {
            assert_eq!(r.offset, Offset(out.len() as u64), "dense offsets");
            out.push(r.value.unwrap().to_vec());
        }
    }
    out
}

/// Shard 0's checkpoint file.
pub fn checkpoint_file(dir: &std::path::Path) -> PathBuf {
    floodgate::layout::checkpoint_path(&floodgate::layout::shard_dir(dir, 0))
}

/// The id of topic `name` in the log's metadata file (the id its frames carry).
pub fn topic_id(dir: &std::path::Path, name: &str) -> u32 {
    let meta = std::fs::read(dir.join("meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    let topics = meta["topics"].as_array().unwrap();
    let topic = topics.iter().find(|t| t["name"] == name).unwrap();
    topic["id"].as_u64().unwrap() as u32
}
