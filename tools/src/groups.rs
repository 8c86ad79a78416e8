//! `floodgate groups DIR`: each consumer group's committed offsets and how far behind it is, by
//! topic (and partition with `--partitions`): the groups of the log's Rust consumers and of the
//! Kafka front's clients alike. It opens the log, so the directory must not be served at the
//! time; a running server shows the same in `/metrics` (`floodgate_group_lag_records`).

use std::path::PathBuf;

use clap::Args;
use floodgate::inspect::Meta;
use floodgate::{Config, Log};
use serde_json::json;

use crate::error::CliResult;
use crate::outln;

#[derive(Args)]
pub struct GroupsArgs {
    /// The data directory.
    dir: PathBuf,
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// Each partition's committed offset, end and lag too.
    #[arg(long)]
    partitions: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: GroupsArgs) -> CliResult {
    let meta = Meta::load(&args.dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} holds no floodgate log (no meta.json)",
                args.dir.display()
            )
        })?;
    let config = Config::new(&args.dir).shards(meta.shards as usize);
    let log = Log::open(config).map_err(|e| match e {
        floodgate::Error::Locked { .. } => {
            format!("{e}: a running `floodgate serve` shows its groups' lag at /metrics")
        }
        e => e.to_string(),
    })?;
    let mut groups = log.list_groups();
    if let Some(only) = &args.group {
        groups.retain(|g| g == only);
        if groups.is_empty() {
            return Err(format!("no group {only:?} has committed offsets").into());
        }
    }
    let mut out = Vec::new();
    for group in &groups {
        let mut topics: Vec<String> = (log.group_offsets(group).into_iter())
            .map(|o| o.topic)
            .collect();
        topics.dedup();
        let mut rows = Vec::new();
        for topic in &topics {
            let lag = log.group_lag(group, topic)?;
            let committed: u64 = (lag.partitions.iter())
                .map(|p| p.committed.map_or(0, |o| o.0))
                .sum();
            let partitions: Vec<_> = (lag.partitions.iter())
                .map(|p| {
                    json!({
                        "partition": p.partition,
                        "committed": p.committed.map(|o| o.0),
                        "end": p.next.0,
                        "lag": p.lag,
                    })
                })
                .collect();
            if !args.json {
                outln!(
                    "{group}  {topic}: lag {} records (committed {committed})",
                    lag.lag
                );
                if args.partitions {
                    for p in &lag.partitions {
                        let c = p.committed.map_or("-".to_owned(), |o| o.0.to_string());
                        outln!(
                            "  {}: committed {c}, end {}, lag {}",
                            p.partition,
                            p.next.0,
                            p.lag
                        );
                    }
                }
            }
            rows.push(json!({"topic": topic, "lag": lag.lag, "partitions": partitions}));
        }
        if !args.json && topics.is_empty() {
            outln!("{group}: no committed offsets");
        }
        out.push(json!({"group": group, "topics": rows}));
    }
    if args.json {
        outln!("{}", json!({ "groups": out }));
    } else if groups.is_empty() {
        outln!("no consumer groups");
    }
    log.close()?;
    Ok(())
}
