//! `load idle`: what an idle log costs (CPU, wake-ups).

use std::time::{Duration, Instant};

use floodgate::{Ack, Config, Log, Record, TopicConfig};
use serde_json::json;

use super::*;
use crate::error::CliResult;
use crate::outln;

/// Opens a log, sends one record (so a producer ring exists), then stays idle and reports the
/// process's CPU use over that time as a percentage of one core.
pub(crate) fn idle(args: IdleArgs) -> CliResult {
    let (dir, _tmp) = data_dir(args.dir.as_ref(), false)?;
    let log = Log::open(Config::new(&dir).shards(args.shards))?;
    if !log.list_topics().iter().any(|t| t.name == TOPIC) {
        log.create_topic(TOPIC, TopicConfig::new(1))
            .map_err(|e| e.to_string())?;
    }
    let mut producer = log.producer();
    producer
        .send(TOPIC, Record::new(b"idle"))
        .and_then(Ack::wait)
        .map_err(|e| e.to_string())?;
    // Let the segment helper finish preparing the next segment before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let cpu_start = process_cpu();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let cpu = process_cpu() - cpu_start;
    let pct = 100.0 * cpu.as_secs_f64() / start.elapsed().as_secs_f64();
    drop(producer);
    drop(log);
    let report = json!({
        "scenario": "idle",
        "shards": args.shards,
        "duration_s": args.duration,
        "idle_cpu_pct_of_one_core": pct,
        "env": env_json(&dir, &fs_type(&dir)),
    });
    if args.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load idle: {pct:.3}% of one core over {:.1} s ({} shard(s))",
            args.duration,
            args.shards
        );
    }
    Ok(())
}
