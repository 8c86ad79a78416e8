//! Framing: the commit buffer a shard's writer fills, and the batches it frames into it, one
//! per partition per commit (records stamped with their offsets, each offset stored for its
//! ack). Runs on the writer's thread; the bytes are `segment::format`'s.

use crate::segment::batch::{BatchProducer, batch_producer};
use crate::segment::{Offset, SegmentId};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::index::{BatchEntry, SlotEntry, TopicPartition};
use crate::io::AlignedBuf;
use crate::segment::format::{
    BatchMeta, FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameHeader, frame_batch, record_bytes,
    write_record,
};
use crate::shard::{AckRing, Pending, ShardShared};

/// What the writer keeps of each partition it owns, densely by slot (hot in cache even with
/// many partitions): the frame header fields and the offset the next record gets.
pub(crate) struct SlotState {
    pub topic_id: u32,
    pub partition: u32,
    pub offset_next: u64,
    /// The idempotent producers that appended here while the shard ran, by producer id.
    /// Boxed: 8 bytes per partition, not a map's 48, where few partitions have any.
    pub producers: Option<Box<Producers>>,
}

/// The batches of an idempotent producer a partition keeps, as Kafka brokers do: a retry of
/// one of them is a duplicate, answered with its offset and not stored again.
pub(crate) const PRODUCER_BATCHES_KEPT: usize = 5;

/// What an idempotent producer's batches told a partition: its epoch and its newest batches
/// (first sequence, last sequence, base offset), oldest first.
#[derive(Debug)]
pub(crate) struct ProducerSeqs {
    epoch: i16,
    batches: VecDeque<(i32, i32, u64)>,
    /// When its newest batch was noted (for one found by recovery, when recovery found it).
    seen: Instant,
}

impl Default for ProducerSeqs {
    fn default() -> ProducerSeqs {
        ProducerSeqs {
            epoch: 0,
            batches: VecDeque::new(),
            seen: Instant::now(),
        }
    }
}

/// What the writer does with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqCheck {
    /// Store it (not idempotent, the producer's next, or a producer unknown here).
    Append,
    /// A retry of a stored batch: answer with that batch's base offset.
    Duplicate(u64),
    /// Refuse it: [`Refusal`].
    Refuse(Refusal),
}

/// Why an idempotent producer's batch is refused (the ack carries it, see
/// [`crate::shard::slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not the sequence after the producer's last batch (a batch was lost in between).
    OutOfOrder = 1,
    /// An epoch older than the producer's latest: a fenced (zombie) producer.
    Fenced = 2,
}

impl ProducerSeqs {
    /// A producer at `epoch` with `batches` (first sequence, last sequence, base offset; oldest
    /// first, at most [`PRODUCER_BATCHES_KEPT`]), its newest noted at `seen`.
    pub fn from_parts(epoch: i16, batches: &[(i32, i32, u64)], seen: Instant) -> ProducerSeqs {
        let keep = batches.len().saturating_sub(PRODUCER_BATCHES_KEPT);
        ProducerSeqs {
            epoch,
            batches: batches[keep..].iter().copied().collect(),
            seen,
        }
    }

    /// Its epoch, its batches (oldest first) and when its newest was noted.
    pub fn parts(
        &self,
    ) -> (
        i16,
        impl ExactSizeIterator<Item = (i32, i32, u64)> + '_,
        Instant,
    ) {
        (self.epoch, self.batches.iter().copied(), self.seen)
    }

    /// Notes a batch of the producer (at `epoch`, sequences `first..=last`, stored at
    /// `base_offset`) as its newest; a new epoch forgets the older one's batches.
    pub fn note(&mut self, epoch: i16, first: i32, last: i32, base_offset: u64) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == PRODUCER_BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back((first, last, base_offset));
        self.seen = Instant::now();
    }
}

/// Idempotent producers' batches by producer id, as a partition keeps them.
pub(crate) type Producers = HashMap<i64, ProducerSeqs>;

impl SlotState {
    /// The partition's (topic id, partition).
    pub fn id(&self) -> TopicPartition {
        TopicPartition::new(self.topic_id, self.partition)
    }

    /// What to do with `batch` (a checked RecordBatch) given the producer's earlier batches.
    pub fn check_sequence(&self, batch: &[u8]) -> SeqCheck {
        let Some(BatchProducer {
            id,
            epoch,
            first_sequence: first,
            last_sequence: last,
        }) = batch_producer(batch)
        else {
            return SeqCheck::Append;
        };
        let Some(known) = self.producers.as_ref().and_then(|p| p.get(&id)) else {
            return SeqCheck::Append;
        };
        if epoch < known.epoch {
            return SeqCheck::Refuse(Refusal::Fenced);
        }
        if epoch > known.epoch {
            return match first {
                0 => SeqCheck::Append,
                _ => SeqCheck::Refuse(Refusal::OutOfOrder),
            };
        }
        if let Some(&(_, _, offset)) = (known.batches.iter()).find(|b| (b.0, b.1) == (first, last))
        {
            return SeqCheck::Duplicate(offset);
        }
        let expected = known.batches.back().map_or(first, |b| match b.1 {
            i32::MAX => 0,
            l => l + 1,
        });
        match first == expected {
            true => SeqCheck::Append,
            false => SeqCheck::Refuse(Refusal::OutOfOrder),
        }
    }

    /// Forgets the idempotent producers whose newest batch here was noted `expiry` or longer
    /// before `now`.
    pub fn expire_producers(&mut self, now: Instant, expiry: Duration) {
        let Some(producers) = &mut self.producers else {
            return;
        };
        producers.retain(|_, p| now.saturating_duration_since(p.seen) < expiry);
        if producers.is_empty() {
            self.producers = None;
        }
    }

    /// Notes `batch`, appended at `base_offset`, as its producer's newest.
    pub fn note_sequence(&mut self, batch: &[u8], base_offset: u64) {
        let Some(p) = batch_producer(batch) else {
            return;
        };
        let producers = self.producers.get_or_insert_with(Box::default);
        let known = producers.entry(p.id).or_default();
        known.note(p.epoch, p.first_sequence, p.last_sequence, base_offset);
    }
}

/// Brings the writer's copy of the shard's partition table up to date.
pub(crate) fn refresh_partitions(
    shared: &ShardShared,
    local: &mut Vec<SlotState>,
    seen: &mut Vec<u32>,
    group_of: &mut Vec<u32>,
) {
    let table = shared.partitions.read().expect("partitions lock");
    let mut recovered = shared.recovered_producers.lock().expect("producers lock");
    local.extend(table[local.len()..].iter().map(|p| SlotState {
        topic_id: p.topic_id,
        partition: p.partition,
        offset_next: p.offset_next.load(Ordering::Relaxed),
        // What recovery found of the partition's idempotent producers in the segments it read.
        producers: recovered.remove(&TopicPartition::new(p.topic_id, p.partition)),
    }));
    seen.resize(local.len(), 0);
    group_of.resize(local.len(), 0);
}

/// The commit being built: `buf[..len]` goes to segment position `start` (block-aligned); its
/// first `len_carried` bytes are the previous commit's tail block.
pub(crate) struct Build {
    pub buf: AlignedBuf,
    pub start: u64,
    pub len: usize,
    /// Where this commit's first frame starts (after the carried tail block bytes).
    pub first_frame: usize,
    pub frames: usize,
    pub records: usize,
    /// (ring, one past the last of its records in this commit): the acks it resolves.
    pub acks: Vec<(Arc<AckRing>, u64)>,
    /// (partition slot, entry) of each frame.
    pub entries: Vec<SlotEntry>,
}

/// Frames one partition's records (in order, with the ring each came from and its sequence
/// number there) as one batch at the end of `build`: stamps their offsets (stored for their
/// acks), encodes the RecordBatch v2 and the frame header. The batch is checksummed later,
/// with the commit's others. `base_timestamp` is the first record's; `durable` is where the
/// segment is durable through now (the frame header's claim). Returns the batch's entry.
pub(crate) fn frame_partition<'a>(
    build: &mut Build,
    partition: &mut SlotState,
    segment: SegmentId,
    durable: u64,
    base_timestamp: i64,
    records: impl Iterator<Item = (&'a Pending, &'a AckRing, u64)>,
    room: usize,
) -> BatchEntry {
    let base_offset = partition.offset_next;
    let frame_at = build.len;
    let mut at = frame_at + FRAME_OVERHEAD_BYTES;
    let mut max_timestamp = base_timestamp;
    let mut count = 0u32;
    for (item, ack, seq) in records {
        let delta = item.timestamp - base_timestamp;
        let n = record_bytes(item.tail.len(), delta, count);
        assert!(at + n <= room, "records were counted to fit");
        write_record(&mut build.buf[at..], &item.tail, delta, count);
        at += n;
        max_timestamp = max_timestamp.max(item.timestamp);
        ack.slots.store(seq, base_offset + u64::from(count));
        count += 1;
    }
    let meta = BatchMeta {
        base_offset,
        record_count: count,
        base_timestamp,
        max_timestamp,
    };
    frame_batch(&mut build.buf[frame_at + FRAME_HEADER_BYTES..at], &meta);
    let header = FrameHeader {
        topic_id: partition.topic_id,
        partition: partition.partition,
        base_offset,
        batch_bytes: (at - frame_at - FRAME_HEADER_BYTES) as u32,
        durable_behind_blocks: FrameHeader::durable_behind(build.start + frame_at as u64, durable),
    };
    header.encode(
        (&mut build.buf[frame_at..frame_at + FRAME_HEADER_BYTES])
            .try_into()
            .expect("header slice"),
    );
    partition.offset_next = base_offset + u64::from(count);
    build.len = at;
    build.frames += 1;
    build.records += count as usize;
    BatchEntry {
        base_offset: Offset(base_offset),
        last_offset: Offset(base_offset + u64::from(count) - 1),
        max_timestamp,
        segment,
        pos: build.start + frame_at as u64,
        frame_bytes: (at - frame_at) as u32,
    }
}

/// Frames a producer's checked RecordBatch (`item`, from `ack`'s ring at sequence `seq`) as
/// it is at the end of `build`: sets its base offset and partition leader epoch (outside its
/// checksum), stores its first offset for its ack, and writes the frame header. Its records
/// take the partition's next offsets. Returns the batch's entry.
pub(crate) fn frame_stored_batch(
    build: &mut Build,
    partition: &mut SlotState,
    segment: SegmentId,
    durable: u64,
    (item, ack, seq): (&Pending, &AckRing, u64),
) -> BatchEntry {
    let base_offset = partition.offset_next;
    let frame_at = build.len;
    let batch_at = frame_at + FRAME_HEADER_BYTES;
    let end = batch_at + item.tail.len();
    let batch = &mut build.buf[batch_at..end];
    batch.copy_from_slice(&item.tail);
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&0i32.to_be_bytes());
    // Fields the producer checked (lastOffsetDelta = record count - 1 >= 0): read, not
    // verified again.
    let field = |at: usize| -> [u8; 4] { batch[at..at + 4].try_into().expect("4 bytes") };
    let count = u64::from(u32::from_be_bytes(field(23))) + 1;
    let records = u32::from_be_bytes(field(57)) as usize;
    let max_timestamp = i64::from_be_bytes(batch[35..43].try_into().expect("8 bytes"));
    ack.slots.store(seq, base_offset);
    let header = FrameHeader {
        topic_id: partition.topic_id,
        partition: partition.partition,
        base_offset,
        batch_bytes: item.tail.len() as u32,
        durable_behind_blocks: FrameHeader::durable_behind(build.start + frame_at as u64, durable),
    };
    header.encode(
        (&mut build.buf[frame_at..batch_at])
            .try_into()
            .expect("header slice"),
    );
    partition.offset_next = base_offset + count;
    build.len = end;
    build.frames += 1;
    build.records += records;
    BatchEntry {
        base_offset: Offset(base_offset),
        last_offset: Offset(base_offset + count - 1),
        max_timestamp,
        segment,
        pos: build.start + frame_at as u64,
        frame_bytes: (end - frame_at) as u32,
    }
}

/// Where `entry`'s RecordBatch (its frame after the header) is in a commit buffer that starts
/// at segment position `build_start`.
pub(crate) fn entry_batch_range(build_start: u64, entry: &BatchEntry) -> Range<usize> {
    let frame_at = (entry.pos - build_start) as usize;
    frame_at + FRAME_HEADER_BYTES..frame_at + entry.frame_bytes as usize
}
