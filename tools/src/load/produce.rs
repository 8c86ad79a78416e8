//! `load produce`: open-loop producers at a target rate (or as fast as possible), their ack
//! latencies from each record's intended send time, and verification of what was stored.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodgate::{Ack, Config, IoBackend, Log, Offset, Record, TopicConfig};
use hdrhistogram::Histogram;
use serde_json::json;

use super::*;
use crate::error::CliResult;
use crate::outln;

pub(crate) struct ProducerResult {
    pub(crate) histogram: Histogram<u64>,
    /// Ack latencies (µs) of the records intended in each second of the run.
    pub(crate) per_second: Vec<Histogram<u64>>,
    pub(crate) acked: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

pub(crate) fn produce(args: ProduceArgs) -> CliResult {
    if let Some(bootstrap) = args.bootstrap.clone() {
        return super::wire_produce::wire_produce(args, &bootstrap);
    }
    let (log, dir, tmp, backend, device) = open_load_log(&args)?;
    let messages = match (args.messages, args.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(1_000_000),
        (None, Some(_)) => None,
    };
    let deadline = args.duration.map(Duration::from_secs_f64);
    let live = Live::default();
    let done = AtomicBool::new(false);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let (results, finished): (Vec<ProducerResult>, _) = std::thread::scope(|s| {
        let (live_ref, done_ref) = (&live, &done);
        s.spawn(move || show_progress(args.log.json, live_ref, None, done_ref));
        let handles: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let log = &log;
                let args = &args;
                let count = messages.map(|n| {
                    n / u64::from(args.log.producers)
                        + u64::from(u64::from(k) < n % u64::from(args.log.producers))
                });
                let live = &live;
                s.spawn(move || producer_thread(log, args, k, count, deadline, start, live))
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .collect();
        // Measured before the progress thread ends (it looks every 250 ms): after it, short
        // runs came out up to 250 ms long, their rates a multiple of records / 0.25 s.
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, finished)
    });
    let elapsed = finished.0;
    let cpu = finished.1 - cpu_start;
    let (histogram, produced, errors, first_error) = merge(&results);
    let writer = writer_json(&log);
    let verify = args.log.verify.then(|| verify(&log, &args, &results));
    let rewrites_started = std::time::Instant::now();
    log.wait_for_rewrites();
    let rewrites_s = rewrites_started.elapsed().as_secs_f64();
    let rewritten = log
        .stats()
        .into_iter()
        .fold(floodgate::ShardStats::default(), |mut a, s| {
            a += s;
            a
        });
    drop(log);
    let fs = fs_type(&dir);
    let msgs_per_s = produced as f64 / elapsed;
    let mb_per_s = produced as f64 * args.log.size.mean() / 1e6 / elapsed;
    let latency = latency_json(&histogram);
    let mut report = json!({
        "scenario": "produce",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": args.partitions,
        "window_records": window_records(&args),
        "ring_records": args.ring_records,
        "producers": args.log.producers,
        "shards": args.log.shards,
        "durability": args.log.durability,
        "io_backend": backend.name(),
        "segment_prezero": !args.no_prezero,
        "rewrite_sealed_segments": !args.no_rewrite,
        "target_rate": args.rate,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": msgs_per_s,
        "produce_mb_per_s": mb_per_s,
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "cpu_ns_per_msg": cpu.as_nanos() as f64 / produced.max(1) as f64,
        "ack_latency_us": latency,
        "verify": verify_json(verify.as_ref()),
        "env": env_json(&dir, &fs),
    });
    merge_json(&mut report, device_json(device, Some(mb_per_s), None));
    merge_json(&mut report, writer);
    // The writer's figures are from the end of the run; the rewrites' from after them.
    report["rewrites"] = rewrites_json(&rewritten);
    report["rewrites"]["waited_s"] = json!(rewrites_s);
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load produce: {} B, {} partitions, {} producers, {}",
            args.log.size,
            args.partitions,
            args.log.producers,
            match args.rate {
                0.0 => "as fast as possible".to_string(),
                r => format!("paced at {r} msgs/s"),
            }
        );
        plot(path, title, &seconds, None, &[])?;
    }
    if args.log.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load produce: {} × {} B, {} partition(s), {} producer(s), {} shard(s), durability {}, {} on {}",
            produced,
            args.log.size,
            args.partitions,
            args.log.producers,
            args.log.shards,
            args.log.durability,
            backend.name(),
            fs
        );
        print_device(&report);
        outln!(
            "  throughput   {:>12.0} msgs/s   {:>8.1} MB/s   over {:.2} s",
            msgs_per_s,
            mb_per_s,
            elapsed
        );
        outln!(
            "  cpu          {:.0} ns per message, {:.2} cores busy",
            report["cpu_ns_per_msg"].as_f64().unwrap_or(0.0),
            report["cpu_cores_used"].as_f64().unwrap_or(0.0)
        );
        outln!(
            "  ack latency  p50 {} µs   p99 {} µs   p99.9 {} µs   max {} µs",
            latency["p50"],
            latency["p99"],
            latency["p999"],
            latency["max"]
        );
        print_verify(verify.as_ref());
    }
    finish_run(errors, first_error, verify.as_ref(), args.log.keep, tmp)
}

/// Opens the log of a load run and creates the load topic if it is missing.
/// An open load log: the log, its directory (and the temporary directory to remove), the
/// backend, and the device baseline if one was asked for.
pub(crate) type LoadLog = (
    Log,
    PathBuf,
    Option<tempfile::TempDir>,
    IoBackend,
    Option<floodgate::DeviceBaseline>,
);

pub(crate) fn open_load_log(args: &ProduceArgs) -> CliResult<LoadLog> {
    if args.log.producers == 0 || args.partitions == 0 {
        return Err("--producers and --partitions must be at least 1".into());
    }
    let durability = parse_durability(&args.log.durability)?;
    let backend = parse_backend(&args.log.backend)?;
    let (dir, tmp) = data_dir(args.log.dir.as_ref(), args.log.keep)?;
    let device = args.log.device.measure(&dir)?;
    let config = Config::new(&dir)
        .shards(args.log.shards)
        .durability(durability)
        .io_backend(backend)
        .segment_bytes(args.segment_bytes)
        .commit_bytes_max(args.commit_bytes_max)
        .segment_prezero(!args.no_prezero)
        .rewrite_sealed_segments(!args.no_rewrite)
        .pin_threads(!args.no_pin)
        .tail_cache_bytes(args.tail_cache_bytes)
        .ring_records(args.ring_records);
    let log = Log::open(config)?;
    if !log.list_topics().iter().any(|t| t.name == TOPIC) {
        log.create_topic(TOPIC, TopicConfig::new(args.partitions))
            .map_err(|e| e.to_string())?;
    }
    Ok((log, dir, tmp, backend, device))
}

/// What producers report while they run, for the progress line and the backlog series.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) acked: AtomicU64,
    /// The ack latency p99 (µs) of the last whole second a producer finished.
    pub(crate) p99_us: AtomicU64,
}

pub(crate) fn record_latency(
    r: &mut ProducerResult,
    live: &Live,
    start: Instant,
    intended: Instant,
    now: Instant,
) {
    let us = now.saturating_duration_since(intended).as_micros() as u64;
    r.histogram.saturating_record(us.max(1));
    let second = intended.saturating_duration_since(start).as_secs() as usize;
    while r.per_second.len() <= second {
        if let Some(done) = r.per_second.last() {
            live.p99_us
                .store(done.value_at_quantile(0.99), Ordering::Relaxed);
        }
        r.per_second.push(second_histogram());
    }
    r.per_second[second].saturating_record(us.max(1));
    live.acked.fetch_add(1, Ordering::Relaxed);
}

/// The live progress line on a terminal (stderr; indicatif hides it when stderr is not a
/// terminal, and `--json` hides it): rates, backlog and ack p99, until `done` is set.
pub(crate) fn show_progress(
    json: bool,
    live: &Live,
    consumed: Option<&AtomicU64>,
    done: &AtomicBool,
) {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .expect("a valid template"),
    );
    let count = |a: Option<&AtomicU64>| a.map_or(0, |a| a.load(Ordering::Relaxed));
    let mut last = (Instant::now(), count(Some(&live.acked)), count(consumed));
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(250));
        let now = (Instant::now(), count(Some(&live.acked)), count(consumed));
        let dt = now.0.duration_since(last.0).as_secs_f64().max(1e-9);
        let mut msg = format!(
            "produced {:>10.0}/s   ack p99 {:>6} µs",
            (now.1 - last.1) as f64 / dt,
            live.p99_us.load(Ordering::Relaxed)
        );
        if consumed.is_some() {
            msg.push_str(&format!(
                "   consumed {:>8.0}/s   backlog {:>10}",
                (now.2 - last.2) as f64 / dt,
                now.1.saturating_sub(now.2)
            ));
        }
        bar.set_message(msg);
        bar.tick();
        last = now;
    }
    bar.finish_and_clear();
}

/// Paced producers send what is due at most this often. Sending each record at its own
/// instant (every 2 µs at 500k msgs/s) kept a core busy waking and yielding (1.6 cores for a
/// 500k msgs/s load, against 1.0 with this tick, same p99 within noise); latency is still
/// counted from each record's intended time, so the tick's delay is in the figures.
pub(crate) const PACE_TICK: Duration = Duration::from_micros(50);

/// See `ProduceArgs::window_bytes`.
pub(crate) const WINDOW_BYTES_DEFAULT: usize = 32 << 20;
/// See `ProduceArgs::ring_records`.
pub(crate) const LOAD_RING_RECORDS: usize = 1 << 17;
pub(crate) const WINDOW_RECORDS_MAX: f64 = (1 << 20) as f64;

/// Unacknowledged records a producer thread keeps at most.
pub(crate) fn window_records(args: &ProduceArgs) -> usize {
    (args.window_bytes as f64 / args.log.size.mean()).clamp(1.0, WINDOW_RECORDS_MAX) as usize
}

pub(crate) fn producer_thread(
    log: &Log,
    args: &ProduceArgs,
    k: u32,
    count: Option<u64>,
    deadline: Option<Duration>,
    start: Instant,
    live: &Live,
) -> ProducerResult {
    let others = log.other_cores();
    if !args.no_pin && !args.producers_free && !others.is_empty() {
        floodgate::cores::pin(&[others[k as usize % others.len()]]);
    }
    let mut producer = log.producer();
    let mut result = ProducerResult {
        histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram"),
        per_second: Vec::new(),
        acked: 0,
        errors: 0,
        first_error: None,
    };
    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(f64::from(args.log.producers) / args.rate));
    let window_max = window_records(args);
    let mut window: VecDeque<(Ack, Instant)> = VecDeque::with_capacity(window_max);
    let batch_max = 128usize;
    let mut bufs: Vec<Vec<u8>> = (0..batch_max)
        .map(|_| Vec::with_capacity(args.log.size.max))
        .collect();
    let mut acks = Vec::with_capacity(batch_max);
    // `now`: when the caller last read the clock; None to read it on completion (after a wait).
    let finish =
        |result: &mut ProducerResult, ack: Ack, intended: Instant, now: Option<Instant>| {
            let outcome = if now.is_none() {
                ack.wait_timeout(Duration::from_secs(3600))
            } else {
                ack.try_get()
            };
            match outcome {
                Some(Ok(_)) => {
                    let now = now.unwrap_or_else(Instant::now);
                    record_latency(result, live, start, intended, now);
                    result.acked += 1;
                    None
                }
                Some(Err(e)) => {
                    result.errors += 1;
                    result.first_error.get_or_insert(e.to_string());
                    None
                }
                None => Some((ack, intended)),
            }
        };
    let mut seq = 0u64;
    let partitions = u64::from(args.partitions);
    let mut last_send = start;
    loop {
        if count.is_some_and(|n| seq >= n) || deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let left = count
            .map_or(batch_max as u64, |n| n - seq)
            .min(batch_max as u64) as usize;
        // Paced: wait for the next record's intended time (collecting acknowledgements), then
        // send every record that is due. As fast as possible: a full batch.
        let n = match interval {
            Some(iv) => {
                let due = start + iv.mul_f64(seq as f64);
                let at = due.max(last_send + PACE_TICK);
                while Instant::now() < at {
                    match window.pop_front() {
                        Some((ack, t)) => {
                            let left = at.saturating_duration_since(Instant::now());
                            if ack.wait_timeout(left).is_some() {
                                finish(&mut result, ack, t, None);
                            } else {
                                window.push_front((ack, t));
                            }
                        }
                        None => std::thread::sleep(at.saturating_duration_since(Instant::now())),
                    }
                }
                let due = (start.elapsed().as_secs_f64() / iv.as_secs_f64()) as u64 + 1;
                (due.saturating_sub(seq) as usize).clamp(1, left)
            }
            None => left,
        };
        let sent_at = Instant::now();
        last_send = sent_at;
        for (j, buf) in bufs.iter_mut().take(n).enumerate() {
            let seq = seq + j as u64;
            payload(RecordId::new(k, seq), args.log.size.of(k, seq), buf);
        }
        let records = bufs.iter().take(n).enumerate().map(|(j, buf)| {
            let partition = ((seq + j as u64 + u64::from(k)) % partitions) as u32;
            Record::new(buf).partition(partition)
        });
        let sent = producer.send_batch(TOPIC, records, &mut acks);
        for (j, ack) in acks.drain(..).enumerate() {
            let intended =
                interval.map_or(sent_at, |iv| start + iv.mul_f64((seq + j as u64) as f64));
            window.push_back((ack, intended));
        }
        seq += n as u64;
        if let Err(e) = sent {
            result.errors += 1;
            result.first_error.get_or_insert(e.to_string());
            break;
        }
        let now = Instant::now();
        while let Some((ack, t)) = window.pop_front() {
            if let Some(back) = finish(&mut result, ack, t, Some(now)) {
                window.push_front(back);
                break;
            }
        }
        while window.len() >= window_max {
            let (ack, t) = window.pop_front().expect("window is full");
            finish(&mut result, ack, t, None);
        }
    }
    for (ack, t) in window.drain(..) {
        finish(&mut result, ack, t, None);
    }
    result
}

#[derive(Default)]
pub(crate) struct Verify {
    pub(crate) checked: u64,
    pub(crate) missing: u64,
    pub(crate) duplicated: u64,
    pub(crate) corrupt: u64,
    pub(crate) out_of_order: u64,
}

/// Reads every stored record of the load topic back and checks it: intact, not stored twice,
/// in order per producer within its partition, and every acknowledged one of this run there.
pub(crate) fn verify(log: &Log, args: &ProduceArgs, results: &[ProducerResult]) -> Verify {
    let ranges: Vec<(Offset, Offset)> = (0..args.partitions)
        .map(|p| log.offsets(TOPIC, p).expect("load topic partition"))
        .collect();
    // One consumer of every partition reads the log once, in position order; reading the
    // partitions one by one read it once per partition. A read that fails is found and
    // counted partition by partition.
    let mut check = Checker::new(args);
    if !check.in_log_order(log, &ranges) {
        check = Checker::new(args);
        check.by_partition(log, &ranges);
    }
    check.finish(results)
}

/// What verifying has found so far.
pub(crate) struct Checker<'a> {
    args: &'a ProduceArgs,
    v: Verify,
    check: ConsumedCheck,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(args: &'a ProduceArgs) -> Checker<'a> {
        Checker {
            args,
            v: Verify::default(),
            check: ConsumedCheck::default(),
        }
    }

    /// Checks every record through one consumer; false if a read failed or stalled.
    fn in_log_order(&mut self, log: &Log, ranges: &[(Offset, Offset)]) -> bool {
        let Ok(mut consumer) = log.consumer(TOPIC).build() else {
            return false;
        };
        let done = |c: &floodgate::Consumer| {
            (0..ranges.len() as u32).all(|p| c.position(p).is_ok_and(|o| o >= ranges[p as usize].1))
        };
        while !done(&consumer) {
            match consumer.poll(Duration::from_secs(5)) {
                Ok(records) if !records.is_empty() => {
                    for r in records {
                        if r.record.offset < ranges[r.partition as usize].1 {
                            self.check(r.partition, r.record);
                        }
                    }
                }
                Ok(_) | Err(_) => return false,
            }
        }
        true
    }

    /// Checks every record partition by partition: a read that fails counts as corrupt and
    /// ends that partition's check.
    fn by_partition(&mut self, log: &Log, ranges: &[(Offset, Offset)]) {
        for (p, &(earliest, next)) in (0u32..).zip(ranges) {
            let mut offset = earliest;
            while offset < next {
                let records = match log.read(TOPIC, p, offset, 4 << 20) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("verify: reading partition {p} at {offset}: {e}");
                        self.v.corrupt += 1;
                        break;
                    }
                };
                for r in records {
                    offset = r.offset + 1;
                    self.check(p, r);
                }
            }
        }
    }

    /// What was found, with every acknowledged record of this run not found counted missing.
    pub(crate) fn finish(self, results: &[ProducerResult]) -> Verify {
        let (mut v, c) = (self.v, self.check);
        v.corrupt += c.corrupt;
        v.duplicated += c.duplicated;
        v.out_of_order += c.out_of_order;
        let acked: u64 = results.iter().map(|r| r.acked).sum();
        let found_acked = c.seen.iter().filter(|id| id.run == run_id()).count() as u64;
        v.missing = acked.saturating_sub(found_acked);
        v
    }

    fn check(&mut self, partition: u32, r: floodgate::StoredRecord) {
        self.check_value(partition, r.value.as_deref().unwrap_or_default());
    }

    /// Checks a record of `partition` with this value (records are checked in their
    /// partition's order).
    pub(crate) fn check_value(&mut self, partition: u32, value: &[u8]) {
        self.v.checked += 1;
        let size = self.args.log.size;
        // Another run's records are checked whole; their sizes were that run's.
        self.check.check_sized(partition, value, |id| {
            id.run != run_id() || value.len() == size.of(id.producer, id.seq)
        });
    }
}
