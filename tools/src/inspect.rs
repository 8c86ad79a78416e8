//! `floodgate inspect DIR`: what a data directory holds, read-only (no lock, no repair).
//! `--verify` checks every frame's checksums and records, every index file against its
//! segment, the checkpoint and `start-offsets.json`, naming file and position of any damage
//! (exit status 1); `--dump` prints each frame and record, like kafka-dump-log; `--json`
//! prints the summary and the damage as one JSON object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::CliResult;
use crate::outln;
use clap::Args;
use floodgate::inspect::{
    Meta, ScanEnd, ScannedFrame, SegmentIndex, check_start_offsets, holds_frames, known_for,
    load_checkpoint, scan_segment_file,
};
use floodgate::layout::ShardFile;
use floodgate::segment::decode_frame;
use serde_json::{Value, json};

/// `outln!` unless the output is JSON.
macro_rules! say {
    ($text:expr, $($arg:tt)*) => {
        if $text {
            outln!($($arg)*)
        }
    };
}
use floodgate::segment::{SegmentId, TopicPartition};

#[derive(Args)]
pub struct InspectArgs {
    /// The data directory.
    dir: PathBuf,
    /// Check every checksum and index entry; exit with status 1 on any damage.
    #[arg(long)]
    verify: bool,
    /// Print every frame and record.
    #[arg(long, conflicts_with = "json")]
    dump: bool,
    /// Print one JSON object on stdout instead of text: shards (checkpoint, segments and how
    /// each ends), partitions (offsets, records, batches), and every damaged place.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> CliResult {
    let text = !args.json;
    let mut shards_json = Vec::new();
    let meta = Meta::load(&args.dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| match floodgate::inspect::rebuild_meta(&args.dir) {
            Ok((found, _)) if !found.topics.is_empty() => format!(
                "{}: meta.json is missing, and the segments hold records of {} topic(s); \
                 `floodgate repair {}` rebuilds it from them",
                args.dir.display(),
                found.topics.len(),
                args.dir.display()
            ),
            _ => format!(
                "{} holds no floodgate log (no meta.json)",
                args.dir.display()
            ),
        })?;
    let names: BTreeMap<u32, (String, u32)> = meta
        .topics
        .iter()
        .map(|t| (t.id, (t.name.clone(), t.partitions)))
        .collect();
    say!(
        text,
        "{}: {} shard(s), commit_bytes_max {}",
        args.dir.display(),
        meta.shards,
        meta.commit_bytes_max
    );
    for t in &meta.topics {
        say!(
            text,
            "  topic {:?} (id {}): {} partition(s)",
            t.name,
            t.id,
            t.partitions
        );
    }
    let mut damage = Vec::new();
    // (topic id, partition) → (first offset, next offset, records, batches)
    let mut ranges: BTreeMap<(u32, u32), (u64, u64, u64, u64)> = BTreeMap::new();
    for shard in 0..meta.shards {
        let dir = floodgate::layout::shard_dir(&args.dir, shard);
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        let mut ids: Vec<SegmentId> = segments
            .iter()
            .filter_map(|p| match ShardFile::of(&name(p)) {
                ShardFile::Segment(id) => Some(id),
                _ => None,
            })
            .collect();
        segments.retain(|p| matches!(ShardFile::of(&name(p)), ShardFile::Segment(_)));
        // What open checks before it deletes anything: retention's record of what it deleted.
        let live = |tp: TopicPartition| {
            names
                .get(&tp.topic_id)
                .is_some_and(|(_, count)| tp.partition < *count)
        };
        if let Err(e) = check_start_offsets(&dir, meta.commit_bytes_max as usize, &ids, &live) {
            damage.push(e.to_string());
        }
        // A roll's rename that a crash undid: the next open gives the file its segment name.
        let prepared = floodgate::layout::prepared_path(&dir);
        if holds_frames(&prepared) {
            say!(
                text,
                "  shard {shard}: next.seg.prep holds frames (a roll's rename was lost in a \
                 crash; the next open names it as the segment after the newest)"
            );
            ids.push(ids.last().map_or(SegmentId(0), |id| id.next()));
            segments.push(prepared);
        }
        let checkpoint = match load_checkpoint(&dir) {
            Ok(c) => c,
            Err(e) => {
                damage.push(e.to_string());
                None
            }
        };
        let newest = ids.last().copied();
        match &checkpoint {
            Some(c) => {
                say!(
                    text,
                    "  shard {shard}: known durable through segment {} byte {}, {}",
                    c.durable.segment,
                    c.durable.pos,
                    if c.clean {
                        "closed cleanly"
                    } else {
                        "open, or stopped by a crash"
                    }
                );
                let missing = match newest {
                    Some(n) => n < c.durable.segment,
                    None => c.durable > Default::default(),
                };
                if missing {
                    damage.push(format!(
                        "{}: segment {} is missing (the checkpoint says the log was durable \
                         through its byte {}): acknowledged records are lost",
                        dir.display(),
                        c.durable.segment,
                        c.durable.pos
                    ));
                }
            }
            None => say!(text, "  shard {shard}: no checkpoint"),
        }
        say!(text, "  shard {shard}: {} segment(s)", segments.len());
        let mut segments_json = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let known = known_for(checkpoint.as_ref(), ids[i], newest.unwrap_or_default());
            let (frames, end) = scan_segment_file(seg, meta.commit_bytes_max as usize, known)
                .map_err(|e| e.to_string())?;
            let data_end = match &end {
                ScanEnd::Clean { pos } => *pos,
                ScanEnd::Torn { pos, garbage_end } if i + 1 == segments.len() => {
                    say!(
                        text,
                        "    torn tail at {pos} ({} bytes; cut on the next open)",
                        garbage_end - pos
                    );
                    *pos
                }
                ScanEnd::Torn { pos, .. } => {
                    // Only the last segment can end in a torn write: sealed ones were flushed.
                    damage.push(format!(
                        "{} at byte {pos}: a frame fails its checks in a sealed segment",
                        seg.display()
                    ));
                    *pos
                }
                ScanEnd::Damaged { pos, reason } => {
                    damage.push(format!("{} at byte {pos}: {reason}", seg.display()));
                    *pos
                }
            };
            let records: u64 = frames.iter().map(|f| u64::from(f.records)).sum();
            let (ends, detail) = match &end {
                ScanEnd::Clean { .. } => ("clean", Value::Null),
                ScanEnd::Torn { pos, garbage_end } => ("torn", json!(garbage_end - pos)),
                ScanEnd::Damaged { reason, .. } => ("damaged", json!(reason)),
            };
            segments_json.push(json!({
                "file": seg, "frames": frames.len(), "records": records,
                "data_end": data_end, "end": ends, "end_detail": detail,
            }));
            say!(
                text,
                "    {}: {} frame(s), {records} record(s), {data_end} bytes of data",
                name(seg),
                frames.len()
            );
            for f in &frames {
                let r = ranges.entry((f.topic_id, f.partition)).or_insert((
                    f.entry.base_offset.0,
                    f.entry.base_offset.0,
                    0,
                    0,
                ));
                if f.entry.base_offset.0 != r.1 {
                    damage.push(format!(
                        "{} at byte {}: topic id {} partition {} jumps from offset {} to {}",
                        seg.display(),
                        f.entry.pos,
                        f.topic_id,
                        f.partition,
                        r.1,
                        f.entry.base_offset
                    ));
                }
                r.1 = f.entry.last_offset.0 + 1;
                r.2 += u64::from(f.records);
                r.3 += 1;
            }
            if args.verify && i + 1 < segments.len() {
                check_index(seg, &frames, data_end, &mut damage, text);
            }
            if args.dump {
                dump(seg, &frames, &names)?;
            }
        }
        shards_json.push(json!({
            "shard": shard,
            "checkpoint": checkpoint.map(|c| json!({
                "segment": c.durable.segment.0, "pos": c.durable.pos, "clean": c.clean,
            })),
            "segments": segments_json,
        }));
    }
    let mut partitions_json = Vec::new();
    for ((topic_id, partition), (first, next, records, batches)) in &ranges {
        let topic = names
            .get(topic_id)
            .map_or("(deleted topic)", |(n, _)| n.as_str());
        say!(
            text,
            "  {topic}/{partition}: offsets {first}..{next}, {records} record(s) in {batches} batch(es)"
        );
        partitions_json.push(json!({
            "topic": names.get(topic_id).map(|(n, _)| n), "topic_id": topic_id,
            "partition": partition, "first": first, "next": next, "records": records,
            "batches": batches,
        }));
    }
    // Records the metadata cannot account for: open refuses them (a partition past its
    // topic's count, a topic id never assigned); a deleted topic's records are fine.
    for (topic_id, partition) in ranges.keys() {
        match names.get(topic_id) {
            Some((name, count)) if partition >= count => damage.push(format!(
                "records of partition {partition} of topic {name:?} (id {topic_id}), which \
                 meta.json gives {count} partitions"
            )),
            None if *topic_id >= meta.next_topic_id => damage.push(format!(
                "records of topic id {topic_id}, which meta.json never assigned (its next id is \
                 {})",
                meta.next_topic_id
            )),
            _ => {}
        }
    }
    if args.json {
        let topics: Vec<Value> = (meta.topics.iter())
            .map(|t| json!({"name": t.name, "id": t.id, "partitions": t.partitions}))
            .collect();
        let out = json!({
            "dir": args.dir, "shards": shards_json, "topics": topics,
            "partitions": partitions_json, "verified": args.verify, "damage": damage,
        });
        outln!("{out}");
    }
    if damage.is_empty() {
        if args.verify {
            say!(
                text,
                "verify: every frame, record and index entry checks out"
            );
        }
        return Ok(());
    }
    for d in &damage {
        eprintln!("damage: {d}");
    }
    if args.verify {
        return Err(format!("{} damaged place(s)", damage.len()).into());
    }
    Ok(())
}

fn name(path: &Path) -> String {
    path.file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned())
}

/// Compares a sealed segment's index file with what a scan of the segment found.
fn check_index(
    seg: &Path,
    frames: &[ScannedFrame],
    data_end: u64,
    damage: &mut Vec<String>,
    text: bool,
) {
    let path = seg.with_extension("idx");
    let Ok(bytes) = std::fs::read(&path) else {
        say!(
            text,
            "    {}: missing (rebuilt on the next open)",
            name(&path)
        );
        return;
    };
    match SegmentIndex::decode(&bytes, &path) {
        Err(e) => damage.push(e.to_string()),
        Ok(index) => {
            let same = index.data_end == data_end
                && index.frames.len() <= frames.len()
                && index.frames.iter().all(|(tp, e)| {
                    frames.iter().any(|f| {
                        (
                            f.topic_id,
                            f.partition,
                            f.entry.pos,
                            f.entry.base_offset,
                            f.entry.last_offset,
                        ) == (
                            tp.topic_id,
                            tp.partition,
                            e.pos,
                            e.base_offset,
                            e.last_offset,
                        )
                    })
                });
            if !same {
                damage.push(format!("{}: does not match its segment", path.display()));
            }
        }
    }
}

fn dump(seg: &Path, frames: &[ScannedFrame], names: &BTreeMap<u32, (String, u32)>) -> CliResult {
    let bytes = std::fs::read(seg).map_err(|e| format!("{}: {e}", seg.display()))?;
    for f in frames {
        let topic = names
            .get(&f.topic_id)
            .map_or("(deleted)", |(n, _)| n.as_str());
        let at = f.entry.pos as usize;
        outln!(
            "      pos {at} frame {} bytes: {topic}/{} offsets {}..={} records {} max_ts {}",
            f.entry.frame_bytes,
            f.partition,
            f.entry.base_offset,
            f.entry.last_offset,
            f.records,
            f.entry.max_timestamp
        );
        let frame = &bytes[at..at + f.entry.frame_bytes as usize];
        if let Ok(Some((_, batch))) = decode_frame(frame) {
            // A compressed batch's records, decompressed (a batch that does not decompress
            // lists none; --verify says why).
            let decompressed = batch.decompressed().ok().flatten();
            let records = match &decompressed {
                Some(d) => batch.records_in(d),
                None => batch.records(),
            };
            for r in records.flatten() {
                outln!(
                    "        offset {} ts {} key {} value {} headers {}",
                    r.offset,
                    r.timestamp,
                    r.key
                        .map_or("null".into(), |k| format!("{} bytes", k.len())),
                    r.value
                        .map_or("null".into(), |v| format!("{} bytes", v.len())),
                    r.headers().count()
                );
            }
        }
    }
    Ok(())
}
