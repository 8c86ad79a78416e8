//! Merging a partition's consecutive RecordBatches into one, as the rewrite of a sealed segment
//! does (see `shard::rewrite`): with thousands of partitions each commit holds a record or two
//! of a partition, and every such batch costs 93 bytes of frame and batch header and a checksum
//! for its one record of 100 bytes. Pure: bytes in, bytes out.
//!
//! Batches merge when nothing a reader sees changes but the batch boundaries, which Kafka's
//! protocol leaves to the broker: each holds records (no gap), is uncompressed, has create-time
//! timestamps, is neither transactional nor a control batch (attributes 0); the second's first
//! offset follows the first's last; both come from the same producer and epoch (or none), with
//! the second's first sequence following the first's last. The merged batch keeps the first
//! batch's header (base offset and timestamp, producer, epoch, first sequence, leader epoch)
//! and re-encodes each record with its offset and timestamp deltas from that base.

use super::batch::Cursor;
use super::format::{BATCH_HEADER_BYTES, BATCH_MAGIC, DecodeError, fail, put_varlong};

/// The header fields of a batch that decide whether it merges with its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MergeKey {
    base_offset: u64,
    last_offset: u64,
    producer_id: i64,
    producer_epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
}

impl MergeKey {
    /// The key of `batch` (a whole, verified RecordBatch v2), or `None` if it never merges: a
    /// gap, compressed, log-append-time, transactional or control batch, or one whose records
    /// do not fill its offsets.
    pub(crate) fn of(batch: &[u8]) -> Option<MergeKey> {
        if batch.len() < BATCH_HEADER_BYTES || batch[16] as i8 != BATCH_MAGIC {
            return None;
        }
        let i16_at = |at: usize| i16::from_be_bytes([batch[at], batch[at + 1]]);
        let i32_at = |at: usize| i32::from_be_bytes(batch[at..at + 4].try_into().unwrap());
        let i64_at = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().unwrap());
        let (attributes, delta, count) = (i16_at(21), i32_at(23), i32_at(57));
        if attributes != 0 || count < 1 || delta != count - 1 {
            return None;
        }
        let base_offset = i64_at(0) as u64;
        let first_sequence = i32_at(53);
        let last_sequence = match first_sequence {
            -1 => -1,
            s => ((i64::from(s) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32,
        };
        Some(MergeKey {
            base_offset,
            last_offset: base_offset + delta as u64,
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            first_sequence,
            last_sequence,
        })
    }

    /// Whether a batch keyed `next` may follow this one in the same merged batch.
    pub(crate) fn continues(&self, next: &MergeKey) -> bool {
        let sequence_follows = match (self.producer_id, self.last_sequence) {
            (id, _) if id < 0 => next.first_sequence == -1 && self.first_sequence == -1,
            (_, i32::MAX) => next.first_sequence == 0,
            (_, last) => next.first_sequence == last + 1,
        };
        next.base_offset == self.last_offset + 1
            && next.producer_id == self.producer_id
            && next.producer_epoch == self.producer_epoch
            && sequence_follows
    }

    /// This key and `next`'s together (`next` continues it).
    pub(crate) fn joined(&self, next: &MergeKey) -> MergeKey {
        MergeKey {
            last_offset: next.last_offset,
            last_sequence: next.last_sequence,
            ..*self
        }
    }
}

/// Builds one RecordBatch from consecutive batches that [`MergeKey::continues`] links.
#[derive(Debug, Default)]
pub(crate) struct BatchMerger {
    /// The merged batch so far: the first batch's header, then the records re-encoded.
    out: Vec<u8>,
    base_offset: u64,
    base_timestamp: i64,
    max_timestamp: i64,
    records: u32,
}

impl BatchMerger {
    /// Starts a merged batch with `first` (a whole, verified RecordBatch v2 whose
    /// [`MergeKey`] exists); its records are copied as they are.
    pub(crate) fn start(&mut self, first: &[u8]) {
        let be_i64 = |at: usize| i64::from_be_bytes(first[at..at + 8].try_into().unwrap());
        self.out.clear();
        self.out.extend_from_slice(first);
        self.base_offset = be_i64(0) as u64;
        self.base_timestamp = be_i64(27);
        self.max_timestamp = be_i64(35);
        self.records = i32::from_be_bytes(first[57..61].try_into().unwrap()) as u32;
    }

    /// Bytes the merged batch holds so far.
    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }

    /// Appends the records of `next` (a verified batch that continues the last one added),
    /// each re-encoded with its deltas from the merged batch's base offset and timestamp.
    pub(crate) fn push(&mut self, next: &[u8]) -> Result<(), DecodeError> {
        let be_i64 = |at: usize| i64::from_be_bytes(next[at..at + 8].try_into().unwrap());
        let base_offset = be_i64(0) as u64;
        let base_timestamp = be_i64(27);
        let count = i32::from_be_bytes(next[57..61].try_into().unwrap());
        let mut c = Cursor {
            bytes: &next[BATCH_HEADER_BYTES..],
            pos: 0,
        };
        for _ in 0..count {
            let len = c.varlong(5)?;
            let Some(end) = usize::try_from(len).ok().map(|l| c.pos + l) else {
                return fail(format!("negative record length {len}"));
            };
            if end > c.bytes.len() {
                return fail("record runs past the end of its batch");
            }
            let attributes = *c
                .bytes
                .get(c.pos)
                .ok_or(DecodeError("empty record".into()))?;
            c.pos += 1;
            let timestamp = base_timestamp.wrapping_add(c.varlong(10)?);
            let offset = base_offset + c.varlong(5)? as u64;
            if c.pos > end {
                return fail("record deltas run past the end of the record");
            }
            let tail = &c.bytes[c.pos..end];
            c.pos = end;
            let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
            let Ok(offset_delta) = i32::try_from(offset - self.base_offset) else {
                return fail("merged batch spans more than 2^31 offsets");
            };
            let mut head = Vec::with_capacity(16);
            head.push(attributes);
            put_varlong(&mut head, timestamp_delta);
            put_varlong(&mut head, i64::from(offset_delta));
            put_varlong(&mut self.out, (head.len() + tail.len()) as i64);
            self.out.extend_from_slice(&head);
            self.out.extend_from_slice(tail);
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        if c.pos != c.bytes.len() {
            return fail("bytes left over after the last record");
        }
        self.records += count as u32;
        Ok(())
    }

    /// The merged batch: its length, last offset delta, largest timestamp, record count and
    /// checksum set.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let len = self.out.len();
        self.out[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        self.out[23..27].copy_from_slice(&(self.records as i32 - 1).to_be_bytes());
        self.out[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        self.out[57..61].copy_from_slice(&(self.records as i32).to_be_bytes());
        super::format::checksum_batch(&mut self.out);
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::BatchView;
    use crate::segment::format::{BatchMeta, encode_record_tail, seal_batch, write_record};
    use proptest::prelude::*;

    type Rec = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    /// A batch of `records` (timestamp, key, value, headers) from `base_offset` on.
    fn batch(base_offset: u64, records: &[Rec], producer: Option<(i64, i16, i32)>) -> Vec<u8> {
        let base_ts = records[0].0;
        let mut out = vec![0u8; BATCH_HEADER_BYTES];
        for (i, (ts, k, v, h)) in records.iter().enumerate() {
            let mut tail = Vec::new();
            let headers: Vec<(&str, Option<&[u8]>)> =
                h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            encode_record_tail(&mut tail, k.as_deref(), v.as_deref(), &headers);
            let mut rec = vec![0u8; tail.len() + 32];
            let n = write_record(&mut rec, &tail, ts - base_ts, i as u32);
            out.extend_from_slice(&rec[..n]);
        }
        let meta = BatchMeta {
            base_offset,
            record_count: records.len() as u32,
            base_timestamp: base_ts,
            max_timestamp: records.iter().map(|r| r.0).max().unwrap(),
        };
        seal_batch(&mut out, &meta);
        if let Some((id, epoch, seq)) = producer {
            out[43..51].copy_from_slice(&id.to_be_bytes());
            out[51..53].copy_from_slice(&epoch.to_be_bytes());
            out[53..57].copy_from_slice(&seq.to_be_bytes());
            super::super::format::checksum_batch(&mut out);
        }
        out
    }

    /// A record as the tests compare it: offset, timestamp, key, value, headers flattened.
    type Flat = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

    fn records_of(b: &[u8]) -> Vec<Flat> {
        let view = BatchView::decode(b).expect("valid batch");
        view.check_records().expect("valid records");
        view.records()
            .map(|r| {
                let r = r.unwrap();
                let headers: Vec<u8> = r
                    .headers()
                    .flat_map(|h| {
                        let (k, v) = h.unwrap();
                        let mut x = k.as_bytes().to_vec();
                        x.extend_from_slice(v.unwrap_or(b"<null>"));
                        x
                    })
                    .collect();
                (
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    headers,
                )
            })
            .collect()
    }

    fn rec_strategy() -> impl Strategy<Value = Rec> {
        (
            -1_000_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                (
                    "[a-z]{0,5}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
    }

    proptest! {
        /// Merged batches hold the same records, in order, at the same offsets with the same
        /// timestamps, keys, values and headers, under a valid checksum.
        #[test]
        fn merging_keeps_every_record(
            batches in proptest::collection::vec(proptest::collection::vec(rec_strategy(), 1..6), 1..8),
            first in 0u64..1 << 40,
            idempotent in any::<bool>(),
        ) {
            let mut offset = first;
            let mut seq = i32::MAX - 7;
            let mut encoded = Vec::new();
            for records in &batches {
                let producer = idempotent.then_some((42, 3, seq));
                encoded.push(batch(offset, records, producer));
                offset += records.len() as u64;
                seq = ((i64::from(seq) + records.len() as i64) % (i64::from(i32::MAX) + 1)) as i32;
            }
            let mut key = MergeKey::of(&encoded[0]).expect("mergeable");
            let mut merger = BatchMerger::default();
            merger.start(&encoded[0]);
            for b in &encoded[1..] {
                let next = MergeKey::of(b).expect("mergeable");
                prop_assert!(key.continues(&next));
                key = key.joined(&next);
                merger.push(b).expect("merge");
            }
            let merged = merger.finish().to_vec();
            let want: Vec<_> = encoded.iter().flat_map(|b| records_of(b)).collect();
            prop_assert_eq!(records_of(&merged), want);
            let view = BatchView::decode(&merged).unwrap();
            prop_assert_eq!(view.base_offset, first);
            prop_assert_eq!(u64::from(view.last_offset_delta) + 1, offset - first);
            let max = batches.iter().flatten().map(|r| r.0).max().unwrap();
            prop_assert_eq!(view.max_timestamp, max);
            prop_assert_eq!(&merged[43..57], &encoded[0][43..57]);
            if idempotent {
                let p = crate::segment::batch::batch_producer(&merged).unwrap();
                let last = crate::segment::batch::batch_producer(encoded.last().unwrap()).unwrap();
                prop_assert_eq!(p.last_sequence, last.last_sequence);
            }
        }
    }

    fn one(ts: i64) -> Vec<Rec> {
        vec![(ts, None, Some(b"v".to_vec()), vec![])]
    }

    #[test]
    fn batches_that_must_stay_whole_do_not_merge() {
        let a = batch(10, &one(5), None);
        let key = MergeKey::of(&a).unwrap();
        // Offsets not following on.
        assert!(!key.continues(&MergeKey::of(&batch(12, &one(5), None)).unwrap()));
        assert!(key.continues(&MergeKey::of(&batch(11, &one(5), None)).unwrap()));
        // Another producer, another epoch, a sequence that does not follow.
        let p = batch(10, &one(5), Some((7, 1, 4)));
        let pk = MergeKey::of(&p).unwrap();
        assert!(
            !key.continues(&pk) && !pk.continues(&MergeKey::of(&batch(11, &one(5), None)).unwrap())
        );
        assert!(pk.continues(&MergeKey::of(&batch(11, &one(5), Some((7, 1, 5)))).unwrap()));
        assert!(!pk.continues(&MergeKey::of(&batch(11, &one(5), Some((7, 2, 5)))).unwrap()));
        assert!(!pk.continues(&MergeKey::of(&batch(11, &one(5), Some((8, 1, 5)))).unwrap()));
        assert!(!pk.continues(&MergeKey::of(&batch(11, &one(5), Some((7, 1, 6)))).unwrap()));
        // Compressed, transactional, control, log-append time: never.
        for attributes in [1i16, 8, 16, 32] {
            let mut b = batch(11, &one(5), None);
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            assert_eq!(MergeKey::of(&b), None, "attributes {attributes}");
        }
        // A gap (no records).
        let gap = crate::segment::format::encode_gap_frame(1, 0, 11, 20, 0);
        assert_eq!(
            MergeKey::of(&gap[crate::segment::format::FRAME_HEADER_BYTES..]),
            None
        );
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let a = batch(0, &one(5), None);
        let mut b = batch(1, &one(6), None);
        let mut merger = BatchMerger::default();
        merger.start(&a);
        // The record's length claims more than the batch holds.
        b[BATCH_HEADER_BYTES] = 0x7e;
        assert!(merger.push(&b).is_err());
    }
}
