//! A paced group's rate over the wire: what its members' fetches together may take (the
//! library's `RateLimiter`), and how much a paced fetch reads at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use floodgate::RateLimit;
use floodgate::consumer::RateLimiter;

/// A paced group's rate over the wire: what its members' fetches together may take.
pub(crate) struct Pace {
    pub limiter: Mutex<RateLimiter>,
    /// Which partition of a fetch is served first, moved on at every fetch, so that a budget
    /// smaller than a fetch's batches is shared among the partitions in turn.
    pub turn: AtomicUsize,
    /// Bytes per record of the batches its fetches last read (an f64's bits; 0 before any):
    /// what a read of the records the rate allows is sized by.
    bytes_per_record: AtomicU64,
}

/// What a paced group's member reads before it knows the bytes per record of its partitions
/// (the library's paced consumers read this much at a time too).
const FIRST_READ_BYTES: usize = 16 << 10;
/// How many times what the rate allows at the moment a paced fetch reads: the rate goes on
/// filling while the read runs, and batches are handed out whole.
const READ_BUDGET_MARGIN: f64 = 2.0;

impl Pace {
    pub fn new(limit: RateLimit, now: Instant) -> Pace {
        Pace {
            limiter: Mutex::new(RateLimiter::new(limit, now)),
            turn: AtomicUsize::new(0),
            bytes_per_record: AtomicU64::new(0),
        }
    }

    /// The bytes a member's fetch reads at `now`: what the rate lets out then (the records it
    /// allows at the bytes per record of the last read), twice over, and at least one batch.
    /// A paced fetch of a backlog read as much as the request allowed (megabytes, every batch's
    /// checksum checked) to hand out a few milliseconds of the rate. Before a first read, when
    /// the bytes per record are not known, [`FIRST_READ_BYTES`]: a member joining far behind
    /// read 4 MiB at once, queued before the writer's commits.
    pub fn read_budget(&self, now: Instant) -> Option<usize> {
        let (msgs, bytes) = self.limiter.lock().expect("pace lock").tokens(now);
        let per_record = f64::from_bits(self.bytes_per_record.load(Ordering::Relaxed));
        let by_msgs = match msgs {
            Some(_) if per_record <= 0.0 => return Some(FIRST_READ_BYTES),
            Some(m) => m.max(0.0) * per_record,
            None => f64::INFINITY,
        };
        let budget = by_msgs.min(bytes.map_or(f64::INFINITY, |b| b.max(0.0)));
        budget
            .is_finite()
            .then(|| (budget * READ_BUDGET_MARGIN) as usize + 1)
    }

    /// Notes what a fetch read: `records` records in `bytes` bytes of batches.
    pub fn note_read(&self, records: u64, bytes: u64) {
        if records > 0 {
            let per_record = bytes as f64 / records as f64;
            (self.bytes_per_record).store(per_record.to_bits(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A paced fetch reads about what the rate lets out (twice over, at the bytes per record
    /// last read), not what the request allows; before any read, [`FIRST_READ_BYTES`].
    #[test]
    fn a_paced_fetch_reads_what_the_rate_allows() {
        let t0 = Instant::now();
        let records = RateLimit {
            msgs_per_s: Some(80_000.0),
            bytes_per_s: None,
        };
        let pace = Pace::new(records, t0);
        let first = pace.read_budget(t0 + Duration::from_millis(5));
        assert_eq!(first, Some(FIRST_READ_BYTES));
        pace.note_read(1_000, 130_000);
        // 5 ms of 80,000/s: 400 records of 130 bytes, twice over.
        let budget = pace.read_budget(t0 + Duration::from_millis(5)).unwrap();
        assert!((103_990..=104_010).contains(&budget), "{budget}");
        // A group in debt reads one batch.
        let now = t0 + Duration::from_millis(5);
        assert!(
            pace.limiter
                .lock()
                .unwrap()
                .take_batch(now, None, 5_000, 650_000)
        );
        assert_eq!(pace.read_budget(now), Some(1));

        let bytes = RateLimit {
            msgs_per_s: None,
            bytes_per_s: Some(1e6),
        };
        let pace = Pace::new(bytes, t0);
        let budget = pace.read_budget(t0 + Duration::from_millis(10)).unwrap();
        assert!((19_990..=20_010).contains(&budget), "{budget}");
    }
}
