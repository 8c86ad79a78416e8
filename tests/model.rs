//! A seeded simulation against an in-memory model: random sends (keys, null values, headers,
//! explicit timestamps, several topics and partitions), reopens (switching I/O backend, since
//! both share one on-disk format) and reads at random offsets and sizes. A failure prints its
//! seed; `FLOODGATE_SEED=<seed> cargo test --test model` replays it.

mod common;

use common::{Rng, small_config, test_dir};
use floodgate::Offset;
use floodgate::{Error, IoBackend, Log, Record, StoredRecord, TopicConfig};

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ModelRecord {
    fn matches(&self, r: &StoredRecord) -> bool {
        let headers: Vec<(String, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map(|b| b.to_vec())))
            .collect();
        r.timestamp == self.timestamp
            && r.key.as_deref() == self.key.as_deref()
            && r.value.as_deref() == self.value.as_deref()
            && headers == self.headers
    }
}

const TOPICS: [(&str, u32); 2] = [("alpha", 3), ("beta", 1)];

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = test_dir("model");
    let backends = [IoBackend::IoUring, IoBackend::Portable];
    let mut backend = backends[rng.below(2) as usize];
    let mut log = Log::open(small_config(dir.path(), backend)).unwrap();
    let mut model: Vec<Vec<Vec<ModelRecord>>> = Vec::new();
    for (name, partitions) in TOPICS {
        log.create_topic(name, TopicConfig::new(partitions))
            .unwrap();
        model.push(vec![Vec::new(); partitions as usize]);
    }
    let mut clock = 1_700_000_000_000i64;
    for step in 0..80 {
        match rng.below(10) {
            0 => {
                drop(log);
                backend = backends[rng.below(2) as usize];
                // Sometimes with no tail cache (every read from disk), sometimes a tiny one
                // (reads straddle cached and evicted commits).
                let cache = [0, 8 << 10, 64 << 20][rng.below(3) as usize];
                log = Log::open(small_config(dir.path(), backend).tail_cache_bytes(cache)).unwrap();
            }
            1..=5 => {
                let mut producer = log.producer();
                let mut sent = Vec::new();
                for _ in 0..1 + rng.below(60) {
                    let t = rng.below(2) as usize;
                    let p = rng.below(u64::from(TOPICS[t].1)) as u32;
                    clock += rng.below(5) as i64 - 1;
                    let key_len = rng.below(20) as usize;
                    let key = (rng.below(3) > 0).then(|| rng.bytes(key_len));
                    let value_max = if rng.below(10) == 0 { 12_000 } else { 300 };
                    let value_len = rng.below(value_max) as usize;
                    let value = (rng.below(8) > 0).then(|| rng.bytes(value_len));
                    let headers: Vec<(String, Option<Vec<u8>>)> = (0..rng.below(3))
                        .map(|h| (format!("h{h}"), (rng.below(2) == 0).then(|| rng.bytes(5))))
                        .collect();
                    let m = ModelRecord {
                        timestamp: clock,
                        key,
                        value,
                        headers,
                    };
                    let mut r = Record::tombstone().partition(p).timestamp(clock);
                    if let Some(k) = &m.key {
                        r = r.key(k);
                    }
                    if let Some(v) = &m.value {
                        r = Record::new(v).partition(p).timestamp(clock);
                        if let Some(k) = &m.key {
                            r = r.key(k);
                        }
                    }
                    for (k, v) in &m.headers {
                        r = r.header(k, v.as_deref());
                    }
                    let ack = producer.send(TOPICS[t].0, r).unwrap();
                    sent.push((t, p, ack, m));
                }
                for (t, p, ack, m) in sent {
                    let at = ack.wait().unwrap();
                    let list = &mut model[t][p as usize];
                    assert_eq!(
                        at.offset,
                        Offset(list.len() as u64),
                        "seed {seed} step {step}: dense offsets"
                    );
                    list.push(m);
                }
            }
            _ => {
                let t = rng.below(2) as usize;
                let p = rng.below(u64::from(TOPICS[t].1)) as u32;
                let list = &model[t][p as usize];
                let len = list.len() as u64;
                let offset = rng.below(len + 1);
                let bytes_max = 1 + rng.below(40_000) as usize;
                let got = log.read(TOPICS[t].0, p, Offset(offset), bytes_max).unwrap();
                assert_eq!(
                    log.offsets(TOPICS[t].0, p).unwrap(),
                    (Offset(0), Offset(len)),
                    "seed {seed}"
                );
                if offset < len {
                    assert!(
                        !got.is_empty(),
                        "seed {seed} step {step}: a read below next returns data"
                    );
                }
                for (i, r) in got.iter().enumerate() {
                    let want = offset + i as u64;
                    assert_eq!(r.offset, Offset(want), "seed {seed} step {step}");
                    assert!(
                        list[want as usize].matches(r),
                        "seed {seed} step {step}: record {want}"
                    );
                }
                let beyond = log.read(TOPICS[t].0, p, Offset(len + 1), 100);
                assert!(
                    matches!(beyond, Err(Error::OffsetOutOfRange { .. })),
                    "seed {seed}"
                );
            }
        }
    }
    // Finally everything, after one more reopen.
    drop(log);
    let log = Log::open(small_config(dir.path(), IoBackend::IoUring)).unwrap();
    for (t, (name, partitions)) in TOPICS.iter().enumerate() {
        for p in 0..*partitions {
            let list = &model[t][p as usize];
            let mut offset = 0;
            while offset < list.len() {
                for r in log.read(name, p, Offset(offset as u64), 1 << 16).unwrap() {
                    assert!(
                        list[offset].matches(&r),
                        "seed {seed}: final {name}/{p}/{offset}"
                    );
                    offset += 1;
                }
            }
        }
    }
}

#[test]
fn random_operations_match_the_model() {
    if let Some(seed) = std::env::var("FLOODGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run(seed);
    }
    for seed in 1..=6u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}
