//! `load produce --bootstrap`: the produce scenario against a broker over the Kafka protocol.
//! Each producer thread keeps a connection to each leader of the load topic; records go into
//! one batch per partition, and a connection's batches go out as one produce request once they
//! reach `--request-bytes`, or `--linger-ms` after the oldest of them, while fewer than
//! `--in-flight` requests wait for their responses (as a Kafka producer's `batch.size`,
//! `linger.ms` and `max.in.flight.requests.per.connection`). Ack latency counts from each
//! record's intended send time, as in the embedded scenario.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId,
};
use serde_json::json;

use super::wire::{BatchBuilder, Conn, Pipeline, TopicLayout, connect_topic, topic_name};
use super::*;
use crate::error::CliResult;
use crate::outln;

/// The produce scenario over the protocol; `args.bootstrap` is set.
pub(crate) fn wire_produce(args: ProduceArgs, bootstrap: &str) -> CliResult {
    if args.log.producers == 0 || args.partitions == 0 {
        return Err("--producers and --partitions must be at least 1".into());
    }
    let acks = parse_acks(&args.acks)?;
    let layout = connect_topic(bootstrap, Some(args.partitions))?;
    let partitions = layout.leaders.len() as u32;
    let messages = match (args.messages, args.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(1_000_000),
        (None, Some(_)) => None,
    };
    let deadline = args.duration.map(Duration::from_secs_f64);
    let live = Live::default();
    let done = AtomicBool::new(false);
    let before = if args.log.verify {
        Some(super::wire_consume::end_offsets(&layout)?)
    } else {
        None
    };
    let cpu_start = process_cpu();
    let start = Instant::now();
    let (results, finished) = std::thread::scope(|s| {
        let (live_ref, done_ref) = (&live, &done);
        s.spawn(move || show_progress(args.log.json, live_ref, None, done_ref));
        let handles: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let (args, layout, live) = (&args, &layout, &live);
                let count = messages.map(|n| {
                    n / u64::from(args.log.producers)
                        + u64::from(u64::from(k) < n % u64::from(args.log.producers))
                });
                s.spawn(move || {
                    let thread = Producing {
                        args,
                        layout,
                        partitions,
                        acks,
                        k,
                        start,
                        live,
                    };
                    thread.run(count, deadline)
                })
            })
            .collect();
        let results: Vec<CliResult<ProducerResult>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".into()))
            })
            .collect();
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, finished)
    });
    let results = results.into_iter().collect::<CliResult<Vec<_>>>()?;
    let elapsed = finished.0;
    let cpu = finished.1 - cpu_start;
    let (histogram, produced, errors, first_error) = merge(&results);
    let verify = match before {
        Some(from) => Some(super::wire_consume::wire_verify(
            &layout, &args, &results, &from,
        )?),
        None => None,
    };
    let msgs_per_s = produced as f64 / elapsed;
    let mb_per_s = produced as f64 * args.log.size.mean() / 1e6 / elapsed;
    let latency = latency_json(&histogram);
    let mut report = json!({
        "scenario": "produce",
        "bootstrap": bootstrap,
        "acks": args.acks,
        "idempotent": args.idempotent,
        "durability": "the broker's, with the acks above",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": partitions,
        "producers": args.log.producers,
        "linger_ms": args.linger_ms,
        "request_bytes": args.request_bytes,
        "in_flight": args.in_flight,
        "target_rate": args.rate,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": msgs_per_s,
        "produce_mb_per_s": mb_per_s,
        "client_cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "client_cpu_ns_per_msg": cpu.as_nanos() as f64 / produced.max(1) as f64,
        "ack_latency_us": latency,
        "verify": verify_json(verify.as_ref()),
    });
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load produce --bootstrap {bootstrap}: {} B, {partitions} partitions, {} \
             producers, acks={}",
            args.log.size, args.log.producers, args.acks
        );
        plot(path, title, &seconds, None, &[])?;
    }
    if args.log.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load produce --bootstrap {bootstrap}: {produced} × {} B, {partitions} \
             partition(s), {} producer(s), acks={}",
            args.log.size,
            args.log.producers,
            args.acks
        );
        outln!(
            "  throughput   {:>12.0} msgs/s   {:>8.1} MB/s   over {:.2} s",
            msgs_per_s,
            mb_per_s,
            elapsed
        );
        outln!(
            "  client cpu   {:.0} ns per message (the broker's is its own)",
            report["client_cpu_ns_per_msg"].as_f64().unwrap_or(0.0)
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
    finish_run(errors, first_error, verify.as_ref(), false, None)
}

/// `--acks`: `all` (or -1) or `1`.
pub(crate) fn parse_acks(s: &str) -> CliResult<i16> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        _ => Err(format!(
            "--acks {s:?}: use all or 1 (acks=0 has no responses to time latency by)"
        )
        .into()),
    }
}

/// One producer thread's part of the run.
pub(crate) struct Producing<'a> {
    pub(crate) args: &'a ProduceArgs,
    pub(crate) layout: &'a TopicLayout,
    pub(crate) partitions: u32,
    pub(crate) acks: i16,
    /// The thread's number.
    pub(crate) k: u32,
    pub(crate) start: Instant,
    pub(crate) live: &'a Live,
}

/// A partition's records waiting to go out.
#[derive(Default)]
struct Waiting {
    batch: BatchBuilder,
    /// Each record's intended send time.
    intended: Vec<Instant>,
    /// An idempotent producer's sequence number of the next record.
    next_sequence: i32,
}

/// Kafka's bound on an idempotent producer's requests in flight per connection: the broker
/// keeps the last five batches of each producer and partition to recognise a retry.
const IDEMPOTENT_IN_FLIGHT_MAX: u32 = 5;

/// An idempotent producer's id and epoch, from InitProducerId at `addr`.
fn init_producer_id(addr: &str) -> CliResult<(i64, i16)> {
    let mut conn = Conn::connect(addr)?;
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = -1;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let (_, response): (_, InitProducerIdResponse) = conn.call(ApiKey::InitProducerId, &req)?;
    if response.error_code != 0 {
        return Err(format!(
            "{addr}: InitProducerId: error {} ({:?})",
            response.error_code,
            kafka_protocol::ResponseError::try_from_code(response.error_code)
        )
        .into());
    }
    Ok((response.producer_id.0, response.producer_epoch))
}

/// A produce request awaiting its response.
struct InFlight {
    id: i32,
    /// (partition, records) in the order of `intended`.
    parts: Vec<(i32, usize)>,
    intended: Vec<Instant>,
}

/// A connection to one leader and what waits to go to it.
struct Link {
    pipe: Pipeline,
    /// Partitions with records waiting, in the order their first record came.
    waiting: Vec<i32>,
    bytes: usize,
    oldest: Option<Instant>,
    in_flight: VecDeque<InFlight>,
}

impl Producing<'_> {
    /// Produces `count` records, or until `deadline` after the start.
    pub(crate) fn run(
        &self,
        count: Option<u64>,
        deadline: Option<Duration>,
    ) -> CliResult<ProducerResult> {
        let args = self.args;
        if args.idempotent && args.in_flight > IDEMPOTENT_IN_FLIGHT_MAX {
            return Err(format!(
                "--idempotent allows --in-flight {IDEMPOTENT_IN_FLIGHT_MAX} at most, as Kafka's \
                 producer does"
            )
            .into());
        }
        let producer = match args.idempotent {
            true => {
                let leader = self.layout.leaders.first().copied().unwrap_or(-1);
                let conn = self.layout.connect(leader)?;
                Some(init_producer_id(conn.addr())?)
            }
            false => None,
        };
        let mut links = Vec::new();
        let mut link_of = vec![0usize; self.partitions as usize];
        for (leader, parts) in self.layout.by_leader() {
            for &p in &parts {
                link_of[p as usize] = links.len();
            }
            links.push(Link {
                pipe: self.layout.connect(leader)?.pipeline(ApiKey::Produce)?,
                waiting: Vec::new(),
                bytes: 0,
                oldest: None,
                in_flight: VecDeque::new(),
            });
        }
        let mut parts: Vec<Waiting> = (0..self.partitions).map(|_| Waiting::default()).collect();
        let mut result = ProducerResult {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram"),
            per_second: Vec::new(),
            acked: 0,
            errors: 0,
            first_error: None,
        };
        let interval = (args.rate > 0.0)
            .then(|| Duration::from_secs_f64(f64::from(args.log.producers) / args.rate));
        let linger = Duration::from_secs_f64(args.linger_ms / 1e3);
        let batch_max = 128u64;
        let mut value = Vec::with_capacity(args.log.size.max);
        let mut seq = 0u64;
        let mut last_send = self.start;
        loop {
            if count.is_some_and(|n| seq >= n)
                || deadline.is_some_and(|d| self.start.elapsed() >= d)
            {
                break;
            }
            let left = count.map_or(batch_max, |n| n - seq).min(batch_max);
            let n = match interval {
                Some(iv) => {
                    let due = self.start + iv.mul_f64(seq as f64);
                    let at = due.max(last_send + PACE_TICK);
                    // Collect responses while waiting for the next record's time.
                    while Instant::now() < at {
                        let wait = at.saturating_duration_since(Instant::now());
                        if !self.settle_one(&mut links, Some(wait), &mut result)? {
                            std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        }
                    }
                    let due = (self.start.elapsed().as_secs_f64() / iv.as_secs_f64()) as u64 + 1;
                    due.saturating_sub(seq).clamp(1, left)
                }
                None => left,
            };
            let now = Instant::now();
            last_send = now;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for j in 0..n {
                let s = seq + j;
                payload(
                    RecordId::new(self.k, s),
                    args.log.size.of(self.k, s),
                    &mut value,
                );
                let p = ((s + u64::from(self.k)) % u64::from(self.partitions)) as usize;
                let link = &mut links[link_of[p]];
                let w = &mut parts[p];
                if w.batch.len() == 0 {
                    link.waiting.push(p as i32);
                }
                let before = w.batch.bytes();
                w.batch.push(&value, millis);
                link.bytes += w.batch.bytes() - before;
                w.intended
                    .push(interval.map_or(now, |iv| self.start + iv.mul_f64(s as f64)));
                link.oldest.get_or_insert(now);
            }
            seq += n;
            // Responses that have come; then requests that are due and have room.
            while self.settle_one(&mut links, None, &mut result)? {}
            for link in &mut links {
                let due = link.bytes >= args.request_bytes
                    || link.oldest.is_some_and(|t| t.elapsed() >= linger);
                if !due {
                    continue;
                }
                // A full window waits for a response only once enough is waiting to fill a
                // request; until then records gather, as a Kafka producer's do.
                while link.in_flight.len() >= args.in_flight as usize
                    && link.bytes >= args.request_bytes
                {
                    self.settle(link, &mut result, true)?;
                }
                if link.in_flight.len() < args.in_flight as usize {
                    self.send(link, &mut parts, producer)?;
                }
            }
            if result.errors > 0 {
                break;
            }
        }
        for link in &mut links {
            if !link.waiting.is_empty() {
                while link.in_flight.len() >= args.in_flight as usize {
                    self.settle(link, &mut result, true)?;
                }
                self.send(link, &mut parts, producer)?;
            }
            while !link.in_flight.is_empty() {
                self.settle(link, &mut result, true)?;
            }
        }
        Ok(result)
    }

    /// Sends what waits for `link` as one produce request (numbered for the idempotent
    /// `producer` if there is one).
    fn send(
        &self,
        link: &mut Link,
        parts: &mut [Waiting],
        producer: Option<(i64, i16)>,
    ) -> CliResult<()> {
        let mut request = InFlight {
            id: 0,
            parts: Vec::with_capacity(link.waiting.len()),
            intended: Vec::new(),
        };
        let mut data = Vec::with_capacity(link.waiting.len());
        for p in link.waiting.drain(..) {
            let w = &mut parts[p as usize];
            request.parts.push((p, w.intended.len()));
            request.intended.append(&mut w.intended);
            let mut d = PartitionProduceData::default();
            d.index = p;
            let numbered = producer.map(|(id, epoch)| {
                let first = w.next_sequence;
                // Sequence numbers wrap to 0 after i32::MAX, as Kafka's do.
                let count = w.batch.len() as i32;
                w.next_sequence = match first.checked_add(count) {
                    Some(next) => next,
                    None => count - (i32::MAX - first) - 1,
                };
                (id, epoch, first)
            });
            d.records = Some(w.batch.take(numbered));
            data.push(d);
        }
        let mut topic = TopicProduceData::default();
        topic.name = topic_name();
        topic.partition_data = data;
        let mut req = ProduceRequest::default();
        req.acks = self.acks;
        req.timeout_ms = 30_000;
        req.topic_data = vec![topic];
        request.id = link.pipe.send(&req)?;
        link.in_flight.push_back(request);
        link.bytes = 0;
        link.oldest = None;
        Ok(())
    }

    /// Settles the oldest request of some link whose response has come (waiting up to `wait`
    /// on the first link with requests out); whether one was settled.
    fn settle_one(
        &self,
        links: &mut [Link],
        wait: Option<Duration>,
        result: &mut ProducerResult,
    ) -> CliResult<bool> {
        for link in links.iter_mut() {
            if !link.in_flight.is_empty() && self.settle_within(link, result, None)? {
                return Ok(true);
            }
        }
        match (wait, links.iter_mut().find(|l| !l.in_flight.is_empty())) {
            (Some(wait), Some(link)) => self.settle_within(link, result, Some(wait)),
            _ => Ok(false),
        }
    }

    /// Settles `link`'s oldest request, waiting for its response if `wait`.
    fn settle(&self, link: &mut Link, result: &mut ProducerResult, wait: bool) -> CliResult<bool> {
        let timeout = wait.then_some(Duration::from_secs(60));
        let settled = self.settle_within(link, result, timeout)?;
        if wait && !settled {
            return Err(format!("no produce response in 60 s from {}", link.pipe.addr()).into());
        }
        Ok(settled)
    }

    fn settle_within(
        &self,
        link: &mut Link,
        result: &mut ProducerResult,
        wait: Option<Duration>,
    ) -> CliResult<bool> {
        let Some(front) = link.in_flight.front() else {
            return Ok(false);
        };
        let Some((at, response)) = link.pipe.receive::<ProduceResponse>(front.id, wait)? else {
            return Ok(false);
        };
        let request = link.in_flight.pop_front().expect("a request was out");
        let mut failed: Vec<(i32, i16)> = Vec::new();
        let mut answered = 0usize;
        for t in &response.responses {
            for p in &t.partition_responses {
                answered += 1;
                if p.error_code != 0 {
                    failed.push((p.index, p.error_code));
                }
            }
        }
        if answered != request.parts.len() {
            failed.extend(request.parts.iter().map(|&(p, _)| (p, -1)));
        }
        let mut at_record = 0usize;
        for &(p, n) in &request.parts {
            let intended = &request.intended[at_record..at_record + n];
            at_record += n;
            match failed.iter().find(|f| f.0 == p) {
                None => {
                    for &t in intended {
                        record_latency(result, self.live, self.start, t, at);
                    }
                    result.acked += n as u64;
                }
                Some(&(_, code)) => {
                    result.errors += n as u64;
                    result.first_error.get_or_insert_with(|| {
                        format!(
                            "partition {p}: error {code} ({:?})",
                            kafka_protocol::ResponseError::try_from_code(code)
                        )
                    });
                }
            }
        }
        Ok(true)
    }
}
