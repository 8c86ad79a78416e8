//! The bytes of a segment: frames, each holding one Kafka RecordBatch v2. Pure encode and
//! decode, no I/O.
//!
//! A segment is a sequence of frames written back to back from byte 0; the first all-zero
//! frame header ends it (segments are preallocated, so the unwritten rest reads as zeros).
//!
//! ```text
//! frame header, 32 bytes, little-endian (floodgate's own):
//!   0  u32  magic            0x4C47_4746 ("FGGL" read as bytes F G G L)
//!   4  u8   version          2 (1: written by older builds; read, with no durable claim)
//!   5  u8   flags            0 (reserved, must be 0)
//!   6  u16  durable_behind   the segment was durable through (frame position - this × 4096)
//!                            when the frame's commit was built; 0xFFFF: no claim (version 1: 0)
//!   8  u32  topic_id         the topic's id in the metadata file (never reused)
//!  12  u32  partition        partition number within the topic
//!  16  u64  base_offset      offset of the batch's first record (equals the batch's baseOffset)
//!  24  u32  batch_bytes      length of the RecordBatch that follows
//!  28  u32  header_crc       CRC-32C of bytes 0..28
//!
//! RecordBatch v2, big-endian, exactly as Kafka stores and sends it:
//!   0  i64  baseOffset       stamped by the shard writer; outside Kafka's CRC, inside ours
//!   8  i32  batchLength      bytes after this field (= batch_bytes - 12)
//!  12  i32  partitionLeaderEpoch   -1
//!  16  i8   magic            2
//!  17  u32  crc              CRC-32C (Castagnoli) of bytes 21..end
//!  21  i16  attributes       0: no compression, create-time timestamps, not transactional
//!  23  i32  lastOffsetDelta  record count - 1
//!  27  i64  baseTimestamp    timestamp of the first record (ms since the epoch)
//!  35  i64  maxTimestamp     largest record timestamp
//!  43  i64  producerId       -1
//!  51  i16  producerEpoch    -1
//!  53  i32  baseSequence     -1
//!  57  i32  recordCount
//!  61  records, each:
//!        varint length of the rest of the record
//!        i8     attributes (0)
//!        varlong timestampDelta (from baseTimestamp)
//!        varint offsetDelta (from baseOffset)
//!        varint key length (-1: null key), key bytes
//!        varint value length (-1: null value), value bytes
//!        varint header count, each: varint key length, key (UTF-8), varint value length, value
//!   (varint and varlong are zigzag-encoded LEB128, as in protobuf's sint32/sint64)
//! ```
//!
//! The base offset sits outside Kafka's CRC, so the writer can stamp offsets into batches that
//! producers encoded without recomputing the CRC; the frame header repeats it under its own CRC
//! so a flipped bit there is caught too. docs/FORMAT.md has a worked hex example.

use std::fmt;
use std::ops::Range;

/// Every O_DIRECT write and read is aligned to, and a multiple of, this many bytes.
pub const BLOCK_BYTES: usize = 4096;
/// The unit that a torn write can leave old or new on the device.
pub const SECTOR_BYTES: usize = 512;
/// The frame magic ("FGGL" as bytes).
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"FGGL");
/// The frame format version this code writes.
pub const FRAME_VERSION: u8 = 2;
/// The oldest frame format version this code reads: version 1 frames carry no durable claim.
pub const FRAME_VERSION_MIN: u8 = 1;
/// [`FrameHeader::durable_behind_blocks`] of a frame that makes no claim.
pub const DURABLE_BEHIND_UNKNOWN: u16 = u16::MAX;
/// Size of the frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Size of a RecordBatch v2 header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes a frame adds around its records.
pub const FRAME_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + BATCH_HEADER_BYTES;
/// Kafka's record batch magic.
pub const BATCH_MAGIC: i8 = 2;
/// The most bytes a record's own length prefix and fixed fields can add to its encoded tail:
/// length (5) + attributes (1) + timestampDelta (10) + offsetDelta (5).
pub const RECORD_PREFIX_BYTES_MAX: usize = 21;
/// The smallest encoded record: length, attributes, two deltas, null key, null value, 0 headers.
pub(super) const RECORD_BYTES_MIN: usize = 7;

/// Why bytes did not decode. Callers add the file and position (see `Error::Corrupt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn fail<T>(reason: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(reason.into()))
}

/// The decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The topic's id.
    pub topic_id: u32,
    /// The partition within the topic.
    pub partition: u32,
    /// The offset of the first record of the batch.
    pub base_offset: u64,
    /// The length of the RecordBatch after the header.
    pub batch_bytes: u32,
    /// How far behind this frame the segment was known durable when its commit was built, in
    /// blocks: every byte before `frame position - durable_behind_blocks × BLOCK_BYTES` had
    /// been flushed. Recovery takes damage before that point for lost acknowledged data, not
    /// a torn tail. [`DURABLE_BEHIND_UNKNOWN`]: no claim.
    pub durable_behind_blocks: u16,
}

/// What a frame header slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSlot {
    /// All zeros: the end of the written part of a segment.
    Zero,
    /// A valid header.
    Frame(FrameHeader),
}

impl FrameHeader {
    /// Writes the header into `out`.
    pub fn encode(&self, out: &mut [u8; FRAME_HEADER_BYTES]) {
        // Bytes 0..24 as little-endian words: magic, version, a zero byte of flags, the durable
        // claim; topic id and partition; base offset. The checksum is taken from them.
        let words = [
            u64::from(FRAME_MAGIC)
                | u64::from(FRAME_VERSION) << 32
                | u64::from(self.durable_behind_blocks) << 48,
            u64::from(self.topic_id) | u64::from(self.partition) << 32,
            self.base_offset,
        ];
        let batch_bytes = self.batch_bytes.to_le_bytes();
        let crc = crate::segment::crc::crc32c_3_words_u32(words, self.batch_bytes);
        for (i, w) in words.iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        out[24..28].copy_from_slice(&batch_bytes);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header slot; `bytes` must hold at least [`FRAME_HEADER_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<HeaderSlot, DecodeError> {
        let Some(h) = bytes.get(..FRAME_HEADER_BYTES) else {
            return fail("frame header cut short");
        };
        let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
        if magic != FRAME_MAGIC {
            if h.iter().all(|&b| b == 0) {
                return Ok(HeaderSlot::Zero);
            }
            return fail(format!("bad frame magic {magic:#010x}"));
        }
        let crc_stored = u32::from_le_bytes(h[28..32].try_into().unwrap());
        let crc = crate::segment::crc::crc32c(&h[0..28]);
        if crc != crc_stored {
            return fail(format!(
                "frame header checksum mismatch (stored {crc_stored:#010x}, computed {crc:#010x})"
            ));
        }
        let version = h[4];
        if !(FRAME_VERSION_MIN..=FRAME_VERSION).contains(&version) {
            return fail(format!("unsupported frame version {version}"));
        }
        let durable_behind_blocks = u16::from_le_bytes([h[6], h[7]]);
        if h[5] != 0 || (version == 1 && durable_behind_blocks != 0) {
            return fail("reserved frame header bytes are not zero");
        }
        let header = FrameHeader {
            durable_behind_blocks: if version == 1 {
                DURABLE_BEHIND_UNKNOWN
            } else {
                durable_behind_blocks
            },
            topic_id: u32::from_le_bytes(h[8..12].try_into().unwrap()),
            partition: u32::from_le_bytes(h[12..16].try_into().unwrap()),
            base_offset: u64::from_le_bytes(h[16..24].try_into().unwrap()),
            batch_bytes: u32::from_le_bytes(h[24..28].try_into().unwrap()),
        };
        if (header.batch_bytes as usize) < BATCH_HEADER_BYTES {
            return fail(format!(
                "batch length {} below the minimum",
                header.batch_bytes
            ));
        }
        Ok(HeaderSlot::Frame(header))
    }

    /// The frame's total length: header plus batch.
    pub fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.batch_bytes)
    }

    /// The claim to write in a frame at `pos` of a segment durable through `durable`: the
    /// distance rounded up to whole blocks, so the claim never covers more than was flushed.
    pub fn durable_behind(pos: u64, durable: u64) -> u16 {
        let blocks = pos.saturating_sub(durable).div_ceil(BLOCK_BYTES as u64);
        u16::try_from(blocks)
            .ok()
            .filter(|&b| b != DURABLE_BEHIND_UNKNOWN)
            .unwrap_or(DURABLE_BEHIND_UNKNOWN)
    }

    /// The position through which this frame, found at `pos`, says its segment was durable.
    pub fn durable_through(&self, pos: u64) -> Option<u64> {
        (self.durable_behind_blocks != DURABLE_BEHIND_UNKNOWN)
            .then(|| pos.saturating_sub(u64::from(self.durable_behind_blocks) * BLOCK_BYTES as u64))
    }
}

// ---------------------------------------------------------------------------------------------
// Varints.

/// Bytes needed for `v` as a zigzag varlong.
pub(crate) fn varlong_bytes(v: i64) -> usize {
    let z = zigzag(v);
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `v` as a zigzag varlong (varints use the same encoding for smaller values).
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Writes `v` as a zigzag varlong at the start of `out`; returns the bytes written.
/// `out` must have room for [`varlong_bytes`]`(v)` bytes.
pub(crate) fn write_varlong(out: &mut [u8], v: i64) -> usize {
    let mut z = zigzag(v);
    let mut i = 0;
    while z >= 0x80 {
        out[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    out[i] = z as u8;
    i + 1
}

/// One header of a record: a UTF-8 key and an optional value.
pub type HeaderRef<'a> = (&'a str, Option<&'a [u8]>);

/// Appends the part of a record after its offset delta (key, value, headers) to `out`. The
/// producer encodes this on its own thread; the writer adds the length, attributes and deltas.
pub fn encode_record_tail(
    out: &mut Vec<u8>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) {
    fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => put_varlong(out, -1),
            Some(b) => {
                put_varlong(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }
    put_nullable(out, key);
    put_nullable(out, value);
    put_varlong(out, headers.len() as i64);
    for (k, v) in headers {
        put_varlong(out, k.len() as i64);
        out.extend_from_slice(k.as_bytes());
        put_nullable(out, *v);
    }
}

/// The encoded size of a whole record (with its length prefix) whose tail is `tail_bytes` long.
pub fn record_bytes(tail_bytes: usize, timestamp_delta: i64, offset_delta: u32) -> usize {
    let body = 1 + varlong_bytes(timestamp_delta) + varlong_bytes(offset_delta as i64) + tail_bytes;
    varlong_bytes(body as i64) + body
}

/// Writes a whole record at the start of `out`; returns the bytes written
/// (= [`record_bytes`]). `out` must be large enough.
pub fn write_record(out: &mut [u8], tail: &[u8], timestamp_delta: i64, offset_delta: u32) -> usize {
    let body = 1 + varlong_bytes(timestamp_delta) + varlong_bytes(offset_delta as i64) + tail.len();
    let mut n = write_varlong(out, body as i64);
    out[n] = 0; // attributes
    n += 1;
    n += write_varlong(&mut out[n..], timestamp_delta);
    n += write_varlong(&mut out[n..], offset_delta as i64);
    out[n..n + tail.len()].copy_from_slice(tail);
    n + tail.len()
}

/// Fields of a batch header that the writer fills in once its records are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records (at least 1 in a batch of records; 0 in a gap).
    pub record_count: u32,
    /// Timestamp of the first record (ms).
    pub base_timestamp: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp: i64,
}

/// Writes the 61-byte RecordBatch header into `batch[..61]` and computes the CRC over
/// `batch[21..]`; the records must already be in `batch[61..]`.
pub fn seal_batch(batch: &mut [u8], meta: &BatchMeta) {
    assert!(meta.record_count >= 1);
    let words = write_batch_header(batch, meta, meta.record_count - 1);
    let crc = crate::segment::crc::crc32c_words(&words, &batch[BATCH_HEADER_BYTES..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Marks a RecordBatch v2 (`batch`, whole) as stamped with the time the log appended it,
/// `append_ms`: its attributes' timestamp type becomes LogAppendTime, its max timestamp
/// `append_ms`, and its CRC is computed again. Its records are unchanged: readers take the
/// batch's max timestamp as every record's, as Kafka's do.
pub fn stamp_log_append_time(batch: &mut [u8], append_ms: i64) {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | LOG_APPEND_TIME_BIT;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&append_ms.to_be_bytes());
    let crc = crate::segment::crc::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The attribute bit of a batch whose timestamps are the log's append time.
pub const LOG_APPEND_TIME_BIT: i16 = 0x08;

/// Writes the 61-byte RecordBatch header into `batch[..61]` but for its CRC, which
/// [`checksum_batch`] adds later. A writer framing many small batches checksums them all after
/// framing the last: a checksum read right after the bytes were stored a few at a time waits
/// for those stores (a one-record frame: 39 ns with its checksum taken at once, 28 ns later,
/// `benches/format.rs`).
pub fn frame_batch(batch: &mut [u8], meta: &BatchMeta) {
    assert!(meta.record_count >= 1);
    write_batch_header(batch, meta, meta.record_count - 1);
}

/// A frame that holds no records and stands for offsets `first..=last` of a partition: the
/// offsets of records a repair cut off, so that they are never given to new records (a
/// consumer that had read past them would otherwise skip the new ones). A RecordBatch with no
/// records and `lastOffsetDelta = last - first`, as Kafka leaves after compaction; its
/// timestamps are -1 (none), so time lookups pass over it.
pub fn encode_gap_frame(
    topic_id: u32,
    partition: u32,
    first: u64,
    last: u64,
    durable_behind_blocks: u16,
) -> Vec<u8> {
    let delta = u32::try_from(last - first).expect("a gap of at most 2^32 offsets");
    let mut frame = vec![0u8; FRAME_OVERHEAD_BYTES];
    let meta = BatchMeta {
        base_offset: first,
        record_count: 0,
        base_timestamp: -1,
        max_timestamp: -1,
    };
    let batch = &mut frame[FRAME_HEADER_BYTES..];
    write_batch_header(batch, &meta, delta);
    checksum_batch(batch);
    let header = FrameHeader {
        topic_id,
        partition,
        base_offset: first,
        batch_bytes: BATCH_HEADER_BYTES as u32,
        durable_behind_blocks,
    };
    header.encode(
        (&mut frame[..FRAME_HEADER_BYTES])
            .try_into()
            .expect("header"),
    );
    frame
}

/// Computes and stores the CRC of a batch whose header and records are in place.
pub fn checksum_batch(batch: &mut [u8]) {
    let crc = crate::segment::crc::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// [`checksum_batch`] for each of `batches` (ranges of `buf`), three at a time.
pub fn checksum_batches(buf: &mut [u8], batches: &[Range<usize>]) {
    let mut threes = batches.chunks_exact(3);
    for three in &mut threes {
        let crcs = crate::segment::crc::crc32c_3([
            &buf[three[0].start + 21..three[0].end],
            &buf[three[1].start + 21..three[1].end],
            &buf[three[2].start + 21..three[2].end],
        ]);
        for (r, crc) in three.iter().zip(crcs) {
            buf[r.start + 17..r.start + 21].copy_from_slice(&crc.to_be_bytes());
        }
    }
    for r in threes.remainder() {
        checksum_batch(&mut buf[r.clone()]);
    }
}

/// Writes the header but its CRC; returns its checksummed bytes 21..61 as little-endian words.
fn write_batch_header(batch: &mut [u8], meta: &BatchMeta, last_offset_delta: u32) -> [u64; 5] {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    let batch_length = (batch.len() - 12) as u32;
    // Bytes 21..61, big-endian fields packed into big-endian integers: attributes (0),
    // lastOffsetDelta, baseTimestamp, maxTimestamp (its first 2 bytes) | maxTimestamp's other
    // 6, producerId (-1), producerEpoch (-1) | baseSequence (-1), recordCount.
    let (base_ts, max_ts) = (meta.base_timestamp as u64, meta.max_timestamp as u64);
    let a =
        u128::from(last_offset_delta) << 80 | u128::from(base_ts) << 16 | u128::from(max_ts >> 48);
    let b = u128::from(max_ts & 0xFFFF_FFFF_FFFF) << 80 | (u128::from(u64::MAX) << 16) | 0xFFFF;
    let c = 0xFFFF_FFFF_0000_0000 | u64::from(meta.record_count);
    let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
    batch[0..8].copy_from_slice(&meta.base_offset.to_be_bytes());
    batch[8..16].copy_from_slice(&(u64::from(batch_length) << 32 | 0xFFFF_FFFF).to_be_bytes());
    batch[16] = BATCH_MAGIC as u8;
    batch[21..37].copy_from_slice(&a);
    batch[37..53].copy_from_slice(&b);
    batch[53..61].copy_from_slice(&c.to_be_bytes());
    let le = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    [
        le(&a[..8]),
        le(&a[8..]),
        le(&b[..8]),
        le(&b[8..]),
        c.swap_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::batch::{Cursor, decode_frame};

    /// (timestamp, key, value) of a test record.
    type TestRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

    /// Encodes a frame with the given records, the way the shard writer does.
    fn frame(
        topic_id: u32,
        partition: u32,
        base_offset: u64,
        records: &[TestRecord<'_>],
    ) -> Vec<u8> {
        let base_timestamp = records[0].0;
        let mut batch = vec![0u8; BATCH_HEADER_BYTES];
        for (i, (ts, key, value)) in records.iter().enumerate() {
            let mut tail = Vec::new();
            encode_record_tail(&mut tail, *key, *value, &[("h", Some(b"v"))]);
            let n = record_bytes(tail.len(), ts - base_timestamp, i as u32);
            let at = batch.len();
            batch.resize(at + n, 0);
            assert_eq!(
                write_record(&mut batch[at..], &tail, ts - base_timestamp, i as u32),
                n
            );
        }
        let meta = BatchMeta {
            base_offset,
            record_count: records.len() as u32,
            base_timestamp,
            max_timestamp: records.iter().map(|r| r.0).max().unwrap(),
        };
        seal_batch(&mut batch, &meta);
        let mut out = vec![0u8; FRAME_HEADER_BYTES];
        FrameHeader {
            topic_id,
            partition,
            base_offset,
            batch_bytes: batch.len() as u32,
            durable_behind_blocks: 1,
        }
        .encode((&mut out[..FRAME_HEADER_BYTES]).try_into().unwrap());
        out.extend_from_slice(&batch);
        out
    }

    /// A gap frame decodes as a batch of no records spanning its offsets; a gap whose batch
    /// holds bytes, or a batch of records whose lastOffsetDelta runs past them, is refused.
    #[test]
    fn gap_frames_span_offsets_and_hold_no_records() {
        let bytes = encode_gap_frame(4, 2, 100, 149, DURABLE_BEHIND_UNKNOWN);
        let (header, batch) = decode_frame(&bytes).unwrap().unwrap();
        assert_eq!((header.topic_id, header.partition), (4, 2));
        assert_eq!((batch.base_offset, batch.last_offset()), (100, 149));
        assert_eq!(batch.record_count, 0);
        assert_eq!(batch.records().count(), 0);
        batch.check_records().unwrap();
        assert_eq!(header.frame_bytes(), bytes.len() as u64);
        // A gap of one offset.
        let one = encode_gap_frame(4, 2, 7, 7, 0);
        let (_, one) = decode_frame(&one).unwrap().unwrap();
        assert_eq!(one.last_offset(), 7);
        // One record claiming two offsets: still refused.
        let mut two = frame(4, 2, 100, &[(1, None, Some(b"v"))]);
        two[FRAME_HEADER_BYTES + 26] = 1; // lastOffsetDelta's low byte
        checksum_batch(&mut two[FRAME_HEADER_BYTES..]);
        assert!(decode_frame(&two).is_err());
    }

    #[test]
    fn varlong_round_trips_and_sizes() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_bytes(v), "{v}");
            let mut buf = [0u8; 10];
            assert_eq!(write_varlong(&mut buf, v), out.len());
            assert_eq!(&buf[..out.len()], &out[..]);
            let mut c = Cursor {
                bytes: &out,
                pos: 0,
            };
            assert_eq!(c.varlong(10).unwrap(), v);
        }
    }

    #[test]
    fn frame_round_trips() {
        let bytes = frame(
            7,
            3,
            1000,
            &[
                (1_700_000_000_000, Some(b"k1"), Some(b"v1")),
                (1_700_000_000_005, None, None),
            ],
        );
        let (h, batch) = decode_frame(&bytes).unwrap().unwrap();
        assert_eq!((h.topic_id, h.partition, h.base_offset), (7, 3, 1000));
        assert_eq!(h.frame_bytes() as usize, bytes.len());
        assert_eq!(batch.record_count, 2);
        assert_eq!(batch.last_offset(), 1001);
        assert_eq!(batch.max_timestamp, 1_700_000_000_005);
        batch.check_records().unwrap();
        let records: Vec<_> = batch.records().map(|r| r.unwrap()).collect();
        assert_eq!(records[0].offset, 1000);
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[0].value, Some(&b"v1"[..]));
        let headers: Vec<_> = records[0].headers().map(|h| h.unwrap()).collect();
        assert_eq!(headers, vec![("h", Some(&b"v"[..]))]);
        assert_eq!(records[1].offset, 1001);
        assert_eq!(records[1].timestamp, 1_700_000_000_005);
        assert_eq!((records[1].key, records[1].value), (None, None));
    }

    /// Rewrites a frame's batch field at `at` (batch bytes) and both checksums, as a writer
    /// with a bug would have stored it.
    fn forge(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
        let b = FRAME_HEADER_BYTES + at;
        frame[b..b + bytes.len()].copy_from_slice(bytes);
        let batch = &mut frame[FRAME_HEADER_BYTES..];
        let crc = crate::segment::crc::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        frame
    }

    /// Batches are dense, whatever their checksums say: a lastOffsetDelta past the last record,
    /// or a record whose offset delta is not its position, is refused (offsets that hold
    /// nothing would otherwise become a partition's).
    #[test]
    fn batches_with_offset_gaps_are_refused() {
        let records: [TestRecord<'_>; 2] = [(5, None, Some(b"a")), (6, None, Some(b"b"))];
        let good = frame(1, 0, 10, &records);
        let (_, batch) = decode_frame(&good).unwrap().unwrap();
        batch.check_records().unwrap();
        let gap = forge(good.clone(), 23, &2i32.to_be_bytes());
        let e = decode_frame(&gap).unwrap_err();
        assert!(e.to_string().contains("lastOffsetDelta 2"), "{e}");
        // The second record's offset delta 1 -> 2: skip the first record, then the second's
        // length, attributes and timestamp delta.
        let mut c = Cursor {
            bytes: &good[FRAME_HEADER_BYTES..],
            pos: BATCH_HEADER_BYTES,
        };
        let first = c.varlong(10).unwrap() as usize;
        c.pos += first;
        c.varlong(10).unwrap();
        c.pos += 1;
        c.varlong(10).unwrap();
        let delta_at = c.pos;
        assert_eq!(c.varlong(10).unwrap(), 1);
        let skipped = forge(good, delta_at, &[4]); // zigzag of 2
        let (_, batch) = decode_frame(&skipped).unwrap().unwrap();
        let e = batch.check_records().unwrap_err();
        assert!(e.to_string().contains("record 1 has offset delta 2"), "{e}");
    }

    #[test]
    fn zero_header_is_end_of_data() {
        assert!(decode_frame(&[0u8; 64]).unwrap().is_none());
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = frame(1, 0, 42, &[(5, Some(b"key"), Some(b"value"))]);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            // The leader epoch (batch bytes 12..16) is outside both checksums and unused.
            let in_epoch = (FRAME_HEADER_BYTES + 12..FRAME_HEADER_BYTES + 16).contains(&(bit / 8));
            let result = decode_frame(&damaged);
            if in_epoch {
                assert!(result.is_ok(), "bit {bit}");
            } else {
                assert!(result.is_err(), "bit {bit} flipped undetected");
            }
        }
    }

    #[test]
    fn truncated_frame_is_an_error_at_every_length() {
        let bytes = frame(1, 0, 0, &[(5, Some(b"key"), Some(b"value"))]);
        for len in FRAME_HEADER_BYTES..bytes.len() {
            assert!(decode_frame(&bytes[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn absurd_lengths_are_rejected_without_allocating() {
        let mut bytes = frame(1, 0, 0, &[(5, Some(b"key"), Some(b"value"))]);
        // Claim a huge batch length in the header and fix its checksum: decode must refuse.
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_frame(&bytes).is_err());
    }
}
