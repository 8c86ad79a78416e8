//! Faults injected below the shard writer: a stalled disk (backpressure); EIO / ENOSPC on a
//! write or a flush (the affected acks fail, the shard latches failed with the reason, nothing
//! acknowledged is lost, and a reopen recovers); slow flushes (nothing is acknowledged before
//! its flush); short writes (the rest is written, nothing lost); a panic on the writer thread
//! (waiters and senders get `ShardFailed` promptly, with the panic as its cause).

mod common;

use floodgate::Offset;
use std::time::{Duration, Instant};

use common::{BACKENDS, payload, small_config, test_dir};
use floodgate::testing::IoFaults;
use floodgate::{Error, Log, Record, TopicConfig};

#[test]
fn a_stalled_disk_fills_the_ring_and_nothing_is_lost_when_it_resumes() {
    for backend in BACKENDS {
        let dir = test_dir("stall");
        let faults = IoFaults::new();
        let config = small_config(dir.path(), backend)
            .ring_records(16)
            .testing_io_faults(faults.clone());
        let log = Log::open(config).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        faults.pause();
        // If an assertion fails while the disk is stalled, resume it so the log can close.
        struct ResumeOnDrop(std::sync::Arc<IoFaults>);
        impl Drop for ResumeOnDrop {
            fn drop(&mut self) {
                self.0.resume();
            }
        }
        let _resume = ResumeOnDrop(faults.clone());
        let mut acks = Vec::new();
        // The writer takes what it can before it blocks on the stalled disk; then the 16-record
        // ring fills and stays full. Fill until Full, give the writer time, and repeat until a
        // round finds no room at all: the writer is then surely blocked.
        for round in 0.. {
            assert!(round < 50, "the ring never stayed full");
            let before = acks.len();
            loop {
                let i = acks.len() as u64;
                match producer.try_send("t", Record::new(&i.to_le_bytes())) {
                    Ok(ack) => acks.push(ack),
                    Err(Error::Full) => break,
                    Err(e) => panic!("unexpected {e}"),
                }
                assert!(acks.len() < 100_000, "try_send never reported Full");
            }
            if round > 0 && acks.len() == before {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let e = producer.try_send("t", Record::new(b"late")).unwrap_err();
        assert!(matches!(e, Error::Full), "{e}");
        producer.set_send_timeout(Duration::from_millis(50));
        let started = Instant::now();
        let e = producer.send("t", Record::new(b"late")).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(
            acks.iter().all(|a| a.try_get().is_none()),
            "nothing acked while stalled"
        );
        assert!(acks[0].wait_timeout(Duration::ZERO).is_none());
        let started = Instant::now();
        assert!(acks[0].wait_timeout(Duration::from_millis(30)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
        faults.resume();
        for (i, ack) in acks.into_iter().enumerate() {
            assert_eq!(ack.wait().unwrap().offset, Offset(i as u64));
        }
        let n = log.offsets("t", 0).unwrap().1;
        let records = log.read("t", 0, Offset(0), 1 << 30).unwrap();
        assert_eq!(records.len() as u64, n.0);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.value.as_deref(), Some(&(i as u64).to_le_bytes()[..]));
        }
    }
}

/// Acks some records, injects `fail` into the next commit, and checks the outcome.
fn failed_commit(name: &str, fail: impl Fn(&IoFaults), reason: &str) {
    for backend in BACKENDS {
        let dir = test_dir(name);
        let faults = IoFaults::new();
        let config = || small_config(dir.path(), backend).testing_io_faults(faults.clone());
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let mut producer = log.producer();
            for i in 0..100u64 {
                producer
                    .send("t", Record::new(&i.to_le_bytes()))
                    .unwrap()
                    .wait()
                    .unwrap();
            }
            fail(&faults);
            let e = producer
                .send("t", Record::new(b"doomed"))
                .unwrap()
                .wait()
                .unwrap_err();
            match &e {
                Error::ShardFailed { cause, .. } => {
                    let r = cause.to_string();
                    assert!(r.contains(reason), "{r}")
                }
                other => panic!("expected ShardFailed, got {other}"),
            }
            // The shard stays failed: later sends are refused with the same reason.
            let again = producer.send("t", Record::new(b"after")).unwrap_err();
            assert!(matches!(again, Error::ShardFailed { .. }), "{again}");
            // Reads of acknowledged records still work.
            assert_eq!(log.read("t", 0, Offset(0), 1 << 20).unwrap().len(), 100);
            let closed = log.close();
            assert!(
                matches!(closed, Err(Error::ShardFailed { .. })),
                "close reports the failure"
            );
        }
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        let records = log.read("t", 0, Offset(0), 1 << 20).unwrap();
        assert!(
            records.len() == 100 || records.len() == 101,
            "{} records",
            records.len()
        );
        for (i, r) in records.iter().take(100).enumerate() {
            assert_eq!(r.value.as_deref(), Some(&(i as u64).to_le_bytes()[..]));
        }
        let mut producer = log.producer();
        let at = producer
            .send("t", Record::new(b"recovered"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            at.offset,
            Offset(records.len() as u64),
            "offsets stay dense after the failure"
        );
    }
}

#[test]
fn eio_on_flush_fails_the_commit_and_latches_the_shard() {
    failed_commit("eio-flush", |f| f.fail_next_flush(libc::EIO), "fdatasync");
}

#[test]
fn enospc_on_write_fails_the_commit_and_latches_the_shard() {
    failed_commit(
        "enospc-write",
        |f| f.fail_next_write(libc::ENOSPC),
        "No space left",
    );
}

#[test]
fn eio_on_write_fails_the_commit_and_latches_the_shard() {
    failed_commit(
        "eio-write",
        |f| f.fail_next_write(libc::EIO),
        "Input/output error",
    );
}

#[test]
fn enospc_on_flush_fails_the_commit_and_latches_the_shard() {
    failed_commit(
        "enospc-flush",
        |f| f.fail_next_flush(libc::ENOSPC),
        "No space left",
    );
}

/// Sends `n` records of varied sizes over 3 partitions, waits for every ack, reopens and
/// checks each is there with its bytes.
fn send_all_and_read_back(config: floodgate::Config, n: u64) {
    {
        let config = config.clone();
        let log = Log::open(config).unwrap();
        log.create_topic("t", TopicConfig::new(3)).unwrap();
        let mut producer = log.producer();
        let mut acks = Vec::new();
        for i in 0..n {
            let v = payload(i, 10 + (i as usize * 37) % 3000);
            acks.push(
                producer
                    .send("t", Record::new(&v).partition((i % 3) as u32))
                    .unwrap(),
            );
        }
        for (i, ack) in acks.into_iter().enumerate() {
            let at = ack.wait().unwrap();
            assert_eq!(
                (at.partition, at.offset),
                ((i % 3) as u32, Offset(i as u64 / 3))
            );
        }
    }
    let log = Log::open(config).unwrap();
    for p in 0..3u32 {
        let mut offset = 0;
        while offset < n / 3 {
            for r in log.read("t", p, Offset(offset), 1 << 20).unwrap() {
                let i = offset * 3 + u64::from(p);
                assert_eq!(
                    r.value.as_deref(),
                    Some(&payload(i, 10 + (i as usize * 37) % 3000)[..])
                );
                offset += 1;
            }
        }
    }
}

/// With every flush 300 ms slow, a record is not acknowledged until its flush is done, and
/// everything sent is acknowledged and stored in the end.
#[test]
fn slow_flushes_delay_acks_and_lose_nothing() {
    for backend in BACKENDS {
        let dir = test_dir("slow-flush");
        let faults = IoFaults::new();
        let config = small_config(dir.path(), backend).testing_io_faults(faults.clone());
        let log = Log::open(config).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        faults.slow_flushes(Duration::from_millis(300));
        let started = Instant::now();
        let ack = producer.send("t", Record::new(b"slow")).unwrap();
        assert!(
            ack.wait_timeout(Duration::from_millis(100)).is_none(),
            "acknowledged before its flush completed"
        );
        assert_eq!(ack.wait().unwrap().offset, Offset(0));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Under load, commits queue behind slow flushes; all of them arrive.
        faults.slow_flushes(Duration::from_millis(2));
        let more = test_dir("slow-flush-load");
        send_all_and_read_back(
            small_config(more.path(), backend).testing_io_faults(faults.clone()),
            600,
        );
    }
}

/// Every write of more than one block comes back short from the kernel (the io_uring device
/// submits its first half only); the device writes the rest, and nothing is lost or torn,
/// across segment rolls.
#[test]
fn short_writes_are_finished_and_lose_nothing() {
    let dir = test_dir("short-writes");
    let faults = IoFaults::new();
    faults.short_writes(true);
    let config =
        small_config(dir.path(), floodgate::IoBackend::IoUring).testing_io_faults(faults.clone());
    send_all_and_read_back(config, 1500);
    assert!(
        faults.short_writes_done() > 10,
        "short writes happened ({})",
        faults.short_writes_done()
    );
    assert!(common::segments(dir.path(), 0).len() > 2, "segments rolled");
}

/// A panic on the writer thread fails the shard like an I/O error: the record in the commit
/// gets `ShardFailed` with the panic as its cause (not a wait that never ends), later sends
/// are refused at once, close reports it, and every acknowledged record is there on reopen.
#[test]
fn a_panicking_writer_fails_its_shard_and_wakes_every_waiter() {
    for backend in BACKENDS {
        let dir = test_dir("writer-panic");
        let faults = IoFaults::new();
        let config = small_config(dir.path(), backend).testing_io_faults(faults.clone());
        let log = Log::open(config).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        for i in 0..50u64 {
            let ack = producer.send("t", Record::new(&i.to_le_bytes())).unwrap();
            ack.wait().unwrap();
        }
        faults.panic_next_write();
        let doomed = producer.send("t", Record::new(b"doomed")).unwrap();
        let outcome = doomed
            .wait_timeout(Duration::from_secs(10))
            .expect("the ack of a record in a panicked writer's commit resolves");
        let e = outcome.unwrap_err();
        let Error::ShardFailed { shard: 0, cause } = &e else {
            panic!("expected ShardFailed, got {e}");
        };
        assert!(
            matches!(&**cause, Error::Panicked { message, .. } if message.contains("injected panic")),
            "{cause}"
        );
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        producer.set_send_timeout(Duration::from_secs(10));
        let started = Instant::now();
        let again = producer.send("t", Record::new(b"after")).unwrap_err();
        assert!(matches!(again, Error::ShardFailed { .. }), "{again}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once"
        );
        assert!(matches!(log.close(), Err(Error::ShardFailed { .. })));
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        let records = log.read("t", 0, Offset(0), 1 << 20).unwrap();
        assert!((50..=51).contains(&records.len()), "{}", records.len());
        for (i, r) in records.iter().take(50).enumerate() {
            assert_eq!(r.value.as_deref(), Some(&(i as u64).to_le_bytes()[..]));
        }
    }
}
