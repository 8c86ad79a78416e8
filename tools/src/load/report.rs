//! What a load run prints: JSON fields, per-second series, the plot, the device baseline
//! beside the run's bandwidth, and the live progress line.

use std::path::Path;

use floodgate::{Log, ShardStats};
use hdrhistogram::Histogram;
use serde_json::json;

use super::*;
use crate::error::{CliError, CliResult};
use crate::outln;

/// The device baseline's JSON fields, with the load's MB/s as ratios of it.
pub(crate) fn device_json(
    device: Option<floodgate::DeviceBaseline>,
    write_mb_per_s: Option<f64>,
    read_mb_per_s: Option<f64>,
) -> serde_json::Value {
    let Some(d) = device else {
        return json!({});
    };
    json!({
        "device_write_mb_per_s": d.write_mb_per_s,
        "device_read_mb_per_s": d.read_mb_per_s,
        "device_write_ratio": write_mb_per_s.map(|w| w / d.write_mb_per_s),
        "device_read_ratio": read_mb_per_s.map(|r| r / d.read_mb_per_s),
    })
}

/// The device baseline lines of the human-readable report, if it was measured.
pub(crate) fn print_device(report: &serde_json::Value) {
    let (Some(w), Some(r)) = (
        report["device_write_mb_per_s"].as_f64(),
        report["device_read_mb_per_s"].as_f64(),
    ) else {
        return;
    };
    let ratio = |k: &str| {
        report[k]
            .as_f64()
            .map_or(String::new(), |x| format!(" (floodgate: {x:.2} of it)"))
    };
    outln!(
        "  device       O_DIRECT sequential write {w:.0} MB/s{}, read {r:.0} MB/s{}",
        ratio("device_write_ratio"),
        ratio("device_read_ratio")
    );
}

/// Adds `extra`'s fields to the object `report`.
/// The shard writers' group commits over the run: how many, how big, how long they took.
pub(crate) fn writer_json(log: &Log) -> serde_json::Value {
    let mut s = ShardStats::default();
    for shard in log.stats() {
        s += shard;
    }
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    json!({
        "writes": s.writes,
        "flushes": s.flushes,
        "segment_rolls": s.rolls,
        "segment_rolls_unzeroed": s.rolls_unzeroed,
        "records_per_write": per(s.records, s.writes),
        "batches_per_write": per(s.batches, s.writes),
        "write_bytes_mean": per(s.write_bytes, s.writes),
        "write_latency_us_mean": per(s.write_nanos, s.writes) / 1e3,
        "flush_latency_us_mean": per(s.flush_nanos, s.flushes) / 1e3,
        "rewrites": rewrites_json(&s),
    })
}

/// The rewrites of sealed segments in `s` (`Config::rewrite_sealed_segments`).
pub(crate) fn rewrites_json(s: &ShardStats) -> serde_json::Value {
    json!({
        "done": s.rewrites_done,
        "skipped": s.rewrites_skipped,
        "failed": s.rewrites_failed,
        "read_bytes": s.rewrite_read_bytes,
        "written_bytes": s.rewrite_write_bytes,
    })
}

pub(crate) fn merge_json(report: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(r), serde_json::Value::Object(e)) = (report.as_object_mut(), extra) {
        r.extend(e);
    }
}

/// A histogram for one second's ack latencies (µs, up to an hour, 2 significant digits).
pub(crate) fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("histogram")
}

/// Each second's ack latencies over all producers.
pub(crate) fn per_second(results: &[ProducerResult]) -> Vec<Histogram<u64>> {
    let len = results
        .iter()
        .map(|r| r.per_second.len())
        .max()
        .unwrap_or(0);
    (0..len)
        .map(|i| {
            let mut h = second_histogram();
            for r in results {
                if let Some(s) = r.per_second.get(i) {
                    h.add(s).expect("same bounds");
                }
            }
            h
        })
        .collect()
}

/// Draws a run's per-second series into an SVG file.
pub(crate) fn plot(
    path: &Path,
    title: String,
    seconds: &[Histogram<u64>],
    consumed: Option<&[u64]>,
    backlog: &[(f64, u64)],
) -> CliResult {
    // Whole seconds only: the last, partial one would show as a drop.
    let whole = seconds.len().saturating_sub(1).max(1).min(seconds.len());
    let seconds = &seconds[..whole];
    let consumed = consumed.map(|c| &c[..c.len().min(whole)]);
    let map = |f: &dyn Fn(&Histogram<u64>) -> u64| seconds.iter().map(f).collect::<Vec<u64>>();
    let (produced, p50, p99, max) = (
        map(&|h| h.len()),
        map(&|h| h.value_at_quantile(0.5)),
        map(&|h| h.value_at_quantile(0.99)),
        map(&|h| h.max()),
    );
    crate::plot::draw(
        path,
        &crate::plot::Series {
            title,
            produced: &produced,
            consumed,
            backlog,
            p50_us: &p50,
            p99_us: &p99,
            max_us: &max,
        },
    )
    .map_err(CliError::from)
}

/// Per-second series of a load run: records acknowledged (by intended second), and ack latency
/// p50, p99 and max, µs.
pub(crate) fn series_json(seconds: &[Histogram<u64>]) -> serde_json::Value {
    let map = |f: &dyn Fn(&Histogram<u64>) -> u64| seconds.iter().map(f).collect::<Vec<u64>>();
    json!({
        "produced_per_second": map(&|h| h.len()),
        "ack_latency_max_us_per_second": map(&|h| h.max()),
        "ack_latency_p99_us_per_second": map(&|h| h.value_at_quantile(0.99)),
        "ack_latency_p50_us_per_second": map(&|h| h.value_at_quantile(0.5)),
    })
}

/// Producer threads' results merged: latency histogram, acked, errors, first error.
pub(crate) fn merge(results: &[ProducerResult]) -> (Histogram<u64>, u64, u64, Option<String>) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    let (mut produced, mut errors, mut first_error) = (0, 0, None);
    for r in results {
        histogram.add(&r.histogram).expect("histograms merge");
        produced += r.acked;
        errors += r.errors;
        first_error = first_error.or(r.first_error.clone());
    }
    (histogram, produced, errors, first_error)
}

pub(crate) fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

pub(crate) fn verify_json(v: Option<&Verify>) -> serde_json::Value {
    match v {
        Some(v) => json!({
            "checked": v.checked, "missing": v.missing, "duplicated": v.duplicated,
            "corrupt": v.corrupt, "out_of_order": v.out_of_order,
        }),
        None => serde_json::Value::Null,
    }
}

pub(crate) fn print_verify(v: Option<&Verify>) {
    if let Some(v) = v {
        outln!(
            "  verify       checked {}  missing {}  duplicated {}  corrupt {}  out of order {}",
            v.checked,
            v.missing,
            v.duplicated,
            v.corrupt,
            v.out_of_order
        );
    }
}

/// Reports failed sends, keeps the data directory if asked, and fails the run on any error.
pub(crate) fn finish_run(
    errors: u64,
    first_error: Option<String>,
    verify: Option<&Verify>,
    keep: bool,
    tmp: Option<tempfile::TempDir>,
) -> CliResult {
    if let Some(e) = first_error {
        eprintln!("floodgate: {errors} send(s) failed; first: {e}");
    }
    if keep && let Some(t) = tmp {
        let kept = t.keep();
        eprintln!("kept data directory {}", kept.display());
    }
    let bad = verify.is_some_and(|v| v.missing + v.duplicated + v.corrupt + v.out_of_order > 0);
    if errors > 0 || bad {
        return Err("load run found errors".into());
    }
    Ok(())
}
