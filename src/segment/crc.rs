//! CRC-32C (Castagnoli) of short inputs.
//!
//! Every frame has two checksums: its 28-byte header's and its record batch's. With 10,000
//! partitions most batches hold one 100-byte record, so the writer checksums ~28 and ~150
//! bytes per record, and the `crc32c` crate's per-call work (an alignment prologue and
//! epilogue a byte at a time, the three-way split's setup) dominates. Straight 8-byte steps
//! with the SSE 4.2 instruction and a 4/2/1-byte tail are faster below 512 bytes
//! (`cargo bench --bench format -- crc32c-short`; figures in docs/TUNING.md); for longer inputs
//! the crate's parallel streams win, so from 512 bytes on inputs go to it.

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

/// The CRC-32C of `words` (each as its 8 little-endian bytes) followed by `rest`: what
/// `crc32c` gives for those bytes laid out in memory. Encoders that have just computed a
/// header's fields pass them as words, so the checksum does not read back bytes stored a moment
/// ago a few at a time (an 8-byte load over several smaller stores waits for them to retire: a
/// one-record frame took 45 ns to encode, most of it such waits).
#[inline]
pub(crate) fn crc32c_words(words: &[u64], rest: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if rest.len() < SHORT_BYTES && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked just above).
        return unsafe { crc32c_words_sse42(words, rest) };
    }
    let mut crc = 0;
    for w in words {
        crc = crc32c::crc32c_append(crc, &w.to_le_bytes());
    }
    crc32c::crc32c_append(crc, rest)
}

/// [`crc32c_words`] of three words and four bytes (a frame header's checksummed bytes), with
/// no loops: the general version's slice handling is a cost paid per record with many
/// partitions.
#[inline]
pub(crate) fn crc32c_3_words_u32(words: [u64; 3], rest: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked just above).
        return unsafe { crc32c_3_words_u32_sse42(words, rest) };
    }
    crc32c_words(&words, &rest.to_le_bytes())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_3_words_u32_sse42(words: [u64; 3], rest: u32) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let mut crc = u64::from(u32::MAX);
    for w in words {
        crc = _mm_crc32_u64(crc, w);
    }
    !_mm_crc32_u32(crc as u32, rest)
}

/// The CRC-32C of each of three inputs, as [`crc32c()`] gives them. The CPU's CRC instruction
/// takes three cycles before its result can feed the next step but accepts a new one every
/// cycle, so three independent short inputs checksummed in step cost about as much as one.
#[inline]
pub(crate) fn crc32c_3(inputs: [&[u8]; 3]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    if inputs.iter().all(|b| b.len() < SHORT_BYTES) && std::arch::is_x86_feature_detected!("sse4.2")
    {
        // SAFETY: the CPU has SSE 4.2 (checked just above).
        return unsafe { crc32c_3_sse42(inputs) };
    }
    inputs.map(crc32c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_3_sse42(inputs: [&[u8]; 3]) -> [u32; 3] {
    use std::arch::x86_64::_mm_crc32_u64;
    let [a, b, c] = inputs;
    let (mut x, mut y, mut z) = (
        u64::from(u32::MAX),
        u64::from(u32::MAX),
        u64::from(u32::MAX),
    );
    // Zipped exact chunks: the words common to all three, without a bounds check per word and
    // input.
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
    let mut done = 0;
    for ((wa, wb), wc) in a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .zip(c.chunks_exact(8))
    {
        x = _mm_crc32_u64(x, word(wa));
        y = _mm_crc32_u64(y, word(wb));
        z = _mm_crc32_u64(z, word(wc));
        done += 8;
    }
    [
        crc32c_sse42_from(x as u32, &a[done..]),
        crc32c_sse42_from(y as u32, &b[done..]),
        crc32c_sse42_from(z as u32, &c[done..]),
    ]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_words_sse42(words: &[u64], rest: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    let mut crc = u64::from(u32::MAX);
    for &w in words {
        crc = _mm_crc32_u64(crc, w);
    }
    crc32c_sse42_from(crc as u32, rest)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(bytes: &[u8]) -> u32 {
    crc32c_sse42_from(u32::MAX, bytes)
}

/// Continues the (not yet inverted) CRC `state` over `bytes` and inverts it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
fn crc32c_sse42_from(state: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};
    let mut words = bytes.chunks_exact(8);
    let mut crc = u64::from(state);
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

    #[test]
    fn three_at_once_agree_with_one_at_a_time() {
        let data: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect();
        for (la, lb, lc) in [
            (0, 0, 0),
            (150, 150, 150),
            (7, 300, 149),
            (511, 0, 64),
            (600, 3, 9),
        ] {
            let inputs = [
                &data[1..1 + la],
                &data[700..700 + lb],
                &data[1300..1300 + lc],
            ];
            assert_eq!(super::crc32c_3(inputs), inputs.map(crc32c::crc32c));
        }
    }

    #[test]
    fn words_then_bytes_agree_with_the_bytes_laid_out() {
        let data: Vec<u8> = (0..1200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for n_words in 0..6 {
            let words: Vec<u64> = data
                .chunks_exact(8)
                .take(n_words)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                .collect();
            for len in [0, 1, 3, 7, 8, 13, 150, 511, 512, 700] {
                let rest = &data[100..100 + len];
                let mut laid_out = data[..8 * n_words].to_vec();
                laid_out.extend_from_slice(rest);
                assert_eq!(
                    super::crc32c_words(&words, rest),
                    crc32c::crc32c(&laid_out),
                    "{n_words} words + {len}"
                );
            }
        }
    }

    #[test]
    fn header_words_agree_with_the_bytes_laid_out() {
        for seed in 0..200u64 {
            let words = [
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                !seed << 7,
                seed ^ 0xDEAD_BEEF_0000_0001,
            ];
            let rest = (seed as u32).wrapping_mul(2_654_435_761);
            let mut laid_out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            laid_out.extend_from_slice(&rest.to_le_bytes());
            assert_eq!(
                super::crc32c_3_words_u32(words, rest),
                crc32c::crc32c(&laid_out)
            );
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_crate(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            prop_assert_eq!(super::crc32c(&bytes), crc32c::crc32c(&bytes));
        }
    }
}
