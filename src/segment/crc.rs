//! CRC-32C (Castagnoli) of short inputs.
//!
//! Every frame has two checksums: its 28-byte header's and its record batch's. With 10,000
//! partitions most batches hold one 100-byte record, so the writer checksums ~28 and ~150
//! bytes per record, and the `crc32c` crate's per-call work (an alignment prologue and
//! epilogue a byte at a time, the three-way split's setup) dominates. Straight 8-byte steps
//! with the SSE 4.2 instruction and a 4/2/1-byte tail, measured with criterion
//! (`benches/format.rs`, group `crc32c-short`, unaligned input): 28 bytes 3.6 ns against the
//! crate's 8.4, 150 bytes 9.3 against 15.2, 300 bytes 19.3 against 28.1, 500 bytes 39.4
//! against 48.5. For long inputs the crate's
//! parallel streams win (about 20 GB/s at 4 KiB), so from 512 bytes on inputs go to it.

/// Inputs shorter than this take the straight path.
const SHORT_BYTES: usize = 512;

/// The CRC-32C of `bytes`, as `crc32c::crc32c` computes it.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() < SHORT_BYTES && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked just above).
        return unsafe { crc32c_sse42(bytes) };
    }
    crc32c::crc32c(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};
    let mut words = bytes.chunks_exact(8);
    let mut crc = u64::from(u32::MAX);
    for w in &mut words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut crc = crc as u32;
    let mut rest = words.remainder();
    if let Some((w, tail)) = rest.split_first_chunk::<4>() {
        crc = _mm_crc32_u32(crc, u32::from_le_bytes(*w));
        rest = tail;
    }
    if let Some((w, tail)) = rest.split_first_chunk::<2>() {
        crc = _mm_crc32_u16(crc, u16::from_le_bytes(*w));
        rest = tail;
    }
    if let Some(&b) = rest.first() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn agrees_with_the_crate_at_every_short_length_and_alignment() {
        let data: Vec<u8> = (0..1200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..=600 {
                let bytes = &data[start..start + len];
                assert_eq!(super::crc32c(bytes), crc32c::crc32c(bytes), "{start}+{len}");
            }
        }
        // The check value of the Castagnoli polynomial.
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }

    proptest! {
        #[test]
        fn agrees_with_the_crate(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            prop_assert_eq!(super::crc32c(&bytes), crc32c::crc32c(&bytes));
        }
    }
}
