//! Rate limiting for consumers: records per second and/or bytes per second, changeable while
//! running, exact over every 1-second window to within the burst.
//!
//! Two token buckets (records, bytes) refill continuously at their rates; a record is delivered
//! when both buckets hold a token's worth (the bytes bucket may go into debt by one record, so
//! a record larger than the burst is not stuck forever; the debt delays what follows). Over any
//! window of length w, the delivered amount is `rate × w ± burst`, so with the default burst of
//! 10 ms of rate the error over each 1-second window is at most 1% (and at least one record,
//! for rates below 100/s). Buckets start empty: no burst at start-up, and a consumer that was
//! idle saves at most one burst. Time is passed in, never read here, so tests use a fake
//! clock.
//!
//! Catch-up. A bucket that is full loses the tokens that keep coming. When that happens while
//! the consumer waits inside `poll` for records the log holds (a disk read or a lock held up,
//! the host stalled the thread), the loss is the log's doing, not the application's: those
//! tokens are owed, up to [`CATCH_UP_MAX`] of rate, and paid back at up to the rate again on
//! top of it (twice the rate) until settled. A consumer held up 50 ms then delivers the
//! missing 40 ms of records within the next 40 ms, and the 1-second window holding both is
//! exact.
//! Time the application spends outside `poll`, or `poll` spends waiting for new records,
//! is never owed. So over any window of length w the delivered amount is at most
//! `rate × w + burst + owed`, the owed part only after a hold-up of as long, and at least
//! `rate × w - burst` less whatever hold-up longer than [`CATCH_UP_MAX`] was not made up.

use std::time::{Duration, Instant};

/// A consumer's limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimit {
    /// Records per second.
    pub msgs_per_s: Option<f64>,
    /// Payload bytes per second (key + value + headers, encoded).
    pub bytes_per_s: Option<f64>,
}

/// The burst each bucket may hold, as time at its rate: the error over a 1-second window is
/// at most this much of the rate (1%). A smaller one makes every hold-up longer than it a
/// debt to pay back.
pub const BURST: Duration = Duration::from_millis(10);

/// The most hold-up time, at the rate, a bucket owes and pays back (see the module
/// documentation).
pub const CATCH_UP_MAX: Duration = Duration::from_millis(250);

/// How fast owed tokens are paid back, as a multiple of the rate, on top of it.
const CATCH_UP_SPEED: f64 = 1.0;

#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Tokens lost to a full bucket while the consumer was held up, to be paid back.
    owed: f64,
}

impl Bucket {
    fn new(rate: f64, min_burst: f64, now: Instant) -> Bucket {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "a rate must be positive and finite"
        );
        Bucket {
            rate,
            burst: (rate * BURST.as_secs_f64()).max(min_burst),
            tokens: 0.0,
            last: now,
            owed: 0.0,
        }
    }

    /// Adds the tokens of the time since the last refill. What the burst cannot hold is owed
    /// for the part of that time after `held_since`; owed tokens are paid back into the room
    /// below the burst.
    fn refill(&mut self, now: Instant, held_since: Option<Instant>) {
        let since_last = now.saturating_duration_since(self.last).as_secs_f64();
        let held = held_since.map_or(0.0, |since| {
            now.saturating_duration_since(since.max(self.last))
                .as_secs_f64()
        });
        self.last = self.last.max(now);
        let full = self.tokens + since_last * self.rate;
        let lost = (full - self.burst).max(0.0);
        self.tokens = full.min(self.burst);
        let owed_max = self.rate * CATCH_UP_MAX.as_secs_f64();
        self.owed = (self.owed + lost.min(held * self.rate)).min(owed_max);
        let repaid = self
            .owed
            .min(since_last * self.rate * CATCH_UP_SPEED)
            .min((self.burst - self.tokens).max(0.0));
        self.tokens += repaid;
        self.owed -= repaid;
    }

    /// When `tokens` reaches `need` (already refilled to `now`): sooner while a debt is paid.
    fn ready_at(&self, now: Instant, need: f64) -> Instant {
        if self.tokens >= need {
            return now;
        }
        let short = need - self.tokens;
        let speed = match self.owed >= short * CATCH_UP_SPEED / (1.0 + CATCH_UP_SPEED) {
            true => self.rate * (1.0 + CATCH_UP_SPEED),
            false => self.rate,
        };
        now + Duration::from_secs_f64(short / speed)
    }
}

/// Limits what a consumer delivers. See the module documentation.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    msgs: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl RateLimiter {
    /// A limiter starting at `now` with empty buckets.
    pub fn new(limit: RateLimit, now: Instant) -> RateLimiter {
        RateLimiter {
            limit,
            msgs: limit.msgs_per_s.map(|r| Bucket::new(r, 1.0, now)),
            bytes: limit.bytes_per_s.map(|r| Bucket::new(r, 1.0, now)),
        }
    }

    /// Refills both buckets to `now` (`held_since` as for [`RateLimiter::take`]).
    fn refill(&mut self, now: Instant, held_since: Option<Instant>) {
        for b in [&mut self.msgs, &mut self.bytes].into_iter().flatten() {
            b.refill(now, held_since);
        }
    }

    /// The current limits.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Changes the limits from `now` on; tokens held are kept, up to the new burst.
    pub fn set_limit(&mut self, limit: RateLimit, now: Instant) {
        let carry = |old: Option<Bucket>, rate: Option<f64>| {
            rate.map(|r| {
                let mut b = Bucket::new(r, 1.0, now);
                if let Some(mut o) = old {
                    o.refill(now, None);
                    b.tokens = o.tokens.min(b.burst);
                    b.owed = (o.owed / o.rate * r).min(r * CATCH_UP_MAX.as_secs_f64());
                }
                b
            })
        };
        self.msgs = carry(self.msgs.take(), limit.msgs_per_s);
        self.bytes = carry(self.bytes.take(), limit.bytes_per_s);
        self.limit = limit;
    }

    /// Takes tokens for as many of the records (given by their byte sizes, in order) as may be
    /// delivered at `now`, and returns how many. `held_since`: since when the consumer has been
    /// waiting inside `poll` for records the log holds (`None`: it is not, or it waits for new
    /// records); the tokens a full bucket loses from then on are owed and paid back (see the
    /// module documentation).
    pub fn take(
        &mut self,
        now: Instant,
        held_since: Option<Instant>,
        sizes: impl IntoIterator<Item = usize>,
    ) -> usize {
        self.refill(now, held_since);
        let mut n = 0;
        for size in sizes {
            let msg_ok = self.msgs.as_ref().is_none_or(|b| b.tokens >= 1.0);
            let bytes_ok = self.bytes.as_ref().is_none_or(|b| b.tokens >= 1.0);
            if !(msg_ok && bytes_ok) {
                break;
            }
            if let Some(b) = &mut self.msgs {
                b.tokens -= 1.0;
            }
            if let Some(b) = &mut self.bytes {
                b.tokens -= size as f64;
            }
            n += 1;
        }
        n
    }

    /// Takes the tokens of one batch of `records` records and `bytes` bytes, which is handed
    /// out whole, if the next record may be delivered at `now` (the buckets go into debt for
    /// the rest of it, which delays what follows); returns whether it may. For servers that
    /// hand out stored batches as they are (the Kafka front's paced groups): over any window
    /// the error grows by at most one batch.
    pub fn take_batch(
        &mut self,
        now: Instant,
        held_since: Option<Instant>,
        records: u64,
        bytes: u64,
    ) -> bool {
        self.refill(now, held_since);
        let ok = |b: &Option<Bucket>| b.as_ref().is_none_or(|b| b.tokens >= 1.0);
        if !(ok(&self.msgs) && ok(&self.bytes)) {
            return false;
        }
        if let Some(b) = &mut self.msgs {
            b.tokens -= records as f64;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= bytes as f64;
        }
        true
    }

    /// Returns the tokens taken for records that were not delivered after all (sizes as
    /// given to `take`), as when a group-wide limit allowed fewer than this one.
    pub fn give_back(&mut self, sizes: impl IntoIterator<Item = usize>) {
        for size in sizes {
            if let Some(b) = &mut self.msgs {
                b.tokens += 1.0;
            }
            if let Some(b) = &mut self.bytes {
                b.tokens += size as f64;
            }
        }
    }

    /// Whether owed tokens are being paid back (as of the last `take` or `ready_at`).
    pub fn repaying(&self) -> bool {
        [&self.msgs, &self.bytes]
            .into_iter()
            .flatten()
            .any(|b| b.owed >= 1.0)
    }

    /// The tokens each bucket holds at `now` (records, bytes; below zero while in debt), `None`
    /// for a limit not set: how much a reader may take now, to size what it reads.
    pub fn tokens(&mut self, now: Instant) -> (Option<f64>, Option<f64>) {
        self.refill(now, None);
        (
            self.msgs.as_ref().map(|b| b.tokens),
            self.bytes.as_ref().map(|b| b.tokens),
        )
    }

    /// When each bucket holds `share` (0 to 1) of its burst, `now` if it does already: a
    /// reader that waits for it takes what the rate allows in steps of that much, not a few
    /// records at a time, and holds records back at most that part of the burst (10 ms of the rate).
    pub fn filled_at(&mut self, now: Instant, share: f64) -> Instant {
        self.refill(now, None);
        let share = share.clamp(0.0, 1.0);
        [&self.msgs, &self.bytes]
            .into_iter()
            .flatten()
            .map(|b| b.ready_at(now, b.burst * share))
            .fold(now, Instant::max)
    }

    /// When the next record may be delivered (`now` if at once; `held_since` as for `take`).
    pub fn ready_at(&mut self, now: Instant, held_since: Option<Instant>) -> Instant {
        self.refill(now, held_since);
        // One byte of credit is enough: the next record may go into debt.
        [&self.msgs, &self.bytes]
            .into_iter()
            .flatten()
            .map(|b| b.ready_at(now, 1.0))
            .fold(now, Instant::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit of `rate` records a second.
    fn msgs(rate: f64) -> RateLimit {
        RateLimit {
            msgs_per_s: Some(rate),
            bytes_per_s: None,
        }
    }

    /// Drives a limiter with a fake clock: a consumer with an endless backlog asks for up to
    /// `batch` records every `step`; returns records delivered in each 1-second window.
    fn simulate(limit: RateLimit, size: usize, step: Duration, seconds: u32) -> Vec<u64> {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(limit, t0);
        let mut windows = vec![0u64; seconds as usize];
        let mut now = t0;
        // Ask for more than the limit can allow in a step, so the limiter is what binds.
        let rate = limit
            .msgs_per_s
            .unwrap_or(f64::MAX)
            .min(limit.bytes_per_s.map_or(f64::MAX, |b| b / size as f64));
        let ask = (rate * step.as_secs_f64() * 2.0) as usize + 10;
        while now < t0 + Duration::from_secs(u64::from(seconds)) {
            let n = limiter.take(now, None, std::iter::repeat_n(size, ask));
            let w = now.duration_since(t0).as_secs() as usize;
            windows[w] += n as u64;
            now += step;
        }
        windows
    }

    /// A bucket that starts empty holds half its burst after half the burst's time, and a
    /// reader that takes it waits as long again.
    #[test]
    fn filled_at_is_when_the_share_of_a_burst_is_there() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(msgs(1000.0), t0);
        let half = BURST / 2;
        assert_eq!(l.filled_at(t0, 0.5), t0 + half);
        assert_eq!(l.filled_at(t0 + half, 0.5), t0 + half);
        assert!(l.take_batch(t0 + half, None, 5, 500));
        assert_eq!(l.filled_at(t0 + half, 0.5), t0 + BURST);
        // More than the burst is never asked for.
        assert_eq!(l.filled_at(t0 + BURST * 3, 7.0), t0 + BURST * 3);
    }

    /// Tokens are what the buckets hold: filled by time up to the burst, below zero after a
    /// batch larger than what was held.
    #[test]
    fn tokens_are_what_each_bucket_holds() {
        let t0 = Instant::now();
        let limit = RateLimit {
            msgs_per_s: Some(1000.0),
            bytes_per_s: None,
        };
        let mut l = RateLimiter::new(limit, t0);
        assert_eq!(l.tokens(t0), (Some(0.0), None));
        let (held, _) = l.tokens(t0 + BURST / 2);
        assert!((held.unwrap() - 5.0).abs() < 1e-9, "{held:?}");
        // Never more than the burst.
        let (held, _) = l.tokens(t0 + BURST * 50);
        assert!((held.unwrap() - 10.0).abs() < 1e-9, "{held:?}");
        assert!(l.take_batch(t0 + BURST * 50, None, 25, 2500));
        let (held, _) = l.tokens(t0 + BURST * 50);
        assert!((held.unwrap() + 15.0).abs() < 1e-9, "{held:?}");
        let mut bytes = RateLimiter::new(
            RateLimit {
                msgs_per_s: None,
                bytes_per_s: Some(1e6),
            },
            t0,
        );
        let (none, held) = bytes.tokens(t0 + BURST);
        assert_eq!(none, None);
        assert!((held.unwrap() - 10_000.0).abs() < 1e-6, "{held:?}");
    }

    #[test]
    fn every_one_second_window_is_within_one_percent() {
        for rate in [80_000.0, 1_234.5, 500_000.0] {
            for step in [Duration::from_micros(100), Duration::from_millis(3)] {
                let limit = msgs(rate);
                for (i, got) in simulate(limit, 100, step, 5).into_iter().enumerate() {
                    let err = (got as f64 - rate).abs() / rate;
                    assert!(
                        err <= 0.01,
                        "rate {rate} step {step:?} window {i}: {got} ({err})"
                    );
                }
            }
        }
    }

    /// A consumer draining a backlog at 80,000/s with a fake clock, asking every 100 µs, held
    /// up (no calls at all) over `stall`; `held` says whether that time counts as held up
    /// inside `poll`. Returns records delivered in each 1-second window and in each 10 ms
    /// slice.
    fn drain_with_stall(
        stall: std::ops::Range<Duration>,
        held: bool,
        seconds: u64,
    ) -> (Vec<u64>, Vec<u64>) {
        let t0 = Instant::now();
        let limit = msgs(80_000.0);
        let mut limiter = RateLimiter::new(limit, t0);
        let (mut windows, mut slices) =
            (vec![0; seconds as usize], vec![0; seconds as usize * 100]);
        let (mut t, mut last) = (Duration::ZERO, Duration::ZERO);
        while t < Duration::from_secs(seconds) {
            if stall.contains(&t) {
                t = stall.end;
                continue;
            }
            // Each call is a poll entered when the one before returned: held up inside it
            // over the stall, or (not held) the application called it only after the stall.
            let since = match held || t != stall.end {
                true => t0 + last,
                false => t0 + t,
            };
            last = t;
            let n = limiter.take(t0 + t, Some(since), [100; 100]) as u64;
            windows[t.as_secs() as usize] += n;
            slices[t.as_millis() as usize / 10] += n;
            t += Duration::from_micros(100);
        }
        (windows, slices)
    }

    #[test]
    fn a_hold_up_inside_poll_is_made_up_at_twice_the_rate_at_most() {
        // 60 ms held up in the middle of second 1: 50 ms beyond the burst.
        let stall = Duration::from_millis(1_400)..Duration::from_millis(1_460);
        let (windows, slices) = drain_with_stall(stall.clone(), true, 3);
        for (i, got) in windows.iter().enumerate() {
            let err = (*got as f64 - 80_000.0).abs() / 80_000.0;
            assert!(err <= 0.01, "window {i}: {got}");
        }
        // Paid back over the next 50 ms at up to 160,000/s (1,600 a slice), plus the burst.
        let after = stall.end.as_millis() as usize / 10;
        assert!(
            slices[after..after + 5].iter().all(|&n| n <= 1_600 + 800),
            "{slices:?}"
        );
        assert!(
            slices[after + 1..after + 4].iter().all(|&n| n >= 1_500),
            "{slices:?}"
        );
        assert!(slices[after + 8..].iter().all(|&n| n <= 800 + 1), "settled");
    }

    #[test]
    fn a_limiter_says_while_it_pays_back() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(msgs(80_000.0), t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limiter.take(at(5), Some(t0), [100; 400]), 400);
        assert!(!limiter.repaying());
        // Held 60 ms: 50 ms beyond the 10 ms burst are owed (4,000 records).
        assert_eq!(limiter.take(at(65), Some(at(5)), [100; 10_000]), 800);
        assert!(limiter.repaying());
        let mut t = 65;
        let mut delivered = 0;
        while limiter.repaying() {
            t += 1;
            delivered += limiter.take(at(t), Some(at(t - 1)), [100; 10_000]);
            assert!(t < 200, "still owing at {t} ms");
        }
        // Paid back at twice the rate: 50 ms of debt over about 50 ms.
        assert!((45..=56).contains(&(t - 65)), "paid back by {t} ms");
        assert!((7_600..=8_400).contains(&delivered), "{delivered}");
    }

    #[test]
    fn time_outside_poll_is_not_made_up() {
        let stall = Duration::from_millis(1_400)..Duration::from_millis(1_460);
        let (windows, _) = drain_with_stall(stall, false, 3);
        // Short by the 50 ms beyond the burst (4,000 records), and nothing more later.
        assert!((75_900..=76_100).contains(&windows[1]), "{windows:?}");
        assert!(windows[2] <= 80_001, "{windows:?}");
    }

    #[test]
    fn what_is_owed_is_bounded() {
        // Held up 2 s: at most CATCH_UP_MAX (250 ms, 20,000 records) is made up.
        let stall = Duration::from_millis(1_000)..Duration::from_millis(3_000);
        let (windows, _) = drain_with_stall(stall, true, 5);
        assert_eq!(windows[1] + windows[2], 0);
        assert!(
            (100_000 - 10..=100_000 + 800).contains(&windows[3]),
            "a second's rate, the debt and at most a burst: {windows:?}"
        );
        assert!(windows[4] <= 80_001, "{windows:?}");
    }

    #[test]
    fn a_byte_limit_binds_when_it_is_the_tighter_one() {
        let limit = RateLimit {
            msgs_per_s: Some(100_000.0),
            bytes_per_s: Some(1_000_000.0),
        };
        // 1 MB/s of 1,000-byte records is 1,000 records/s: the byte limit binds.
        for got in simulate(limit, 1_000, Duration::from_micros(250), 4) {
            assert!((got as f64 - 1_000.0).abs() <= 10.0, "{got}");
        }
    }

    #[test]
    fn no_burst_at_start_and_idle_time_saves_at_most_one_burst() {
        let t0 = Instant::now();
        let limit = msgs(10_000.0);
        let mut limiter = RateLimiter::new(limit, t0);
        assert_eq!(limiter.take(t0, None, [1; 100]), 0, "buckets start empty");
        // An hour idle: at most one burst (10 ms at 10,000/s = 100 records).
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(limiter.take(later, None, [1; 1000]), 100);
        assert_eq!(limiter.take(later, None, [1; 1000]), 0);
        let next = limiter.ready_at(later, None);
        assert_eq!(next.duration_since(later), Duration::from_micros(100));
        assert_eq!(limiter.take(next, None, [1; 10]), 1);
    }

    #[test]
    fn the_rate_changes_while_running() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(msgs(1_000.0), t0);
        let count = |limiter: &mut RateLimiter, from: Duration, to: Duration| {
            let mut n = 0;
            let mut t = from;
            while t < to {
                n += limiter.take(t0 + t, None, [1; 100]);
                t += Duration::from_micros(500);
            }
            n as f64
        };
        let first = count(&mut limiter, Duration::ZERO, Duration::from_secs(1));
        assert!((first - 1_000.0).abs() <= 10.0, "{first}");
        limiter.set_limit(msgs(5_000.0), t0 + Duration::from_secs(1));
        let second = count(&mut limiter, Duration::from_secs(1), Duration::from_secs(2));
        assert!((second - 5_000.0).abs() <= 50.0, "{second}");
        assert_eq!(limiter.limit().msgs_per_s, Some(5_000.0));
    }

    #[test]
    fn a_record_larger_than_the_byte_burst_still_goes_through() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(
            RateLimit {
                msgs_per_s: None,
                bytes_per_s: Some(1_000.0),
            },
            t0,
        );
        let at = limiter.ready_at(t0, None);
        assert_eq!(limiter.take(at, None, [1_000_000]), 1);
        // The debt of ~a million bytes delays the next record by ~1,000 s.
        let next = limiter.ready_at(at, None);
        assert!(next.duration_since(at) >= Duration::from_secs(999));
    }

    /// Batches taken whole: each 1-second window is within the rate plus one batch, and a
    /// batch larger than the burst still goes out (into debt) and delays the next.
    #[test]
    fn whole_batches_keep_each_window_within_one_batch() {
        let t0 = Instant::now();
        for batch in [1u64, 50, 3_000] {
            let mut limiter = RateLimiter::new(msgs(80_000.0), t0);
            let mut windows = [0u64; 4];
            let mut now = t0;
            while now < t0 + Duration::from_secs(4) {
                while limiter.take_batch(now, None, batch, batch * 100) {
                    windows[now.duration_since(t0).as_secs() as usize] += batch;
                }
                now += Duration::from_micros(250);
            }
            for (i, got) in windows.into_iter().enumerate().skip(1) {
                let off = got.abs_diff(80_000);
                assert!(off <= 800 + batch, "batch {batch}, second {i}: {got}");
            }
        }
    }
}
