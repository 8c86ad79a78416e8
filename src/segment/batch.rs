//! Decoding a stored frame: the RecordBatch verified (checksums, lengths, dense offsets) and
//! its records walked without copying. Pure: bytes in, views out. The layout is in
//! `segment::format`, which re-exports these.

use super::compression::{Codec, DECOMPRESSED_BYTES_MAX, decompress};
use super::format::{
    BATCH_HEADER_BYTES, BATCH_MAGIC, DecodeError, FRAME_HEADER_BYTES, FrameHeader, HeaderRef,
    HeaderSlot, LOG_APPEND_TIME_BIT, RECORD_BYTES_MIN, fail,
};

/// A cursor over bytes read from disk or the wire; every read checks bounds.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    /// A zigzag varint of at most `max_bytes` bytes. Lengths, deltas and counts of records
    /// mostly take one or two bytes: those are read inline, the rest by the loop.
    #[inline]
    pub(super) fn varlong(&mut self, max_bytes: usize) -> Result<i64, DecodeError> {
        let zigzag = |z: u64| ((z >> 1) as i64) ^ -((z & 1) as i64);
        if let Some(&b0) = self.bytes.get(self.pos) {
            if b0 < 0x80 {
                self.pos += 1;
                return Ok(zigzag(u64::from(b0)));
            }
            if let Some(&b1) = self.bytes.get(self.pos + 1)
                && b1 < 0x80
            {
                self.pos += 2;
                return Ok(zigzag(u64::from(b0 & 0x7f) | (u64::from(b1) << 7)));
            }
        }
        self.varlong_loop(max_bytes)
    }

    fn varlong_loop(&mut self, max_bytes: usize) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for i in 0..max_bytes {
            let Some(&b) = self.bytes.get(self.pos) else {
                return fail("varint cut short");
            };
            self.pos += 1;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        fail("varint too long")
    }

    #[inline]
    fn varint(&mut self) -> Result<i32, DecodeError> {
        let v = self.varlong(5)?;
        i32::try_from(v).or_else(|_| fail("varint out of range"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return fail(format!(
                "field of {n} bytes runs past the end of its record"
            ));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A length-prefixed byte string; length -1 is null.
    #[inline]
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            n if n < 0 => fail(format!("negative length {n}")),
            n => Ok(Some(self.take(n as usize)?)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records.

/// A verified RecordBatch borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// Offset of the first record.
    pub base_offset: u64,
    /// `lastOffsetDelta`: the last record's offset is `base_offset + last_offset_delta`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Number of records.
    pub record_count: u32,
    /// How the records are compressed (as the producer sent them; floodgate stores them so).
    pub codec: Codec,
    /// Whether its timestamps are the time the log appended it (Kafka's LogAppendTime): every
    /// record's timestamp is then `max_timestamp`.
    pub log_append_time: bool,
    /// The records' bytes, compressed with `codec`.
    records: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Decodes and verifies a whole RecordBatch v2 (`bytes` is exactly the batch). Checks the
    /// length field, the magic, the CRC-32C and the compression codec; the records, compressed
    /// or not, are checked by [`BatchView::check_records`].
    pub fn decode(bytes: &'a [u8]) -> Result<BatchView<'a>, DecodeError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return fail(format!(
                "record batch of {} bytes is too short",
                bytes.len()
            ));
        }
        let be_i64 = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let be_i32 = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let batch_length = be_i32(8);
        if batch_length < 0 || batch_length as usize + 12 != bytes.len() {
            return fail(format!(
                "batchLength {batch_length} does not match the frame's {} bytes",
                bytes.len()
            ));
        }
        if bytes[16] as i8 != BATCH_MAGIC {
            return fail(format!(
                "record batch magic {} (only 2 is supported)",
                bytes[16]
            ));
        }
        let crc_stored = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
        let crc = crate::segment::crc::crc32c(&bytes[21..]);
        if crc != crc_stored {
            return fail(format!(
                "record batch checksum mismatch (stored {crc_stored:#010x}, computed {crc:#010x})"
            ));
        }
        let attributes = i16::from_be_bytes(bytes[21..23].try_into().unwrap());
        let codec = Codec::of(attributes)?;
        let base_offset = be_i64(0);
        let last_offset_delta = be_i32(23);
        let record_count = be_i32(57);
        if base_offset < 0 {
            return fail(format!("negative base offset {base_offset}"));
        }
        let records = &bytes[BATCH_HEADER_BYTES..];
        // No records: a gap (`format::encode_gap_frame`), offsets a repair cut off.
        let gap = record_count == 0 && records.is_empty() && last_offset_delta >= 0;
        // Compressed records take fewer bytes than they hold, but no more than the limit.
        let room = match codec {
            Codec::None => records.len(),
            _ => DECOMPRESSED_BYTES_MAX,
        };
        if !gap && (record_count < 1 || record_count as usize > room / RECORD_BYTES_MIN) {
            return fail(format!(
                "record count {record_count} impossible for the batch length"
            ));
        }
        // floodgate's batches are dense (it never compacts): a lastOffsetDelta past the last
        // record would name offsets that hold nothing. Found by the recovery fuzz target: a
        // batch with valid checksums and lastOffsetDelta 1 over one record left a partition's
        // next offset one past its records.
        if !gap && last_offset_delta != record_count - 1 {
            return fail(format!(
                "lastOffsetDelta {last_offset_delta} is not record count {record_count} - 1"
            ));
        }
        Ok(BatchView {
            base_offset: base_offset as u64,
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: be_i64(27),
            max_timestamp: be_i64(35),
            record_count: record_count as u32,
            codec,
            log_append_time: attributes & LOG_APPEND_TIME_BIT != 0,
            records,
        })
    }

    /// The offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// The records, decoded lazily; each item is checked against the batch bounds. A
    /// compressed batch's records are walked with [`BatchView::records_in`] over
    /// [`BatchView::decompressed`]: here its first item is an error saying so.
    pub fn records(&self) -> RecordIter<'a> {
        let mut it = self.records_in(self.records);
        if self.codec != Codec::None {
            it.compressed = Some(self.codec);
        }
        it
    }

    /// The records' bytes decompressed, or `None` when they are not compressed.
    pub fn decompressed(&self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.codec {
            Codec::None => Ok(None),
            codec => decompress(codec, self.records).map(Some),
        }
    }

    /// The records, decoded lazily from `bytes`: the batch's own records, or what its
    /// compressed records decompress to.
    pub fn records_in<'b>(&self, bytes: &'b [u8]) -> RecordIter<'b> {
        RecordIter {
            cursor: Cursor { bytes, pos: 0 },
            left: self.record_count,
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            append_time: self.log_append_time.then_some(self.max_timestamp),
            compressed: None,
        }
    }

    /// Decodes every record (decompressing them first if they are compressed), returning the
    /// first error; used to verify a batch whole.
    pub fn check_records(&self) -> Result<(), DecodeError> {
        let decompressed = self.decompressed()?;
        let mut it = self.records_in(decompressed.as_deref().unwrap_or(self.records));
        for (i, r) in (&mut it).enumerate() {
            let delta = r?.offset - self.base_offset;
            if delta != i as u64 {
                return fail(format!("record {i} has offset delta {delta}"));
            }
        }
        if it.cursor.pos != it.cursor.bytes.len() {
            return fail("bytes left over after the last record");
        }
        Ok(())
    }
}

/// A record borrowed from a verified batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its value, if any.
    pub value: Option<&'a [u8]>,
    /// Its headers, as (UTF-8 key, value) byte slices; decode with [`RecordRef::headers`].
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordRef<'a> {
    /// The record's headers.
    pub fn headers(&self) -> impl Iterator<Item = Result<HeaderRef<'a>, DecodeError>> + 'a {
        let mut cursor = Cursor {
            bytes: self.headers,
            pos: 0,
        };
        (0..self.header_count).map(move |_| {
            let key_len = cursor.varint()?;
            if key_len < 0 {
                return fail("null header key");
            }
            let key = std::str::from_utf8(cursor.take(key_len as usize)?)
                .or_else(|_| fail("header key is not UTF-8"))?;
            let value = cursor.nullable_bytes()?;
            Ok((key, value))
        })
    }
}

/// Iterator over the records of a [`BatchView`].
pub struct RecordIter<'a> {
    cursor: Cursor<'a>,
    left: u32,
    base_offset: u64,
    base_timestamp: i64,
    /// Every record's timestamp, in a batch stamped with the log's append time.
    append_time: Option<i64>,
    /// Set when walking a compressed batch's bytes as they are: the first item says so.
    compressed: Option<Codec>,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        if let Some(codec) = self.compressed {
            self.left = 0;
            let why = format!("{} records: decompress them first", codec.name());
            return Some(Err(DecodeError(why)));
        }
        self.left -= 1;
        let r = self.next_record();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

impl<'a> RecordIter<'a> {
    fn next_record(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let len = self.cursor.varint()?;
        if len < 0 {
            return fail(format!("negative record length {len}"));
        }
        let body = self.cursor.take(len as usize)?;
        let mut c = Cursor {
            bytes: body,
            pos: 0,
        };
        let _attributes = c.take(1)?;
        let timestamp_delta = c.varlong(10)?;
        let offset_delta = c.varint()?;
        if offset_delta < 0 {
            return fail(format!("negative offset delta {offset_delta}"));
        }
        let key = c.nullable_bytes()?;
        let value = c.nullable_bytes()?;
        let header_count = c.varint()?;
        if header_count < 0 {
            return fail(format!("negative header count {header_count}"));
        }
        let headers = &body[c.pos..];
        // Walk the headers once so a record is only handed out whole and valid.
        let record = RecordRef {
            offset: self.base_offset + offset_delta as u64,
            timestamp: (self.append_time)
                .unwrap_or(self.base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
            headers,
            header_count: header_count as u32,
        };
        let mut hc = Cursor {
            bytes: headers,
            pos: 0,
        };
        for _ in 0..header_count {
            let key_len = hc.varint()?;
            if key_len < 0 {
                return fail("null header key");
            }
            hc.take(key_len as usize)?;
            hc.nullable_bytes()?;
        }
        if hc.pos != headers.len() {
            return fail("bytes left over after a record's headers");
        }
        Ok(record)
    }
}

/// An idempotent producer's marks on a RecordBatch v2: its producer id and epoch, and the
/// sequences of its first and last record (sequences wrap from `i32::MAX` to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    /// The producer id (never negative here).
    pub id: i64,
    /// The producer's epoch.
    pub epoch: i16,
    /// The first record's sequence.
    pub first_sequence: i32,
    /// The last record's sequence.
    pub last_sequence: i32,
}

/// The producer marks of `batch` (a RecordBatch v2 of at least its 61-byte header), if it is an
/// idempotent producer's (a producer id of 0 or more).
pub fn batch_producer(batch: &[u8]) -> Option<BatchProducer> {
    let at = |from: usize, n: usize| batch.get(from..from + n);
    let id = i64::from_be_bytes(at(43, 8)?.try_into().ok()?);
    if id < 0 {
        return None;
    }
    let epoch = i16::from_be_bytes(at(51, 2)?.try_into().ok()?);
    let first = i32::from_be_bytes(at(53, 4)?.try_into().ok()?);
    let delta = i32::from_be_bytes(at(23, 4)?.try_into().ok()?);
    let last = ((i64::from(first) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32;
    Some(BatchProducer {
        id,
        epoch,
        first_sequence: first,
        last_sequence: last,
    })
}

/// Decodes the frame at the start of `bytes`: header, then the whole batch, verifying both
/// checksums and that the two copies of the base offset agree. `Ok(None)` is a zero header.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<(FrameHeader, BatchView<'_>)>, DecodeError> {
    let header = match FrameHeader::decode(bytes)? {
        HeaderSlot::Zero => return Ok(None),
        HeaderSlot::Frame(h) => h,
    };
    let end = FRAME_HEADER_BYTES + header.batch_bytes as usize;
    let Some(batch_bytes) = bytes.get(FRAME_HEADER_BYTES..end) else {
        return fail(format!(
            "frame of {} bytes runs past the end of the data",
            header.frame_bytes()
        ));
    };
    let batch = BatchView::decode(batch_bytes)?;
    if batch.base_offset != header.base_offset {
        return fail(format!(
            "base offset {} in the batch differs from {} in the frame header",
            batch.base_offset, header.base_offset
        ));
    }
    Ok(Some((header, batch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's zigzag varint of `v`.
    fn encode(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// Varints of every length read back, inline (one and two bytes) or by the loop, at the
    /// end of their bytes or before more; cut short, too long, or out of an int's range, they
    /// are errors.
    #[test]
    fn varints_of_every_length_read_back_and_bad_ones_are_refused() {
        let values = [
            0,
            -1,
            1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            1 << 20,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ];
        for v in values {
            let bytes = encode(v);
            for trailing in [&[][..], &[0x7f, 0x01][..]] {
                let mut b = bytes.clone();
                b.extend_from_slice(trailing);
                let mut c = Cursor { bytes: &b, pos: 0 };
                assert_eq!(c.varlong(10).unwrap(), v, "{v} before {trailing:?}");
                assert_eq!(c.pos, bytes.len());
                let mut c = Cursor { bytes: &b, pos: 0 };
                let as_int = i32::try_from(v).ok().filter(|_| bytes.len() <= 5);
                assert_eq!(c.varint().ok(), as_int, "{v} as an int");
            }
            // Every cut of it is an error, never a value.
            for cut in 0..bytes.len() {
                let mut c = Cursor {
                    bytes: &bytes[..cut],
                    pos: 0,
                };
                assert!(c.varlong(10).is_err(), "{v} cut to {cut} bytes");
            }
        }
        // Longer than its type allows.
        let mut c = Cursor {
            bytes: &[0x80; 11],
            pos: 0,
        };
        assert!(c.varlong(10).is_err());
        let mut c = Cursor {
            bytes: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            pos: 0,
        };
        assert!(c.varint().is_err());
    }
}
