//! Acknowledgements under stress: a tiny ring (8 records) whose slots are reused constantly,
//! while ack handles are held, resolved out of order, dropped unresolved, and moved to other
//! threads. Every resolved ack must name exactly its record's offset (one producer, one
//! partition: the i-th record sent gets offset i).

mod common;

use floodgate::Offset;
use std::time::Duration;

use common::{Rng, small_config, test_dir};
use floodgate::{Ack, IoBackend, Log, Record, TopicConfig};

#[test]
fn acks_resolve_to_their_own_offsets_while_slots_are_reused() {
    for backend in [IoBackend::IoUring, IoBackend::Portable] {
        let dir = test_dir("acks");
        let log = Log::open(small_config(dir.path(), backend).ring_records(8)).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let mut rng = Rng::new(0x1234_5678_9abc_def1);
        let mut held: Vec<(u64, Ack)> = Vec::new();
        let mut elsewhere = Vec::new();
        for i in 0..20_000u64 {
            let ack = producer.send("t", Record::new(&i.to_le_bytes())).unwrap();
            match rng.below(10) {
                0..=3 => drop(ack),
                4..=7 => held.push((i, ack)),
                _ => assert_eq!(ack.wait().unwrap().offset, Offset(i)),
            }
            // Resolve a random held ack now and then, out of order.
            if !held.is_empty() && rng.below(3) == 0 {
                let (n, ack) = held.swap_remove(rng.below(held.len() as u64) as usize);
                assert_eq!(
                    ack.wait().unwrap().offset,
                    Offset(n),
                    "held ack of record {n}"
                );
            }
            // Hand a batch of held acks to another thread to wait on.
            if held.len() > 500 {
                let batch: Vec<(u64, Ack)> = held.drain(..250).collect();
                elsewhere.push(std::thread::spawn(move || {
                    for (n, ack) in batch.into_iter().rev() {
                        let at = ack.wait_timeout(Duration::from_secs(60)).unwrap().unwrap();
                        assert_eq!(at.offset, Offset(n), "moved ack of record {n}");
                    }
                }));
            }
        }
        for (n, ack) in held.into_iter().rev() {
            assert_eq!(ack.wait().unwrap().offset, Offset(n));
        }
        for t in elsewhere {
            t.join().unwrap();
        }
        // And what was stored is what was sent, in order. The newest records' acks may have
        // been dropped unresolved, so nothing above waited for them to become durable: wait for
        // them to be readable (a read at once found 19,999 records on a busy machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.offsets("t", 0).unwrap().1 < Offset(20_000) {
            assert!(
                std::time::Instant::now() < deadline,
                "records never became readable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let records = log.read("t", 0, Offset(0), 1 << 30).unwrap();
        assert_eq!(records.len(), 20_000);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.value.as_deref(), Some(&(i as u64).to_le_bytes()[..]));
        }
    }
}

#[test]
fn many_producers_many_shards_every_ack_unique_and_dense() {
    let dir = test_dir("many");
    let log = Log::open(small_config(dir.path(), IoBackend::IoUring).shards(3)).unwrap();
    log.create_topic("t", TopicConfig::new(7)).unwrap();
    let per_producer = 3000u64;
    let results: Vec<Vec<(u32, u64, u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                let log = &log;
                s.spawn(move || {
                    let mut producer = log.producer();
                    let mut acks = Vec::new();
                    for i in 0..per_producer {
                        let v = [k.to_le_bytes(), i.to_le_bytes()].concat();
                        let key = (k * per_producer + i).to_le_bytes();
                        let r = if i % 2 == 0 {
                            Record::new(&v).key(&key)
                        } else {
                            Record::new(&v)
                        };
                        acks.push((k, i, producer.send("t", r).unwrap()));
                    }
                    acks.into_iter()
                        .map(|(k, i, a)| {
                            let at = a.wait().unwrap();
                            (at.partition, at.offset.0, k, i)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(u32, u64, u64, u64)> = results.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup_by_key(|(p, o, _, _)| (*p, *o));
    assert_eq!(all.len() as u64, 4 * per_producer, "every ack is unique");
    for p in 0..7u32 {
        let mine: Vec<_> = all.iter().filter(|r| r.0 == p).collect();
        let (_, next) = log.offsets("t", p).unwrap();
        assert_eq!(next, Offset(mine.len() as u64), "partition {p} is dense");
        let records = log.read("t", p, Offset(0), 1 << 30).unwrap();
        for (r, (_, offset, k, i)) in records.iter().zip(&mine) {
            assert_eq!(r.offset, Offset(*offset));
            let v = [k.to_le_bytes(), i.to_le_bytes()].concat();
            assert_eq!(r.value.as_deref(), Some(&v[..]), "payload intact");
        }
        // Each producer's records keep their send order within a partition.
        for k in 0..4u64 {
            let seqs: Vec<u64> = records
                .iter()
                .map(|r| r.value.as_ref().unwrap())
                .filter(|v| v[..8] == k.to_le_bytes())
                .map(|v| u64::from_le_bytes(v[8..16].try_into().unwrap()))
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "producer {k} order in {p}"
            );
        }
    }
}
