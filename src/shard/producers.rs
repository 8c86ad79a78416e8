//! Snapshots of the idempotent producers' state, one per sealed segment: what each partition
//! knew of its producers' last batches when the segment was sealed.
//!
//! The writer checks an idempotent producer's batch against the producer's last five in the
//! partition (`framing::SlotState::check_sequence`). After a restart, recovery rebuilds that
//! state from the batch headers of the segments it scans; a sealed segment with an index file
//! is not scanned, so without its snapshot a retry of a batch stored there would be stored
//! again. At each roll the writer encodes the state and the shard's helper writes it as
//! `N.producers` before segment N's index file (both durably): a segment whose index file
//! exists has its snapshot, and recovery starts from the newest snapshot and notes the batches
//! of the segments it scans after it, as Kafka brokers do with their producer snapshots.
//!
//! The file is derived data: a missing one (a log written before snapshots existed) leaves
//! the state as the older segments gave it; a damaged one is reported, and the state is
//! dropped there (a retry of a batch before it may then be stored again, but no producer is
//! refused on stale sequences). Layout (little-endian), in docs/FORMAT.md.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::index::TopicPartition;
use crate::segment::crc::crc32c;
use crate::shard::framing::{PRODUCER_BATCHES_KEPT, ProducerSeqs, Producers};

const MAGIC: [u8; 4] = *b"FGPS";
const VERSION: u32 = 1;
/// Magic, version, wall-clock time, partition count.
const HEADER_BYTES: usize = 20;
/// Topic id, partition, producer count.
const PARTITION_BYTES: usize = 12;
/// Producer id, epoch, batch count, a zero byte, age in ms.
const PRODUCER_BYTES: usize = 20;
/// First and last sequence, base offset.
const BATCH_BYTES: usize = 16;

/// Partitions' producers, as recovery hands them to the writer.
pub(crate) type ProducerState = HashMap<TopicPartition, Box<Producers>>;

/// Encodes the producers of `partitions` (those with none are left out) as of `now`, which
/// the wall clock gives as `wall_ms` (ms since the epoch): each producer's age is kept, so
/// expiry goes on counting from its newest batch across a restart.
pub(crate) fn encode<'a>(
    partitions: impl IntoIterator<Item = (TopicPartition, &'a Producers)>,
    now: Instant,
    wall_ms: i64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&wall_ms.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (tp, producers) in partitions {
        if producers.is_empty() {
            continue;
        }
        count += 1;
        out.extend_from_slice(&tp.topic_id.to_le_bytes());
        out.extend_from_slice(&tp.partition.to_le_bytes());
        out.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        for (&id, seqs) in producers {
            let (epoch, batches, seen) = seqs.parts();
            let age = now.saturating_duration_since(seen).as_millis();
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
            out.push(batches.len() as u8);
            out.push(0);
            out.extend_from_slice(&u64::try_from(age).unwrap_or(u64::MAX).to_le_bytes());
            for (first, last, base_offset) in batches {
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&last.to_le_bytes());
                out.extend_from_slice(&base_offset.to_le_bytes());
            }
        }
    }
    out[16..20].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads bytes from a snapshot, failing with what was cut short.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let got = (self.bytes.get(self.pos..self.pos + n))
            .ok_or_else(|| format!("cut short in {what} at byte {}", self.pos))?;
        self.pos += n;
        Ok(got)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
}

/// Decodes a snapshot at `now`, which the wall clock gives as `wall_ms_now`: each producer's
/// newest batch is placed its age before `now`, plus the wall-clock time since the snapshot was
/// written (none if the clock went back).
pub(crate) fn decode(
    bytes: &[u8],
    now: Instant,
    wall_ms_now: i64,
) -> std::result::Result<ProducerState, String> {
    let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n >= HEADER_BYTES) else {
        return Err(format!("{} bytes: shorter than a header", bytes.len()));
    };
    let (body, crc) = bytes.split_at(body_len);
    if body[..4] != MAGIC {
        return Err("not a producer snapshot (bad magic)".into());
    }
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c(body) != stored {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader {
        bytes: body,
        pos: 4,
    };
    let version = r.u32("the header")?;
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    let written = r.u64("the header")? as i64;
    let since = Duration::from_millis(u64::try_from(wall_ms_now - written).unwrap_or(0));
    let count = r.u32("the header")?;
    if count as usize > (body.len() - r.pos) / PARTITION_BYTES {
        return Err(format!("{count} partitions: more than the file holds"));
    }
    let mut state = ProducerState::with_capacity(count as usize);
    for _ in 0..count {
        let topic_id = r.u32("a partition")?;
        let partition = r.u32("a partition")?;
        let n = r.u32("a partition")? as usize;
        if n > (body.len() - r.pos) / PRODUCER_BYTES {
            return Err(format!("{n} producers: more than the file holds"));
        }
        let mut producers = Producers::with_capacity(n);
        for _ in 0..n {
            let head = r.take(PRODUCER_BYTES, "a producer")?;
            let id = i64::from_le_bytes(head[0..8].try_into().expect("8"));
            let epoch = i16::from_le_bytes(head[8..10].try_into().expect("2"));
            let batches = usize::from(head[10]);
            let age = u64::from_le_bytes(head[12..20].try_into().expect("8"));
            if batches == 0 || batches > PRODUCER_BATCHES_KEPT {
                return Err(format!("producer {id}: {batches} batches"));
            }
            let mut kept = Vec::with_capacity(batches);
            for _ in 0..batches {
                let b = r.take(BATCH_BYTES, "a batch")?;
                kept.push((
                    i32::from_le_bytes(b[0..4].try_into().expect("4")),
                    i32::from_le_bytes(b[4..8].try_into().expect("4")),
                    u64::from_le_bytes(b[8..16].try_into().expect("8")),
                ));
            }
            let age = Duration::from_millis(age).saturating_add(since);
            // A producer older than the process's clock reaches back is as old as it can be.
            let seen = now.checked_sub(age).unwrap_or_else(|| oldest(now));
            producers.insert(id, ProducerSeqs::from_parts(epoch, &kept, seen));
        }
        state.insert(
            TopicPartition::new(topic_id, partition),
            Box::new(producers),
        );
    }
    if r.pos != body.len() {
        return Err(format!(
            "{} bytes after the last partition",
            body.len() - r.pos
        ));
    }
    Ok(state)
}

/// The earliest instant before `now` the clock can express (within a day's search).
fn oldest(now: Instant) -> Instant {
    let mut back = Duration::from_secs(1 << 20);
    while back > Duration::from_millis(1) {
        if let Some(t) = now.checked_sub(back) {
            return t;
        }
        back /= 2;
    }
    now
}

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Writes a snapshot durably (a temporary file, fsynced, renamed, the directory fsynced).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::io::replace_file(path, bytes)
}

/// Reads the snapshot at `path`: `None` if there is none, an error saying what is wrong with
/// a damaged one.
pub(crate) fn load(path: &Path) -> Option<std::result::Result<ProducerState, String>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(decode(&bytes, Instant::now(), wall_ms())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(Error::io("read", path, e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(now: Instant) -> ProducerState {
        let mut a = Producers::new();
        a.insert(
            7,
            ProducerSeqs::from_parts(3, &[(0, 4, 100), (5, 9, 105)], now - Duration::from_secs(2)),
        );
        a.insert(
            -5,
            ProducerSeqs::from_parts(0, &[(i32::MAX - 1, i32::MAX, 7)], now),
        );
        let mut b = Producers::new();
        let batches: Vec<_> = (0..5).map(|k| (k, k, 1_000 + k as u64)).collect();
        b.insert(1 << 40, ProducerSeqs::from_parts(i16::MAX, &batches, now));
        let mut out = ProducerState::new();
        out.insert(TopicPartition::new(1, 0), Box::new(a));
        out.insert(TopicPartition::new(2, 9), Box::new(b));
        out.insert(TopicPartition::new(3, 1), Box::default());
        out
    }

    /// A producer of a partition: (partition, id, epoch, batches).
    type Flat = (TopicPartition, i64, i16, Vec<(i32, i32, u64)>);

    fn flat(s: &ProducerState) -> Vec<Flat> {
        let mut out: Vec<_> = (s.iter())
            .flat_map(|(tp, ps)| {
                ps.iter().map(|(&id, p)| {
                    let (epoch, batches, _) = p.parts();
                    (*tp, id, epoch, batches.collect::<Vec<_>>())
                })
            })
            .collect();
        out.sort();
        out
    }

    /// What is encoded is decoded, ages included (plus the wall-clock time in between);
    /// partitions without producers are left out.
    #[test]
    fn snapshots_round_trip() {
        let now = Instant::now();
        let s = state(now);
        let bytes = encode(s.iter().map(|(tp, p)| (*tp, &**p)), now, 50_000);
        let later = now + Duration::from_secs(10);
        let back = decode(&bytes, later, 53_000).unwrap();
        assert_eq!(flat(&back), flat(&s));
        assert_eq!(back.len(), 2, "the partition without producers is left out");
        let (_, _, seen) = back[&TopicPartition::new(1, 0)][&7].parts();
        // 2 s old when written, 3 s of wall clock since: 5 s before `later`.
        assert_eq!(later.duration_since(seen), Duration::from_secs(5));
        let empty = encode(std::iter::empty(), now, 0);
        assert!(decode(&empty, now, 0).unwrap().is_empty());
    }

    /// Any changed byte, a cut anywhere or bytes added are refused, never misread.
    #[test]
    fn damaged_snapshots_are_refused() {
        let now = Instant::now();
        let s = state(now);
        let bytes = encode(s.iter().map(|(tp, p)| (*tp, &**p)), now, 1);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, now, 1).is_err(), "byte {i} flipped");
        }
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], now, 1).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, now, 1).is_err());
    }
}
