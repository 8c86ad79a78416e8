//! `floodgate repair DIR [--dry-run]`: says exactly what repairing a data directory drops or
//! rebuilds (files, positions, partitions' offsets, record counts), and with no `--dry-run`
//! does it: opens the log with `Config::repair_truncate_damaged(true)` and reports what open
//! did. Nothing is repaired that the next plain open would not refuse or fix itself.

use std::path::PathBuf;

use clap::Args;
use floodgate::inspect::{Meta, RepairAction, plan_repair};
use floodgate::{Config, IoBackend, Log};

use crate::error::{CliError, CliResult};
use crate::load::parse_backend;
use crate::outln;

#[derive(Args)]
pub struct RepairArgs {
    /// The data directory.
    dir: PathBuf,
    /// Say what would be done, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// I/O backend for the repair: `io_uring` or `portable`.
    #[arg(long, default_value = "io_uring", value_parser = parse_backend)]
    backend: IoBackend,
}

pub fn run(args: RepairArgs) -> CliResult {
    let plan = plan_repair(&args.dir).map_err(|e| match e {
        floodgate::Error::Corrupt { reason, .. } if reason == "no meta.json" => format!(
            "{} holds no floodgate log (no meta.json, and no records in shard folders)",
            args.dir.display()
        )
        .into(),
        e => CliError::from(e),
    })?;
    let meta = match Meta::load(&args.dir)? {
        Some(meta) => meta,
        None => floodgate::inspect::rebuild_meta(&args.dir)?.0,
    };
    if plan.is_empty() {
        outln!("{}: nothing to repair", args.dir.display());
        return Ok(());
    }
    let verb = if args.dry_run { "would" } else { "will" };
    for action in &plan {
        describe(action, verb);
    }
    if args.dry_run {
        let refused = plan.iter().any(RepairAction::needs_repair);
        outln!(
            "dry run: nothing changed.{}",
            if refused {
                " A plain open refuses this directory until it is repaired."
            } else {
                " A plain open does all of this itself."
            }
        );
        return Ok(());
    }
    let config = Config::new(&args.dir)
        .shards(meta.shards as usize)
        .commit_bytes_max(meta.commit_bytes_max as usize)
        // Repair writes no records; the limit only has to fit the log's commits.
        .record_bytes_max(
            (meta.commit_bytes_max as usize / 2).min(floodgate::config::RECORD_BYTES_MAX_DEFAULT),
        )
        .io_backend(args.backend)
        .repair_truncate_damaged(true);
    let log = Log::open(config)?;
    let report = log.recovery_report().clone();
    log.close()?;
    for line in &report.meta_rebuilt {
        outln!("rebuilt meta.json: {line}");
    }
    for (path, pos, reason, dropped) in &report.repaired {
        outln!(
            "repaired {} at byte {pos}: {reason}; {dropped} record(s) dropped",
            path.display()
        );
    }
    for (tp, first, last) in &report.offsets_skipped {
        outln!(
            "topic id {} partition {}: offsets {first}..={last} stay taken (a gap stands for \
             them; new records continue after)",
            tp.topic_id,
            tp.partition
        );
    }
    for (path, pos, bytes) in &report.torn_tails {
        outln!(
            "cut a torn tail of {bytes} byte(s) at {pos} of {}",
            path.display()
        );
    }
    for path in &report.indexes_rebuilt {
        outln!("rebuilt {}", path.display());
    }
    for path in &report.segments_adopted {
        outln!("adopted {}", path.display());
    }
    for d in &report.commits_damaged {
        outln!(
            "skipped damaged group commits at byte {} of {} (offsets {}..{} of \
             __consumer_offsets): {}",
            d.pos,
            d.path.display(),
            d.offsets.start,
            d.offsets.end,
            d.reason
        );
    }
    outln!("{}: repaired; it opens as it is now", args.dir.display());
    Ok(())
}

fn describe(action: &RepairAction, verb: &str) {
    match action {
        RepairAction::CutDamage {
            segment,
            pos,
            reason,
            later_segments,
            dropped,
        } => {
            outln!(
                "{verb} cut {} at byte {pos} ({reason}), dropping {} record(s):",
                segment.display(),
                dropped.records()
            );
            for (&(topic_id, partition), &(first, last, n)) in &dropped.partitions {
                outln!(
                    "  topic id {topic_id} partition {partition}: {n} record(s) of offsets \
                     {first}..={last}"
                );
            }
            for p in later_segments {
                outln!("  {verb} delete {} (after the cut)", p.display());
            }
            outln!("  the offsets dropped stay taken: new records continue after them");
        }
        RepairAction::RebuildMeta { lines } => {
            outln!("meta.json is missing: {verb} rebuild it from the segments:");
            for line in lines {
                outln!("  {line}");
            }
        }
        RepairAction::SegmentMissing {
            shard_dir,
            segment,
            durable_pos,
        } => outln!(
            "{}: segment {segment} is missing (the log was durable through its byte \
             {durable_pos}); its records are lost, and the log {verb} go on without them",
            shard_dir.display()
        ),
        RepairAction::CutTornTail {
            segment,
            pos,
            bytes,
        } => outln!(
            "{verb} zero a torn tail of {bytes} byte(s) at byte {pos} of {} (never \
             acknowledged)",
            segment.display()
        ),
        RepairAction::RebuildIndex { path } => {
            outln!("{verb} rebuild {} from its segment", path.display())
        }
        RepairAction::AdoptPrepared { path, segment } => outln!(
            "{verb} rename {} to {} (a roll's rename lost in a crash)",
            path.display(),
            segment.display()
        ),
        RepairAction::FinishRewrite { segment } => outln!(
            "{verb} finish the rewrite of {} (decided before a crash: the rewritten files take \
             its names)",
            segment.display()
        ),
        RepairAction::DropRewrite { path } => outln!(
            "{verb} delete {} (a rewrite a crash cut short; the segment stays as it was)",
            path.display()
        ),
        _ => outln!("{verb} {action:?}"),
    }
}
