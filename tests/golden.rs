//! The on-disk format is pinned: the worked example of docs/FORMAT.md, encoded with the
//! public format functions, must be these exact bytes and must decode.

use floodgate::segment::decode_frame;
use floodgate::segment::format::{
    BATCH_HEADER_BYTES, BatchMeta, DURABLE_BEHIND_UNKNOWN, FRAME_HEADER_BYTES, FrameHeader,
    encode_record_tail, record_bytes, seal_batch, write_record,
};

/// The worked example of docs/FORMAT.md: topic id 1, partition 0, offset 42, one record
/// with key "k", value "hello", header ("h", "v"), timestamp 1700000000000 ms, written when
/// its segment was durable through 3 blocks before it.
fn example_frame() -> Vec<u8> {
    let mut tail = Vec::new();
    encode_record_tail(&mut tail, Some(b"k"), Some(b"hello"), &[("h", Some(b"v"))]);
    let mut batch = vec![0u8; BATCH_HEADER_BYTES + record_bytes(tail.len(), 0, 0)];
    write_record(&mut batch[BATCH_HEADER_BYTES..], &tail, 0, 0);
    let meta = BatchMeta {
        base_offset: 42,
        record_count: 1,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_000,
    };
    seal_batch(&mut batch, &meta);
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    FrameHeader {
        topic_id: 1,
        partition: 0,
        base_offset: 42,
        batch_bytes: batch.len() as u32,
        durable_behind_blocks: 3,
    }
    .encode((&mut frame[..]).try_into().unwrap());
    frame.extend_from_slice(&batch);
    frame
}

/// The bytes of docs/FORMAT.md's example. If this test fails, the on-disk format changed:
/// bump FRAME_VERSION and keep a decoder for the old one instead of editing these bytes.
const EXAMPLE_HEX: &str = "\
    4647474c0200030001000000000000002a000000000000004e0000003464847a\
    000000000000002a00000042ffffffff02c622acfa0000000000000000018b\
    cfe568000000018bcfe56800ffffffffffffffffffffffffffff00000001\
    20000000026b0a68656c6c6f0202680276";

/// The same frame as version 1 wrote it (no durable claim): logs written by older builds
/// must still open.
const EXAMPLE_V1_HEX: &str = "\
    4647474c0100000001000000000000002a000000000000004e0000008b668655\
    000000000000002a00000042ffffffff02c622acfa0000000000000000018b\
    cfe568000000018bcfe56800ffffffffffffffffffffffffffff00000001\
    20000000026b0a68656c6c6f0202680276";

fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_documented_example_still_decodes() {
    let hex: String = example_frame().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, EXAMPLE_HEX);
    let bytes = bytes_of(EXAMPLE_HEX);
    let (h, batch) = decode_frame(&bytes).unwrap().unwrap();
    assert_eq!((h.topic_id, h.partition, h.base_offset), (1, 0, 42));
    assert_eq!(h.durable_behind_blocks, 3);
    assert_eq!(h.durable_through(5 * 4096 + 100), Some(2 * 4096 + 100));
    let r = batch.records().next().unwrap().unwrap();
    assert_eq!((r.offset, r.timestamp), (42, 1_700_000_000_000));
    assert_eq!((r.key, r.value), (Some(&b"k"[..]), Some(&b"hello"[..])));
}

#[test]
fn version_1_frames_still_decode_without_a_durable_claim() {
    let bytes = bytes_of(EXAMPLE_V1_HEX);
    let (h, batch) = decode_frame(&bytes).unwrap().unwrap();
    assert_eq!((h.topic_id, h.partition, h.base_offset), (1, 0, 42));
    assert_eq!(h.durable_behind_blocks, DURABLE_BEHIND_UNKNOWN);
    assert_eq!(h.durable_through(1 << 20), None);
    let r = batch.records().next().unwrap().unwrap();
    assert_eq!((r.key, r.value), (Some(&b"k"[..]), Some(&b"hello"[..])));
}
