//! The records of a compressed RecordBatch, decompressed for the library's readers. Kafka
//! clients compress a batch's records (after the 61-byte header) with gzip, snappy (raw, or in
//! the xerial framing the Java client writes), LZ4 (frame format) or zstd; floodgate stores such
//! batches as they came and decompresses only to hand records to Rust code or to check them.
//! A topic with a compression of its own (Kafka's `compression.type` on a topic) has batches
//! in other codecs compressed again ([`recompress_batch`]), as Kafka's broker does. Pure Rust
//! codecs; every output is bounded by [`DECOMPRESSED_BYTES_MAX`]. No I/O.

use std::io::{Read, Write};

use crate::segment::format::{BATCH_HEADER_BYTES, DecodeError, fail};

/// The most bytes a batch's records may decompress to. Bounds the memory a damaged or hostile
/// batch can make a reader allocate.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// A batch's compression codec (the low 3 bits of its attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not compressed.
    None,
    /// gzip (DEFLATE in the gzip format).
    Gzip,
    /// snappy: one raw block, or xerial's framing of blocks.
    Snappy,
    /// LZ4, frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec of `attributes`, or an error for the values Kafka does not define.
    pub fn of(attributes: i16) -> Result<Codec, DecodeError> {
        Ok(match attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            c => return fail(format!("unknown compression codec {c}")),
        })
    }

    /// The codec Kafka's `compression.type` names (`uncompressed` or `none` for
    /// [`Codec::None`]), if it names one (`producer` names none: batches stay as sent).
    pub fn from_name(name: &str) -> Option<Codec> {
        Some(match name {
            "none" | "uncompressed" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => return None,
        })
    }

    /// Its attribute bits.
    fn bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// Its name, as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Decompresses `data` (a batch's records as compressed with `codec`).
pub fn decompress(codec: Codec, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let failed = |e: &dyn std::fmt::Display| -> DecodeError {
        DecodeError(format!("{} records do not decompress: {e}", codec.name()))
    };
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => read_bounded(flate2::read::GzDecoder::new(data), codec),
        Codec::Snappy => snappy(data).map_err(|e| failed(&e)),
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), codec),
        Codec::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| failed(&e))?;
            read_bounded(decoder, codec)
        }
    }
}

/// Compresses `data` (a batch's records) with `codec`, as Kafka's clients do: gzip at the
/// default level, snappy in xerial's framing of 32 KiB blocks (what the Java client reads and
/// writes), LZ4 frames of independent 64 KiB blocks (what Kafka's Java LZ4 stream reads), zstd
/// at its fastest level.
pub fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::None => data.to_vec(),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("writes to memory");
            e.finish().expect("writes to memory")
        }
        Codec::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&1u32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK_BYTES) {
                let packed = encoder
                    .compress_vec(block)
                    .expect("a block within snappy's limit");
                out.extend_from_slice(&(packed.len() as u32).to_be_bytes());
                out.extend_from_slice(&packed);
            }
            out
        }
        Codec::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(data).expect("writes to memory");
            e.finish().expect("writes to memory")
        }
        Codec::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// `batch` (a RecordBatch v2, already checked) with its records compressed with `codec`
/// instead of its own, its attributes, length and CRC-32C set to match; its other fields
/// (offsets, timestamps, producer id, epoch and sequence, record count) are unchanged.
pub fn recompress_batch(batch: &[u8], codec: Codec) -> Result<Vec<u8>, DecodeError> {
    let header = batch
        .get(..BATCH_HEADER_BYTES)
        .ok_or_else(|| DecodeError("batch shorter than its header".into()))?;
    let attributes = i16::from_be_bytes([header[21], header[22]]);
    let records = decompress(Codec::of(attributes)?, &batch[BATCH_HEADER_BYTES..])?;
    let packed = compress(codec, &records);
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + packed.len());
    out.extend_from_slice(header);
    out.extend_from_slice(&packed);
    let length = u32::try_from(out.len() - 12)
        .map_err(|_| DecodeError("recompressed batch too large".into()))?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = (attributes & !0x07) | codec.bits();
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Bytes of records per block of xerial's snappy framing (the Java client's block size).
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

/// Reads `r` to its end, failing past [`DECOMPRESSED_BYTES_MAX`].
fn read_bounded(r: impl Read, codec: Codec) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit = DECOMPRESSED_BYTES_MAX as u64 + 1;
    if let Err(e) = r.take(limit).read_to_end(&mut out) {
        return fail(format!("{} records do not decompress: {e}", codec.name()));
    }
    if out.len() > DECOMPRESSED_BYTES_MAX {
        return fail(format!(
            "{} records decompress past {DECOMPRESSED_BYTES_MAX} bytes",
            codec.name()
        ));
    }
    Ok(out)
}

/// The magic that starts xerial's snappy framing (the Java client's), then two 4-byte
/// versions, then blocks of a 4-byte big-endian length and a raw snappy block.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = 16;

fn snappy(data: &[u8]) -> Result<Vec<u8>, String> {
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let len = snap::raw::decompress_len(b).map_err(|e| e.to_string())?;
        if out.len() + len > DECOMPRESSED_BYTES_MAX {
            return Err(format!("past {DECOMPRESSED_BYTES_MAX} bytes"));
        }
        let at = out.len();
        out.resize(at + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(b, &mut out[at..])
            .map_err(|e| e.to_string())?;
        out.truncate(at + n);
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(&XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or("xerial header cut short")?;
    while !rest.is_empty() {
        let len = rest.get(..4).ok_or("xerial block length cut short")?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let b = rest.get(4..4 + len).ok_or("xerial block cut short")?;
        block(b, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec compresses what it decompresses, across block boundaries.
    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let packed = compress(codec, &data);
            if codec != Codec::None {
                assert!(packed.len() < data.len() / 2, "{codec:?}: {}", packed.len());
            }
            assert_eq!(decompress(codec, &packed).unwrap(), data, "{codec:?}");
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
        }
        assert_eq!(Codec::from_name("uncompressed"), Some(Codec::None));
        assert_eq!(Codec::from_name("producer"), None);
    }

    /// A client's batch compressed again in each codec, then from each to each: the Kafka
    /// protocol crate (another implementation of every codec) decodes it to the same records,
    /// its CRC checks, and its header fields other than the codec are as sent.
    #[test]
    fn a_recompressed_batch_holds_the_same_records() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
            TimestampType,
        };
        let records: Vec<Record> = (0..500)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 77,
                producer_epoch: 2,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: 10 + i as i32,
                timestamp: 1_700_000_000_000 + i,
                key: Some(format!("key-{i}").into()),
                value: Some(format!("value {i} {}", "x".repeat(i as usize % 300)).into()),
                headers: Default::default(),
            })
            .collect();
        let mut sent = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut sent, &records, &options).unwrap();
        let codecs = [
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
            Codec::None,
        ];
        for from in codecs {
            let first = recompress_batch(&sent, from).unwrap();
            for to in codecs {
                let again = recompress_batch(&first, to).unwrap();
                let view = crate::segment::BatchView::decode(&again).unwrap();
                assert_eq!(view.codec, to);
                view.check_records().unwrap();
                assert_eq!(again[23..61], sent[23..61], "{from:?} to {to:?}");
                let mut buf = bytes::Bytes::from(again);
                let decoded = RecordBatchDecoder::decode(&mut buf).unwrap();
                assert_eq!(decoded.records, records, "{from:?} to {to:?}");
            }
        }
    }

    #[test]
    fn garbage_and_cut_data_are_errors_for_every_codec() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            for data in [&b"\x00\x01\x02"[..], &[0xffu8; 64][..]] {
                assert!(decompress(codec, data).is_err(), "{codec:?} {data:?}");
            }
            // Nothing decompresses to nothing at most (the batch's record count then fails).
            assert!(
                decompress(codec, b"").map_or(true, |d| d.is_empty()),
                "{codec:?}"
            );
        }
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1]);
        assert!(decompress(Codec::Snappy, &xerial).is_err());
    }

    #[test]
    fn the_output_is_bounded() {
        // A snappy block claiming more than the limit is refused before it is allocated.
        let mut claim = Vec::new();
        let mut n = DECOMPRESSED_BYTES_MAX as u64 + 1;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        claim.extend_from_slice(&[0; 8]);
        let e = decompress(Codec::Snappy, &claim).unwrap_err();
        assert!(e.0.contains("past"), "{e:?}");
    }
}
