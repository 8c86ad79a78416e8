//! Faults injected below the shard writer: a stalled disk (backpressure), and EIO / ENOSPC on
//! a write or a flush (the affected acks fail, the shard latches failed with the reason,
//! nothing acknowledged is lost, and a reopen recovers).

mod common;

use std::time::{Duration, Instant};

use common::{BACKENDS, small_config, test_dir};
use floodgate::io::faults::IoFaults;
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
            assert_eq!(ack.wait().unwrap().offset, i as u64);
        }
        let n = log.offsets("t", 0).unwrap().1;
        let records = log.read("t", 0, 0, 1 << 30).unwrap();
        assert_eq!(records.len() as u64, n);
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
                Error::ShardFailed { reason: r, .. } => assert!(r.contains(reason), "{r}"),
                other => panic!("expected ShardFailed, got {other}"),
            }
            // The shard stays failed: later sends are refused with the same reason.
            let again = producer.send("t", Record::new(b"after")).unwrap_err();
            assert!(matches!(again, Error::ShardFailed { .. }), "{again}");
            // Reads of acknowledged records still work.
            assert_eq!(log.read("t", 0, 0, 1 << 20).unwrap().len(), 100);
            let closed = log.close();
            assert!(
                matches!(closed, Err(Error::ShardFailed { .. })),
                "close reports the failure"
            );
        }
        let log = Log::open(small_config(dir.path(), backend)).unwrap();
        let records = log.read("t", 0, 0, 1 << 20).unwrap();
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
            records.len() as u64,
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
