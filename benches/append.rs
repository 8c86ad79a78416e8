//! One shard, end to end: a producer sends a batch of records and waits for every
//! acknowledgement (Sync durability: written and flushed). Measures acknowledged records per
//! second through ring, framing, io_uring write and fdatasync, and the read path back.
//! The data directory is under target/, on the disk the build runs on (never tmpfs).

use floodgate::Offset;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use floodgate::{Config, Log, Record, TopicConfig};

fn bench_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for size in [100usize, 4096] {
        let dir = bench_dir();
        let log = Log::open(Config::new(dir.path()).segment_bytes(256 << 20)).unwrap();
        log.create_topic("b", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let value = vec![0x5Au8; size];
        let batch = 10_000u64;
        // Check the path is right before timing it.
        let at = producer
            .send("b", Record::new(&value))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            log.read("b", 0, at.offset, 1 << 20).unwrap()[0]
                .value
                .as_deref(),
            Some(&value[..])
        );
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new("records", format!("{size}B")), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let acks: Vec<_> = (0..batch)
                        .map(|_| producer.send("b", Record::new(&value)).unwrap())
                        .collect();
                    for a in acks {
                        a.wait().unwrap();
                    }
                }
                start.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("read_back", format!("{size}B")), |b| {
            b.iter(|| {
                let records = log.read("b", 0, Offset(0), batch as usize * size).unwrap();
                assert!(!records.is_empty());
                records.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
