//! The records of a compressed RecordBatch, decompressed for the library's readers. Kafka
//! clients compress a batch's records (after the 61-byte header) with gzip, snappy (raw, or in
//! the xerial framing the Java client writes), LZ4 (frame format) or zstd; floodgate stores such
//! batches as they came and decompresses only to hand records to Rust code or to check them.
//! Pure Rust decoders; every output is bounded by [`DECOMPRESSED_BYTES_MAX`]. No I/O.

use std::io::Read;

use crate::segment::format::{DecodeError, fail};

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
