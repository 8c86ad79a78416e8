//! A producer and a consumer group: one thread produces orders across 8 partitions while a
//! group of three members (threads) drains them at a shared 20,000 records/s, committing as it
//! goes. At the end the group's lag is zero and every order was delivered.
//!
//! `cargo run --release --example consumer_group [DIR]` (default `./consumer-group-data`,
//! removed at the end; on a disk-backed file system).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use floodgate::{Config, Log, RateLimit, Record, TopicConfig};

const ORDERS: u64 = 20_000;
const MEMBERS: usize = 3;

fn main() -> Result<(), floodgate::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "consumer-group-data".into());
    let log = Log::open(Config::new(&dir))?;
    if !log.list_topics().iter().any(|t| t.name == "orders") {
        log.create_topic("orders", TopicConfig::new(8))?;
    }
    let seen = Mutex::new(HashSet::new());
    let started = Instant::now();
    std::thread::scope(|s| -> Result<(), floodgate::Error> {
        let producer = s.spawn(|| -> Result<(), floodgate::Error> {
            let mut producer = log.producer();
            let mut acks = Vec::new();
            for i in 0..ORDERS {
                let key = format!("user-{}", i % 1000);
                let value = format!("order-{i}");
                acks.push(
                    producer.send("orders", Record::new(value.as_bytes()).key(key.as_bytes()))?,
                );
            }
            for ack in acks {
                ack.wait()?;
            }
            Ok(())
        });
        let mut members = Vec::new();
        for _ in 0..MEMBERS {
            members.push(s.spawn(|| -> Result<(), floodgate::Error> {
                let mut member = log
                    .consumer("orders")
                    .group("logistics")
                    .group_rate_limit(RateLimit {
                        msgs_per_s: Some(20_000.0),
                        bytes_per_s: None,
                    })
                    .auto_commit(Duration::from_millis(100))
                    .build()?;
                while seen.lock().expect("seen lock").len() < ORDERS as usize {
                    for r in member.poll(Duration::from_millis(50))? {
                        let value = r.record.value.expect("orders have values");
                        seen.lock().expect("seen lock").insert(value);
                    }
                }
                member.commit()
            }));
        }
        producer.join().expect("producer thread")?;
        for m in members {
            m.join().expect("member thread")?;
        }
        Ok(())
    })?;
    let lag = log.group_lag("logistics", "orders")?;
    println!(
        "{} orders delivered to {MEMBERS} members in {:.2} s; lag now {}",
        seen.lock().expect("seen lock").len(),
        started.elapsed().as_secs_f64(),
        lag.lag
    );
    log.close()?;
    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir).map_err(|e| floodgate::Error::io("remove", &dir, e))?;
    }
    Ok(())
}
