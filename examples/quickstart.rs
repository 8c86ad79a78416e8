//! The embedded quickstart: open a log, create a topic, produce with a durable ack, read the
//! record back by offset, and consume at a fixed rate.
//!
//! `cargo run --release --example quickstart [DIR]` (default `./quickstart-data`, removed at
//! the end). The directory must be on a disk-backed file system (ext4, xfs): the log writes
//! with O_DIRECT.

use std::time::Duration;

use floodgate::{Config, Log, Record, TopicConfig};

fn main() -> Result<(), floodgate::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart-data".into());
    let log = Log::open(Config::new(&dir))?; // creates, locks, recovers
    if !log.list_topics().iter().any(|t| t.name == "orders") {
        log.create_topic("orders", TopicConfig::new(8))?;
    }
    let mut producer = log.producer(); // one per thread
    let ack = producer.send("orders", Record::new(b"order-123").key(b"user-9"))?;
    let at = ack.wait()?; // on stable storage now (Durability::Sync)
    println!(
        "acknowledged: partition {} offset {}",
        at.partition, at.offset
    );
    for r in log.read("orders", at.partition, at.offset, 1 << 20)? {
        println!("read back: offset {} value {:?}", r.offset, r.value);
    }
    let mut consumer = log.consumer("orders").max_rate(80_000.0).build()?; // exact msgs/s
    let records = consumer.poll(Duration::from_millis(100))?; // long-polls; parks, never spins
    println!("consumed {} record(s)", records.len());
    log.close()?;
    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir).map_err(|e| floodgate::Error::io("remove", &dir, e))?;
    }
    Ok(())
}
