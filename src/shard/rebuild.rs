//! Rebuilding a lost `meta.json` from the segments (open with repair, `floodgate repair`).
//!
//! Every frame names its topic id and partition; the offsets topic records each topic's name,
//! partition count and placement ([`TopicRecord`], written at every topic change). So the
//! metadata comes back from the segments: the topic records found in the offsets topic (the
//! one topic whose own record names it `__consumer_offsets` under its own id, the last record
//! of each topic winning, deleted topics staying deleted), partition counts raised to cover
//! every partition that holds frames, and the next topic id past every id ever seen, so that
//! no id is given again. A topic with frames and no record (written by a build that did not
//! record topics) comes back as `recovered-<id>`, said in the account. Read-only.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::{self, ShardFile};
use crate::meta::{META_VERSION, Meta, OFFSETS_TOPIC, TopicMeta, TopicRecord, topic_record_id};
use crate::segment::batch::decode_frame;
use crate::segment::scan::Known;
use crate::shard::recovery::scan_segment_file;

/// The metadata rebuilt, and a line for each thing the account should say.
#[derive(Debug, Clone)]
pub(crate) struct Rebuilt {
    pub meta: Meta,
    pub lines: Vec<String>,
}

/// What the frames of one topic showed.
#[derive(Debug, Default)]
struct Seen {
    /// Highest partition with frames.
    partition_max: u32,
    /// Shard of each partition with frames.
    shards: BTreeMap<u32, u32>,
    /// Topic records found in its partition 0, in log order: (offset, topic id, record).
    records: Vec<(u64, u32, Option<Vec<u8>>)>,
}

/// The number of shard folders in `dir` (`shard-000` on, without a gap).
pub(crate) fn shard_folders(dir: &Path) -> u32 {
    (0..crate::config::SHARDS_MAX as u32)
        .take_while(|&id| layout::shard_dir(dir, id).is_dir())
        .count() as u32
}

/// [`rebuild_meta`] with the shard folders `dir` has, and frames of up to the default commit
/// size.
pub(crate) fn rebuild_found(dir: &Path) -> Result<Rebuilt> {
    let frames_max = crate::config::COMMIT_BYTES_MAX_DEFAULT as u64;
    rebuild_meta(dir, shard_folders(dir), frames_max)
}

/// Rebuilds the metadata of `dir` from its segments: `shards` shard folders, frames of at most
/// `commit_bytes_max` bytes.
pub(crate) fn rebuild_meta(dir: &Path, shards: u32, commit_bytes_max: u64) -> Result<Rebuilt> {
    let mut seen: HashMap<u32, Seen> = HashMap::new();
    for shard in 0..shards {
        let shard_dir = layout::shard_dir(dir, shard);
        let mut segments = Vec::new();
        for entry in
            std::fs::read_dir(&shard_dir).map_err(|e| Error::io("read directory", &shard_dir, e))?
        {
            let entry = entry.map_err(|e| Error::io("read directory", &shard_dir, e))?;
            if let ShardFile::Segment(_) = ShardFile::of(&entry.file_name().to_string_lossy()) {
                segments.push(entry.path());
            }
        }
        segments.sort();
        for path in segments {
            let (frames, _) =
                scan_segment_file(&path, commit_bytes_max as usize, Known::default())?;
            let file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            for f in frames {
                let s = seen.entry(f.topic_id).or_default();
                s.partition_max = s.partition_max.max(f.partition);
                s.shards.insert(f.partition, shard);
                if f.partition != 0 {
                    continue;
                }
                let mut bytes = vec![0u8; f.entry.frame_bytes as usize];
                file.read_exact_at(&mut bytes, f.entry.pos)
                    .map_err(|e| Error::io("read", &path, e))?;
                let Ok(Some((_, batch))) = decode_frame(&bytes) else {
                    continue;
                };
                for r in batch.records().flatten() {
                    if let Some(id) = r.key.and_then(topic_record_id) {
                        s.records.push((r.offset, id, r.value.map(<[u8]>::to_vec)));
                    }
                }
            }
        }
    }
    let mut lines = Vec::new();
    // The offsets topic: the topic whose records name it under its own id.
    let offsets_topic = seen.iter().find_map(|(&id, s)| {
        s.records.iter().rev().find_map(|(_, rid, value)| {
            let r = TopicRecord::decode(value.as_deref()?)?;
            (*rid == id && r.topic.id == id && r.topic.name == OFFSETS_TOPIC).then_some(id)
        })
    });
    let mut records: BTreeMap<u32, Option<TopicRecord>> = BTreeMap::new();
    if let Some(t) = offsets_topic {
        let mut found = std::mem::take(&mut seen.get_mut(&t).expect("seen").records);
        found.sort_by_key(|&(offset, _, _)| offset);
        for (_, id, value) in found {
            records.insert(id, value.as_deref().and_then(TopicRecord::decode));
        }
    } else if !seen.is_empty() {
        lines.push(
            "no topic records in the log (written by an older build): topics are named by \
             their ids"
                .to_string(),
        );
    }
    let mut topics: Vec<TopicMeta> = Vec::new();
    let ids_seen = seen.keys().chain(records.keys()).copied();
    let next_topic_id = ids_seen.max().map_or(1, |m| m + 1);
    for (&id, record) in &records {
        let Some(r) = record else {
            continue; // deleted
        };
        if r.shards != shards || r.topic.id != id {
            return Err(Error::corrupt(
                layout::meta_path(dir),
                0,
                format!(
                    "the log's record of topic {} names {} shards and id {}, but the directory \
                     has {shards} shard folders and the record is keyed {id}",
                    r.topic.name, r.shards, r.topic.id
                ),
            ));
        }
        let mut t = r.topic.clone();
        if let Some(s) = seen.get(&id)
            && s.partition_max >= t.partitions
        {
            lines.push(format!(
                "topic {} has frames in partition {} past its recorded {} partitions: kept",
                t.name, s.partition_max, t.partitions
            ));
            t.partitions = s.partition_max + 1;
        }
        topics.push(t);
    }
    let mut unrecorded: Vec<(&u32, &Seen)> = (seen.iter())
        .filter(|(id, _)| !records.contains_key(id))
        .collect();
    unrecorded.sort_by_key(|(id, _)| **id);
    for (&id, s) in unrecorded {
        // Partition p lives on shard (first_shard + p) % shards.
        let (&p, &shard) = s.shards.iter().next().expect("a topic seen has frames");
        let first_shard = (shard + shards - p % shards) % shards;
        let name = format!("recovered-{id}");
        lines.push(format!(
            "topic id {id} has frames but no record of its name: it comes back as {name}, \
             {} partitions",
            s.partition_max + 1
        ));
        topics.push(TopicMeta {
            name,
            id,
            partitions: s.partition_max + 1,
            first_shard,
            retention_ms: None,
            retention_bytes: None,
            message_bytes_max: None,
            compression: None,
            log_append_time: false,
        });
    }
    for t in &topics {
        lines.push(format!(
            "topic {} (id {}): {} partitions, from shard {}",
            t.name, t.id, t.partitions, t.first_shard
        ));
    }
    lines.push(format!("next topic id {next_topic_id}"));
    let meta = Meta {
        version: META_VERSION,
        shards,
        commit_bytes_max,
        next_topic_id,
        topics,
        // Unknown: ids handed out before are not recorded in the segments.
        producer_ids_reserved: 0,
    };
    meta.check()
        .map_err(|why| Error::corrupt(layout::meta_path(dir), 0, why))?;
    Ok(Rebuilt { meta, lines })
}
