//! `floodgate inspect DIR`: what a data directory holds, read-only (no lock, no repair).
//! `--verify` checks every frame's checksums and records and every index file against its
//! segment, naming file and position of any damage (exit status 1); `--dump` prints each frame
//! and record, like kafka-dump-log.

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
use floodgate::segment::{SegmentId, TopicPartition};

#[derive(Args)]
pub struct InspectArgs {
    /// The data directory.
    dir: PathBuf,
    /// Check every checksum and index entry; exit with status 1 on any damage.
    #[arg(long)]
    verify: bool,
    /// Print every frame and record.
    #[arg(long)]
    dump: bool,
}

pub fn run(args: InspectArgs) -> CliResult {
    let meta = Meta::load(&args.dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{} holds no floodgate log (no meta.json)",
                args.dir.display()
            )
        })?;
    let names: BTreeMap<u32, (String, u32)> = meta
        .topics
        .iter()
        .map(|t| (t.id, (t.name.clone(), t.partitions)))
        .collect();
    outln!(
        "{}: {} shard(s), commit_bytes_max {}",
        args.dir.display(),
        meta.shards,
        meta.commit_bytes_max
    );
    for t in &meta.topics {
        outln!(
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
            outln!(
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
                outln!(
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
            None => outln!("  shard {shard}: no checkpoint"),
        }
        outln!("  shard {shard}: {} segment(s)", segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let known = known_for(checkpoint.as_ref(), ids[i], newest.unwrap_or_default());
            let (frames, end) = scan_segment_file(seg, meta.commit_bytes_max as usize, known)
                .map_err(|e| e.to_string())?;
            let data_end = match &end {
                ScanEnd::Clean { pos } => *pos,
                ScanEnd::Torn { pos, garbage_end } if i + 1 == segments.len() => {
                    outln!(
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
            outln!(
                "    {}: {} frame(s), {records} record(s), {data_end} bytes of data",
                name(seg),
                frames.len()
            );
            for f in &frames {
                let r = ranges.entry((f.topic_id, f.partition)).or_insert((
                    f.entry.base_offset,
                    f.entry.base_offset,
                    0,
                    0,
                ));
                if f.entry.base_offset != r.1 {
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
                r.1 = f.entry.last_offset + 1;
                r.2 += u64::from(f.records);
                r.3 += 1;
            }
            if args.verify && i + 1 < segments.len() {
                check_index(seg, &frames, data_end, &mut damage);
            }
            if args.dump {
                dump(seg, &frames, &names)?;
            }
        }
    }
    for ((topic_id, partition), (first, next, records, batches)) in &ranges {
        let topic = names
            .get(topic_id)
            .map_or("(deleted topic)", |(n, _)| n.as_str());
        outln!(
            "  {topic}/{partition}: offsets {first}..{next}, {records} record(s) in {batches} batch(es)"
        );
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
    if damage.is_empty() {
        if args.verify {
            outln!("verify: every frame, record and index entry checks out");
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
fn check_index(seg: &Path, frames: &[ScannedFrame], data_end: u64, damage: &mut Vec<String>) {
    let path = seg.with_extension("idx");
    let Ok(bytes) = std::fs::read(&path) else {
        outln!("    {}: missing (rebuilt on the next open)", name(&path));
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
            for r in batch.records().flatten() {
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
