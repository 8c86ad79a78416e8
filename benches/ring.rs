//! The producer → writer hand-off: `rtrb` SPSC rings of records the size of floodgate's
//! `Pending` (a slot, a timestamp and a record buffer), pushed one at a time (as `send` does)
//! and popped in chunks (as the writer drains a ring), on one thread and across two threads.
//! Throughput is in records.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// The shape of a queued record: its partition's slot, timestamp and encoded tail.
struct Item {
    slot: u32,
    timestamp: i64,
    tail: Vec<u8>,
}

/// Pushes `n` items one by one and pops them in chunks of `chunk`; returns the sum of slots.
fn round_trip(
    tx: &mut rtrb::Producer<Item>,
    rx: &mut rtrb::Consumer<Item>,
    n: usize,
    chunk: usize,
) -> u64 {
    let mut sum = 0u64;
    let mut sent = 0;
    while sent < n {
        while sent < n && tx.slots() > 0 {
            let item = Item {
                slot: (sent % 8) as u32,
                timestamp: sent as i64,
                tail: Vec::new(),
            };
            tx.push(item).expect("a free slot");
            sent += 1;
        }
        while let Ok(c) = rx.read_chunk(rx.slots().min(chunk)) {
            if c.is_empty() {
                break;
            }
            for item in c {
                sum += u64::from(item.slot) + (item.timestamp as u64 & 1) + item.tail.len() as u64;
            }
        }
    }
    sum
}

fn expected(n: usize) -> u64 {
    (0..n).map(|i| (i % 8) as u64 + (i as u64 & 1)).sum()
}

fn bench_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    let n = 16_384;
    for chunk in [1usize, 64] {
        let (mut tx, mut rx) = rtrb::RingBuffer::new(16_384);
        // Checked before timing: every item arrives once.
        assert_eq!(round_trip(&mut tx, &mut rx, n, chunk), expected(n));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("one_thread_pop_chunk", chunk), |b| {
            b.iter(|| black_box(round_trip(&mut tx, &mut rx, n, chunk)))
        });
    }
    // Across threads: a producer thread pushes, this thread pops in chunks of 64.
    let total = 1 << 20;
    let across = || {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Item>::new(16_384);
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..total {
                    let mut item = Item {
                        slot: (i % 8) as u32,
                        timestamp: i as i64,
                        tail: Vec::new(),
                    };
                    loop {
                        match tx.push(item) {
                            Ok(()) => break,
                            Err(rtrb::PushError::Full(back)) => {
                                item = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
            });
            let mut sum = 0u64;
            let mut got = 0;
            while got < total {
                if let Ok(c) = rx.read_chunk(rx.slots().min(64)) {
                    for item in c {
                        sum += u64::from(item.slot) + (item.timestamp as u64 & 1);
                        got += 1;
                    }
                }
            }
            sum
        })
    };
    assert_eq!(across(), expected(total));
    group.throughput(Throughput::Elements(total as u64));
    group.sample_size(10);
    group.bench_function("two_threads_pop_chunk_64", |b| {
        b.iter(|| black_box(across()))
    });
    group.finish();
}

criterion_group!(benches, bench_ring);
criterion_main!(benches);
