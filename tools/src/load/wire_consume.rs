//! `load consume --bootstrap`: draining the load topic from a broker over the Kafka protocol,
//! as a consumer that assigns itself every partition (no group): sessionless fetches of every
//! partition not yet drained, one in flight per leader, as a Kafka consumer sends them
//! (`fetch.max.bytes` 50 MiB, `max.partition.fetch.bytes` 1 MiB by default). A rate, if
//! given, is held by handing records over no faster than it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use serde_json::json;

use super::wire::{
    Conn, TopicLayout, connect_topic, each_record, list_offsets, topic_name, whole_batches,
};
use super::*;
use crate::error::CliResult;
use crate::outln;

/// Each partition's next offset (ListOffsets latest).
pub(crate) fn end_offsets(layout: &TopicLayout) -> CliResult<Vec<i64>> {
    list_offsets(layout, -1)
}

/// How the fetches of a drain are sized.
#[derive(Clone, Copy)]
pub(crate) struct FetchSizes {
    pub(crate) max_bytes: i32,
    pub(crate) partition_max_bytes: i32,
    pub(crate) max_wait_ms: i32,
}

impl FetchSizes {
    /// A paced consumer's fetches: about a tenth of a second of records at `rate` (of 100
    /// bytes), at least 64 KiB, at most the default. A paced drain takes each response over a
    /// while; a fetch of 50 MiB made the broker and this client copy megabytes at once, in
    /// the producers' way.
    pub(crate) fn paced(rate: f64) -> FetchSizes {
        let default = FetchSizes::default();
        let bytes = (rate * 0.1 * 100.0).clamp(64.0 * 1024.0, f64::from(default.max_bytes)) as i32;
        FetchSizes {
            max_bytes: bytes,
            partition_max_bytes: bytes.min(default.partition_max_bytes),
            ..default
        }
    }
}

impl Default for FetchSizes {
    fn default() -> FetchSizes {
        FetchSizes {
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            max_wait_ms: 500,
        }
    }
}

/// What a drain saw.
#[derive(Default)]
pub(crate) struct Drained {
    pub(crate) records: u64,
    pub(crate) value_bytes: u64,
    /// Bytes of record sets fetched (batches as the broker stores them).
    pub(crate) fetched_bytes: u64,
    pub(crate) fetches: u64,
    /// Records handed over in each second since the drain started.
    pub(crate) per_second: Vec<u64>,
    /// The second the records being handed over count in.
    pub(crate) second: usize,
}

/// How a drain goes: what it fetches and how fast it hands records over.
#[derive(Clone, Copy, Default)]
pub(crate) struct DrainOptions {
    pub(crate) sizes: FetchSizes,
    /// Records per second handed over at most (0: as they come).
    pub(crate) rate: f64,
    /// Stop here, whatever is left (records beyond `to` are not waited for).
    pub(crate) until: Option<Instant>,
}

/// Fetches every partition from `from` up to `to` (exclusive), or until `options.until`,
/// handing each record's partition and value to `f` in its partition's order. As a Kafka
/// client does, the next fetch of a leader is sent as soon as a response arrives (its offsets
/// follow the response's last whole batches), and the records of that response are handed
/// over while the broker answers the next (its response waits in the socket).
pub(crate) fn drain(
    layout: &TopicLayout,
    from: &[i64],
    to: &[i64],
    options: DrainOptions,
    consumed: &AtomicU64,
    f: &mut dyn FnMut(u32, &[u8]),
) -> CliResult<Drained> {
    let DrainOptions { sizes, rate, until } = options;
    // Where each partition's records were handed over to, and where its next fetch starts.
    let mut position = from.to_vec();
    let mut fetch_at = from.to_vec();
    let mut links: Vec<Link> = Vec::new();
    for (leader, parts) in layout.by_leader() {
        links.push(Link {
            conn: layout.connect(leader)?,
            parts,
            in_flight: None,
        });
    }
    let mut out = Drained::default();
    let start = Instant::now();
    let stopped = || until.is_some_and(|t| Instant::now() >= t);
    for link in &mut links {
        link.in_flight = link.fetch(&fetch_at, to, sizes, stopped())?;
    }
    while links.iter().any(|l| l.in_flight.is_some()) {
        for link in &mut links {
            let Some(id) = link.in_flight.take() else {
                continue;
            };
            let addr = link.conn.addr().to_owned();
            let response: FetchResponse = link.conn.receive(ApiKey::Fetch, id)?;
            out.fetches += 1;
            if response.error_code != 0 {
                return Err(format!("{addr}: fetch: error {}", response.error_code).into());
            }
            // Check the partitions and move their fetch offsets past the whole batches, then
            // ask for more before handing these over.
            let mut sets = Vec::new();
            for t in &response.responses {
                for p in &t.partitions {
                    let index = p.partition_index;
                    let Some(i) = usize::try_from(index).ok().filter(|&i| i < to.len()) else {
                        return Err(format!("{addr}: a fetch answered partition {index}").into());
                    };
                    if p.error_code != 0 {
                        return Err(format!(
                            "{addr}: fetch of partition {index}: error {} ({:?})",
                            p.error_code,
                            kafka_protocol::ResponseError::try_from_code(p.error_code)
                        )
                        .into());
                    }
                    let Some(records) = &p.records else { continue };
                    if let Some(next) = next_offset(records) {
                        fetch_at[i] = next.max(fetch_at[i]);
                    }
                    sets.push((i, records));
                }
            }
            link.in_flight = link.fetch(&fetch_at, to, sizes, stopped())?;
            for (i, records) in sets {
                out.fetched_bytes += records.len() as u64;
                let end = to[i];
                let pos = &mut position[i];
                let next = each_record(records, *pos, |offset, value| {
                    if offset < end && until.is_none_or(|t| Instant::now() < t) {
                        let value = value.unwrap_or_default();
                        hand_over(&mut out, start, rate, consumed, i as u32, value, f);
                    }
                })
                .map_err(|e| format!("{addr}: partition {i}: {e}"))?;
                if let Some(next) = next {
                    *pos = next.max(*pos);
                }
            }
        }
    }
    consumed.store(out.records, Ordering::Relaxed);
    Ok(out)
}

/// A leader's connection in a drain and the partitions it leads.
struct Link {
    conn: Conn,
    parts: Vec<i32>,
    /// The correlation id of its fetch in flight.
    in_flight: Option<i32>,
}

impl Link {
    /// Sends a fetch of its partitions not yet fetched up to `to`, from `fetch_at`, unless
    /// the drain is `stopped` or none is left; returns its correlation id.
    fn fetch(
        &mut self,
        fetch_at: &[i64],
        to: &[i64],
        sizes: FetchSizes,
        stopped: bool,
    ) -> CliResult<Option<i32>> {
        let asked: Vec<(i32, i64)> = (self.parts.iter())
            .filter(|&&p| fetch_at[p as usize] < to[p as usize])
            .map(|&p| (p, fetch_at[p as usize]))
            .collect();
        if asked.is_empty() || stopped {
            return Ok(None);
        }
        Ok(Some(
            self.conn
                .send(ApiKey::Fetch, &fetch_request(&asked, sizes))?,
        ))
    }
}

/// A sessionless fetch of the load topic's `partitions` (index, fetch offset), sized as
/// `sizes` says.
pub(crate) fn fetch_request(partitions: &[(i32, i64)], sizes: FetchSizes) -> FetchRequest {
    let mut topic = FetchTopic::default();
    topic.topic = topic_name();
    topic.partitions = (partitions.iter())
        .map(|&(p, at)| {
            let mut q = FetchPartition::default();
            q.partition = p;
            q.fetch_offset = at;
            q.partition_max_bytes = sizes.partition_max_bytes;
            q.log_start_offset = -1;
            q.current_leader_epoch = -1;
            q.last_fetched_epoch = -1;
            q
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = sizes.max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = sizes.max_bytes;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = vec![topic];
    req
}

/// The offset after the last whole batch of a record set (a batch cut short at its end is
/// fetched again), from the batches' headers alone; `None` if it holds no whole batch.
pub(crate) fn next_offset(records: &[u8]) -> Option<i64> {
    let last = whole_batches(records).map_while(Result::ok).last()?;
    let field = |at: usize| -> Option<[u8; 4]> { last.get(at..at + 4)?.try_into().ok() };
    let base = i64::from_be_bytes(last.get(..8)?.try_into().ok()?);
    Some(base + i64::from(i32::from_be_bytes(field(23)?)) + 1)
}

/// Hands a fetched record to `f`, no faster than `rate` if it is above 0.
fn hand_over(
    out: &mut Drained,
    start: Instant,
    rate: f64,
    consumed: &AtomicU64,
    partition: u32,
    value: &[u8],
    f: &mut dyn FnMut(u32, &[u8]),
) {
    // The clock is read every 64 records: a record every 12 µs at 80,000/s, so the rate
    // holds within a millisecond.
    if out.records.is_multiple_of(64) {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(out.records as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let second = start.elapsed().as_secs() as usize;
        if out.per_second.len() <= second {
            out.per_second.resize(second + 1, 0);
        }
        out.second = second;
        consumed.store(out.records, Ordering::Relaxed);
    }
    out.per_second[out.second] += 1;
    out.records += 1;
    out.value_bytes += value.len() as u64;
    f(partition, value);
}

/// `load produce --bootstrap --verify`: reads back what the partitions gained since `from`
/// and checks it as the embedded scenario does.
pub(crate) fn wire_verify(
    layout: &TopicLayout,
    args: &ProduceArgs,
    results: &[ProducerResult],
    from: &[i64],
) -> CliResult<Verify> {
    let to = end_offsets(layout)?;
    let mut check = Checker::new(args);
    let counter = AtomicU64::new(0);
    drain(
        layout,
        from,
        &to,
        DrainOptions::default(),
        &counter,
        &mut |p, value| check.check_value(p, value),
    )?;
    Ok(check.finish(results))
}

/// The consume scenario over the protocol: drains the load topic from its earliest offsets to
/// the latest at the start.
pub(crate) fn wire_consume(args: ConsumeArgs, bootstrap: &str) -> CliResult {
    if args.group.is_some() || args.consumers != 1 {
        return Err(
            "--bootstrap consumes as one consumer of every partition: consumer groups \
                    over the protocol (--group, --consumers) are not served yet"
                .into(),
        );
    }
    let layout = connect_topic(bootstrap, None)?;
    let from = list_offsets(&layout, -2)?;
    let to = end_offsets(&layout)?;
    let expected: i64 = to.iter().zip(&from).map(|(t, f)| t - f).sum();
    let mut check = ConsumedCheck::new(if args.verify {
        expected.max(0) as usize
    } else {
        0
    });
    let consumed = AtomicU64::new(0);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let options = DrainOptions {
        rate: args.consume_rate,
        sizes: FetchSizes {
            max_bytes: args.fetch_max_bytes,
            partition_max_bytes: args.partition_fetch_max_bytes,
            ..FetchSizes::default()
        },
        ..DrainOptions::default()
    };
    let drained = drain(&layout, &from, &to, options, &consumed, &mut |p, value| {
        if args.verify {
            check.check(p, value);
        }
    })?;
    let ConsumedCheck {
        corrupt,
        duplicated,
        out_of_order,
        ..
    } = check;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu_start;
    let msgs_per_s = drained.records as f64 / elapsed;
    let whole = drained.per_second.len().saturating_sub(1);
    let rate_error_pct = (args.consume_rate > 0.0 && whole > 0).then(|| {
        drained.per_second[..whole]
            .iter()
            .map(|&n| (n as f64 - args.consume_rate).abs() / args.consume_rate * 100.0)
            .fold(0.0, f64::max)
    });
    let report = json!({
        "scenario": "consume",
        "bootstrap": bootstrap,
        "partitions": layout.leaders.len(),
        "target_rate": args.consume_rate,
        "consumed": drained.records,
        "expected": expected,
        "duration_s": elapsed,
        "consume_msgs_per_s": msgs_per_s,
        "consume_mb_per_s": drained.value_bytes as f64 / 1e6 / elapsed,
        "fetched_mb_per_s": drained.fetched_bytes as f64 / 1e6 / elapsed,
        "fetches": drained.fetches,
        "consume_rate_error_pct": rate_error_pct,
        "consumed_per_second": drained.per_second,
        "client_cpu_ns_per_msg": cpu.as_nanos() as f64 / drained.records.max(1) as f64,
        "verify": args.verify.then(|| json!({
            "checked": drained.records, "duplicated": duplicated, "corrupt": corrupt,
            "out_of_order": out_of_order,
        })),
    });
    if args.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load consume --bootstrap {bootstrap}: {} records of {} partition(s)",
            drained.records,
            layout.leaders.len()
        );
        outln!(
            "  throughput   {:>12.0} msgs/s   {:>8.1} MB/s of values   over {:.2} s, {} fetches",
            msgs_per_s,
            drained.value_bytes as f64 / 1e6 / elapsed,
            elapsed,
            drained.fetches
        );
        if args.verify {
            outln!(
                "  verify       checked {}  duplicated {duplicated}  corrupt {corrupt}  out of \
                 order {out_of_order}",
                drained.records
            );
        }
    }
    if drained.records as i64 != expected {
        return Err(format!(
            "consumed {} records where {expected} were there",
            drained.records
        )
        .into());
    }
    if corrupt + duplicated + out_of_order > 0 {
        return Err("load run found errors".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::wire::BatchBuilder;

    /// A batch of `n` records at `base`, as a broker answers it.
    fn batch_at(base: i64, n: usize) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        for i in 0..n {
            b.push(&[i as u8; 10], 1_700_000_000_000);
        }
        let mut batch = b.take(None).to_vec();
        batch[0..8].copy_from_slice(&base.to_be_bytes());
        batch
    }

    /// The next fetch starts after the last whole batch: a batch cut short at the end of the
    /// set (a broker may send one) is asked for again.
    #[test]
    fn the_next_fetch_starts_after_the_last_whole_batch() {
        assert_eq!(next_offset(&[]), None);
        let mut set = batch_at(40, 3);
        assert_eq!(next_offset(&set), Some(43));
        set.extend_from_slice(&batch_at(43, 5));
        assert_eq!(next_offset(&set), Some(48));
        let whole = set.len();
        set.extend_from_slice(&batch_at(48, 2));
        assert_eq!(next_offset(&set[..set.len() - 1]), Some(48));
        assert_eq!(next_offset(&set[..whole + 20]), Some(48));
        assert_eq!(next_offset(&set), Some(50));
        // Less than a header, or a length that does not fit: no whole batch.
        assert_eq!(next_offset(&set[..26]), None);
        let mut bad = batch_at(0, 1);
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(next_offset(&bad), None);
    }
}
