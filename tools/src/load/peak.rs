//! `load peak`: the mission's scenario, producers at the peak rate and a paced consumer group
//! draining behind them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::error::CliResult;
use crate::outln;

pub(crate) fn peak(args: PeakArgs) -> CliResult {
    if args.consume_rate <= 0.0 || args.produce_rate <= 0.0 {
        return Err("--produce-rate and --consume-rate must be positive".into());
    }
    let produce_args = ProduceArgs {
        log: args.log.clone(),
        messages: None,
        duration: Some(args.duration),
        partitions: args.partitions,
        rate: args.produce_rate,
        segment_bytes: args.segment_bytes,
        commit_bytes_max: 4 << 20,
        no_prezero: false,
        no_rewrite: args.no_rewrite,
        no_pin: false,
        // Pinned to the one core the writer leaves on a 2-core machine, the producer would wait
        // out whatever else runs there while the writer's core idles (see Log::other_cores;
        // docs/TUNING.md, "Other processes on the machine").
        producers_free: true,
        tail_cache_bytes: floodgate::config::TAIL_CACHE_BYTES_DEFAULT,
        // The mission's producer as an embedding application gets it: the library's ring.
        window_bytes: WINDOW_BYTES_DEFAULT,
        ring_records: floodgate::config::RING_RECORDS_DEFAULT,
        bootstrap: args.bootstrap.clone(),
        acks: args.acks.clone(),
        idempotent: args.idempotent,
        linger_ms: 0.0,
        request_bytes: 1 << 20,
        in_flight: 5,
    };
    if let Some(bootstrap) = args.bootstrap.clone() {
        return super::wire_peak::wire_peak(args, produce_args, &bootstrap);
    }
    let (log, dir, tmp, backend, device) = open_load_log(&produce_args)?;
    let deadline = Duration::from_secs_f64(args.duration);
    let live = Live::default();
    let consumed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let mut backlog_series: Vec<(f64, u64)> = Vec::new();
    let (results, consume_stats, finished) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..args.log.producers)
            .map(|k| {
                let (log, produce_args, live) = (&log, &produce_args, &live);
                s.spawn(move || {
                    producer_thread(log, produce_args, k, None, Some(deadline), start, live)
                })
            })
            .collect();
        let (live, consumed_ref, done_ref) = (&live, &consumed, &done);
        s.spawn(move || show_progress(args.log.json, live, Some(consumed_ref), done_ref));
        let consumer = {
            let (log, consumed) = (&log, &consumed);
            // Members count their seconds from their own start, a few ms after the run's: they
            // run on a little past the producers, so their last second is whole too.
            let stop =
                move |_: &floodgate::Consumer| start.elapsed() >= deadline + CONSUMER_OVERRUN;
            let expected = (args.consume_rate * args.duration * 1.1) as usize;
            s.spawn(move || {
                let options = ConsumeOptions {
                    rate: args.consume_rate,
                    group: Some(PEAK_GROUP),
                    commit_interval: Duration::from_secs(1),
                    commit_journal: None,
                };
                consume_members(
                    log,
                    &options,
                    args.consumers,
                    start,
                    args.log.verify,
                    expected,
                    consumed,
                    &stop,
                )
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
        let results: Vec<ProducerResult> = producers
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .collect();
        let consumed = consumer.join().expect("consumer thread");
        // Measured before the progress thread ends (it looks every 250 ms).
        let finished = (start.elapsed().as_secs_f64(), process_cpu());
        done.store(true, Ordering::Release);
        (results, consumed, finished)
    });
    let consume_stats = consume_stats?;
    let elapsed = finished.0;
    let cpu = finished.1 - cpu_start;
    let (histogram, produced, errors, first_error) = merge(&results);
    let writer = writer_json(&log);
    let verify = args.log.verify.then(|| {
        let mut v = verify(&log, &produce_args, &results);
        v.corrupt += consume_stats.check.corrupt;
        v.duplicated += consume_stats.check.duplicated;
        v.out_of_order += consume_stats.check.out_of_order;
        v
    });
    // What the group has not committed yet when the run ends, and how long it takes at its
    // rate (the members committed as they left).
    let group = log
        .group_lag(PEAK_GROUP, TOPIC)
        .map_err(|e| e.to_string())?;
    let time_to_drain = group
        .time_to_drain
        .map_or(group.lag as f64 / args.consume_rate, |d| d.as_secs_f64());
    drop(log);
    let fs = fs_type(&dir);
    let whole = consume_stats
        .whole_seconds
        .min(consume_stats.per_second.len());
    let mut report = json!({
        "scenario": "peak",
        "message_bytes": args.log.size.mean(),
        "message_size": args.log.size.label(),
        "partitions": args.partitions,
        "producers": args.log.producers,
        "shards": args.log.shards,
        "durability": args.log.durability,
        "io_backend": backend.name(),
        "target_rate": args.produce_rate,
        "consume_rate": args.consume_rate,
        "consumers": args.consumers,
        "rewrite_sealed_segments": !args.no_rewrite,
        "duration_s": elapsed,
        "produced": produced,
        "errors": errors,
        "produce_msgs_per_s": produced as f64 / elapsed,
        "produce_mb_per_s": produced as f64 * args.log.size.mean() / 1e6 / elapsed,
        "consumed": consume_stats.consumed,
        "consume_msgs_per_s": consume_stats.consumed as f64 / elapsed,
        "consume_mb_per_s": consume_stats.bytes as f64 / 1e6 / elapsed,
        "consume_rate_error_pct": rate_error_pct(&consume_stats.per_second, whole, args.consume_rate),
        "consumed_per_second": consume_stats.per_second,
        "backlog_max": backlog_series.iter().map(|b| b.1).max().unwrap_or(0),
        "backlog": backlog_series.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>(),
        "group_lag": group.lag,
        "time_to_drain_s": time_to_drain,
        "cpu_cores_used": cpu.as_secs_f64() / elapsed,
        "ack_latency_us": latency_json(&histogram),
        "verify": verify_json(verify.as_ref()),
        "env": env_json(&dir, &fs),
    });
    let (produce_mb, consume_mb) = (
        report["produce_mb_per_s"].as_f64(),
        report["consume_mb_per_s"].as_f64(),
    );
    merge_json(&mut report, device_json(device, produce_mb, consume_mb));
    merge_json(&mut report, writer);
    let seconds = per_second(&results);
    merge_json(&mut report, series_json(&seconds));
    if let Some(path) = &args.log.plot {
        let title = format!(
            "floodgate load peak: {} msgs/s in, {} msgs/s out, {} B, {} partitions",
            args.produce_rate, args.consume_rate, args.log.size, args.partitions
        );
        plot(
            path,
            title,
            &seconds,
            Some(&consume_stats.per_second),
            &backlog_series,
        )?;
    }
    if args.log.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load peak: produce {} msgs/s, consume {} msgs/s, {} B, {} partition(s), {} s, durability {}, {} on {}",
            args.produce_rate,
            args.consume_rate,
            args.log.size,
            args.partitions,
            args.duration,
            args.log.durability,
            backend.name(),
            fs
        );
        print_device(&report);
        outln!(
            "  produced     {produced} ({:.0} msgs/s)   ack p50 {} µs  p99 {} µs  p99.9 {} µs",
            report["produce_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["ack_latency_us"]["p50"],
            report["ack_latency_us"]["p99"],
            report["ack_latency_us"]["p999"]
        );
        outln!(
            "  consumed     {} ({:.0} msgs/s)   worst 1 s window off by {:.3}%   backlog max {}",
            consume_stats.consumed,
            report["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            report["consume_rate_error_pct"].as_f64().unwrap_or(0.0),
            report["backlog_max"]
        );
        outln!(
            "  group lag    {} at the end: {time_to_drain:.1} s to drain at {} msgs/s",
            group.lag,
            args.consume_rate
        );
        print_verify(verify.as_ref());
    }
    finish_run(errors, first_error, verify.as_ref(), args.log.keep, tmp)
}
