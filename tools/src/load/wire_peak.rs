//! `load peak --bootstrap`: the mission over the Kafka protocol. Producers send at the peak
//! rate with acks as asked; one consumer, assigned every partition, drains from where the
//! partitions ended when the run started, handing records over at the drain rate (held by
//! the client: a rate the broker holds for a consumer group is not served over the protocol
//! yet).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::wire::{Conn, connect_topic};
use super::wire_consume::{DrainOptions, FetchSizes, drain, end_offsets, wire_verify};
use super::wire_group::{MemberRun, run_members, set_group_rate};
use super::wire_produce::{Producing, parse_acks};
use super::*;
use crate::error::CliResult;
use crate::outln;

pub(crate) fn wire_peak(args: PeakArgs, produce_args: ProduceArgs, bootstrap: &str) -> CliResult {
    let acks = parse_acks(&produce_args.acks)?;
    if args.consumers != 1 && args.group.is_none() {
        return Err(
            "--bootstrap without --group drains with one consumer of every partition: give \
             --group G for --consumers members of a group"
                .into(),
        );
    }
    let layout = connect_topic(bootstrap, Some(args.partitions))?;
    let partitions = layout.leaders.len() as u32;
    let from = end_offsets(&layout)?;
    let pacing = match &args.group {
        Some(g) => Some(set_pacing(bootstrap, g, &args.pacing, args.consume_rate)?),
        None => None,
    };
    let deadline = Duration::from_secs_f64(args.duration);
    let live = Live::default();
    let consumed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let mut backlog_series: Vec<(f64, u64)> = Vec::new();
    let expected = if args.log.verify {
        (args.consume_rate * args.duration * 1.1) as usize
    } else {
        0
    };
    let mut check = ConsumedCheck::new(expected);
    let group_clock = OnceLock::new();
    let cpu_start = process_cpu();
    let start = Instant::now();
    let (results, drained, finished) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let (produce_args, layout, live) = (&produce_args, &layout, &live);
                s.spawn(move || {
                    let thread = Producing {
                        args: produce_args,
                        layout,
                        partitions,
                        acks,
                        k,
                        start,
                        live,
                    };
                    thread.run(None, Some(deadline))
                })
            })
            .collect();
        let (live_ref, consumed_ref, done_ref) = (&live, &consumed, &done);
        s.spawn(move || show_progress(args.log.json, live_ref, Some(consumed_ref), done_ref));
        let consumer = {
            let (layout, from, consumed, check) = (&layout, &from, &consumed, &mut check);
            let (verify, group, clock) = (args.log.verify, args.group.as_deref(), &group_clock);
            s.spawn(move || {
                let until = start + deadline + CONSUMER_OVERRUN;
                let sizes = FetchSizes::paced(args.consume_rate);
                let mut on_record = |p: u32, value: &[u8]| {
                    if verify {
                        check.check(p, value);
                    }
                };
                let Some(group) = group else {
                    let options = DrainOptions {
                        sizes,
                        rate: args.consume_rate,
                        until: Some(until),
                    };
                    let to = vec![i64::MAX; from.len()];
                    return drain(layout, from, &to, options, consumed, &mut on_record)
                        .map(|d| (d, None));
                };
                let on_record = Mutex::new(on_record);
                let run = MemberRun {
                    layout,
                    bootstrap,
                    group,
                    from,
                    sizes,
                    rate: match pacing {
                        Some(Pacing::Server) => 0.0,
                        _ => args.consume_rate,
                    },
                    until,
                    commit_every: Duration::from_secs(1),
                    clock,
                    consumed,
                    on_record: &on_record,
                    protocol: args.group_protocol,
                };
                let saw = run_members(&run, args.consumers)?;
                Ok((saw.drained, Some((saw.rebalances, saw.assigned_at))))
            })
        };
        while start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let backlog = live
                .acked
                .load(Ordering::Relaxed)
                .saturating_sub(consumed.load(Ordering::Relaxed));
            backlog_series.push((start.elapsed().as_secs_f64(), backlog));
        }
        let results: Vec<CliResult<ProducerResult>> = producers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".into()))
            })
            .collect();
        let drained = consumer
            .join()
            .unwrap_or_else(|_| Err("the consumer thread panicked".into()));
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, drained, finished)
    });
    if let (Some(Pacing::Server), Some(g)) = (pacing, &args.group) {
        // The group's rate was this run's: removed from the broker.
        let mut conn = Conn::connect(bootstrap)?;
        if let Err(e) = set_group_rate(&mut conn, g, None)? {
            eprintln!("note: removing group {g:?}'s rate at {bootstrap}: {e}");
        }
    }
    let results = results.into_iter().collect::<CliResult<Vec<_>>>()?;
    let (drained, group_saw) = drained?;
    let (elapsed, cpu) = (finished.0, finished.1 - cpu_start);
    // A group consumes from its first assignment (a broker waits for members to join before
    // it assigns: Kafka's group.initial.rebalance.delay.ms); its rate counts from there.
    let assigned_after = group_saw
        .and_then(|(_, at)| at)
        .map(|at| at.saturating_duration_since(start).as_secs_f64());
    let consuming = elapsed - assigned_after.unwrap_or(0.0);
    let (histogram, produced, errors, first_error) = merge(&results);
    let verify = match args.log.verify {
        true => {
            let mut v = wire_verify(&layout, &produce_args, &results, &from)?;
            v.corrupt += check.corrupt;
            v.duplicated += check.duplicated;
            v.out_of_order += check.out_of_order;
            Some(v)
        }
        false => None,
    };
    let whole = drained.per_second.len().saturating_sub(1);
    let latency = latency_json(&histogram);
    let mut report = json!({
        "scenario": "peak",
        "bootstrap": bootstrap,
        "acks": produce_args.acks,
        "idempotent": produce_args.idempotent,
        "durability": "the broker's, with the acks above",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": partitions,
        "producers": args.log.producers,
        "target_rate": args.produce_rate,
        "consume_rate": args.consume_rate,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": produced as f64 / elapsed,
        "consumed": drained.records,
        "consume_msgs_per_s": drained.records as f64 / consuming,
        "consumer_fetches": drained.fetches,
        "group": args.group,
        "consumers": args.consumers,
        "pacing": pacing.map(Pacing::name),
        "group_protocol": args.group.as_ref().map(|_| args.group_protocol.name()),
        "group_assigned_after_s": assigned_after,
        "group_rebalances": group_saw.map(|(r, _)| r),
        "consume_rate_error_pct": rate_error_pct(&drained.per_second, whole, args.consume_rate),
        "consumed_per_second": drained.per_second,
        "backlog_max": backlog_series.iter().map(|b| b.1).max().unwrap_or(0),
        "backlog": backlog_series.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>(),
        "client_cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "ack_latency_us": latency,
        "verify": verify_json(verify.as_ref()),
    });
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load peak --bootstrap {bootstrap}: {} msgs/s in, {} msgs/s out, {} B, \
             {partitions} partitions, acks={}",
            args.produce_rate, args.consume_rate, args.log.size, produce_args.acks
        );
        plot(
            path,
            title,
            &seconds,
            Some(&drained.per_second),
            &backlog_series,
        )?;
    }
    if args.log.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load peak --bootstrap {bootstrap}: produce {} msgs/s, consume {} msgs/s, \
             {} B, {partitions} partition(s), {} s, acks={}",
            args.produce_rate,
            args.consume_rate,
            args.log.size,
            args.duration,
            produce_args.acks
        );
        outln!(
            "  produced     {produced} ({:.0} msgs/s)   ack p50 {} µs  p99 {} µs  p99.9 {} µs",
            report["produce_msgs_per_s"].as_f64().unwrap_or(0.0),
            latency["p50"],
            latency["p99"],
            latency["p999"]
        );
        outln!(
            "  consumed     {} ({:.0} msgs/s)   worst 1 s window off by {:.3}%   backlog max {}",
            drained.records,
            report["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["consume_rate_error_pct"].as_f64().unwrap_or(0.0),
            report["backlog_max"]
        );
        if let Some(g) = &args.group {
            outln!(
                "  group        {g:?}: {} members ({} protocol), paced by the {}, assigned \
                 {:.2} s after the start, {} rebalance(s)",
                args.consumers,
                args.group_protocol.name(),
                match pacing {
                    Some(Pacing::Server) => "broker",
                    _ => "members",
                },
                assigned_after.unwrap_or(0.0),
                group_saw.map_or(0, |(r, _)| r)
            );
        }
        print_verify(verify.as_ref());
    }
    finish_run(errors, first_error, verify.as_ref(), false, None)
}

/// Where a group's rate is held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// Set on the group at the broker, which paces its members' fetches.
    Server,
    /// Each member hands over its share.
    Client,
}

impl Pacing {
    fn name(self) -> &'static str {
        match self {
            Pacing::Server => "server",
            Pacing::Client => "client",
        }
    }
}

/// Sets the group's rate on the broker as `--pacing` says (`auto`: where the broker paces
/// groups, else the members pace themselves).
fn set_pacing(bootstrap: &str, group: &str, pacing: &str, rate: f64) -> CliResult<Pacing> {
    if pacing == "client" {
        return Ok(Pacing::Client);
    }
    if pacing != "server" && pacing != "auto" {
        return Err(format!("--pacing {pacing:?}: `server`, `client` or `auto`").into());
    }
    match set_group_rate(&mut Conn::connect(bootstrap)?, group, Some(rate))? {
        Ok(()) => Ok(Pacing::Server),
        Err(e) if pacing == "auto" => {
            eprintln!(
                "note: {bootstrap} does not pace group {group:?} ({e}): each member holds its \
                 share of the rate"
            );
            Ok(Pacing::Client)
        }
        Err(e) => Err(format!("{bootstrap}: setting group {group:?}'s rate: {e}").into()),
    }
}
