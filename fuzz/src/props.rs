//! The fuzz targets' properties, written once: the targets run them under AFL, and the main
//! crate's `tests/decoders.rs` includes this file to run every seed and saved crasher
//! (`corpus/`, `regressions/`) through them in CI.

use std::path::Path;

use floodgate::segment::decode_frame;
use floodgate::segment::format::{FRAME_HEADER_BYTES, FrameHeader};
use floodgate::{Config, IoBackend, Log, Record};

/// Rewrites the checksums of the frames laid end to end in `bytes` (as far as their headers'
/// lengths lead) so they match: the fuzzer's random bytes then reach the decoding behind the
/// checksums, which it would otherwise almost never get past.
pub fn fix_checksums(bytes: &mut [u8]) {
    let mut pos = 0;
    while pos + FRAME_HEADER_BYTES <= bytes.len() {
        let h = &mut bytes[pos..];
        let batch_bytes = u32::from_le_bytes(h[24..28].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        let Some(end) = (FRAME_HEADER_BYTES + batch_bytes).checked_add(pos) else {
            return;
        };
        if batch_bytes < 21 || end > bytes.len() {
            return;
        }
        let b = &mut bytes[pos + FRAME_HEADER_BYTES..end];
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// Frame and batch decoding: never a panic; a frame that decodes has both checksums right
/// (checked here with the crate, independently of the decoder), and its records walk cleanly.
/// Then the same bytes with their checksums made right, to reach the record decoding.
pub fn frame(data: &[u8]) {
    frame_checked(data);
    let mut fixed = data.to_vec();
    fix_checksums(&mut fixed);
    frame_checked(&fixed);
}

fn frame_checked(data: &[u8]) {
    let _ = FrameHeader::decode(data);
    let Ok(Some((header, batch))) = decode_frame(data) else {
        return;
    };
    let header_crc = u32::from_le_bytes(data[28..32].try_into().unwrap());
    assert_eq!(
        header_crc,
        crc32c::crc32c(&data[..28]),
        "header accepted with a bad CRC"
    );
    let end = header.frame_bytes() as usize;
    let b = &data[FRAME_HEADER_BYTES..end];
    let batch_crc = u32::from_be_bytes(b[17..21].try_into().unwrap());
    assert_eq!(
        batch_crc,
        crc32c::crc32c(&b[21..]),
        "batch accepted with a bad CRC"
    );
    if batch.check_records().is_ok() {
        for r in batch.records() {
            let r = r.expect("checked records decode");
            assert!(r.headers().count() <= b.len());
        }
    }
}

/// Index file decoding (whole file, and its directory from a file): never a panic.
pub fn index(data: &[u8]) {
    let _ = floodgate::inspect::SegmentIndex::decode(data, Path::new("fuzz.idx"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.idx");
    std::fs::write(&path, data).unwrap();
    let _ = floodgate::inspect::IndexDirectory::read(&path);
}

/// `meta.json` as found on open: an error or a log, never a panic.
pub fn meta(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.json"), data).unwrap();
    let _ = Log::open(config(dir.path()));
}

/// The topic layout the recovery corpus was written with: `meta.json` of a log with one topic
/// "load" of 3 partitions on 1 shard.
const RECOVERY_META: &str = r#"{"version":1,"shards":1,"commit_bytes_max":65536,"next_topic_id":2,
"topics":[{"name":"load","id":1,"partitions":3,"first_shard":0}]}"#;

/// Recovery over arbitrary segment bytes, with and without repair: open fails with an error or
/// succeeds; then every record it serves decodes, offsets are dense from each partition's
/// start, and a new record goes in at the end and reads back. Returns how many opens succeeded.
pub fn recovery(data: &[u8]) -> usize {
    let mut fixed = data.to_vec();
    fix_checksums(&mut fixed);
    recovery_of(data) + recovery_of(&fixed)
}

fn recovery_of(data: &[u8]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.json"), RECOVERY_META).unwrap();
    let shard = dir.path().join("shard-000");
    std::fs::create_dir(&shard).unwrap();
    std::fs::write(shard.join("00000000000000000000.seg"), data).unwrap();
    let mut opened = 0;
    for repair in [false, true] {
        let Ok(log) = Log::open(config(dir.path()).repair_truncate_damaged(repair)) else {
            continue;
        };
        for p in 0..3 {
            let (start, end) = log.offsets("load", p).unwrap();
            let mut offset = start;
            while offset < end {
                match log.read("load", p, offset, 1 << 20) {
                    Ok(records) if !records.is_empty() => {
                        for r in &records {
                            assert_eq!(r.offset, offset, "offsets dense");
                            offset += 1;
                        }
                    }
                    // Damage in a part the scan trusted: reported on read, not served.
                    Ok(_) | Err(_) => break,
                }
            }
        }
        let mut producer = log.producer();
        match producer.send("load", Record::new(b"after").partition(0)) {
            Ok(ack) => {
                if let Ok(at) = ack.wait() {
                    let back = log.read("load", 0, at.offset, 1 << 10).unwrap();
                    assert_eq!(back[0].value.as_deref(), Some(&b"after"[..]));
                }
            }
            Err(e) => panic!("send after a successful open: {e}"),
        }
        opened += 1;
    }
    opened
}

/// Small segments and commits, the portable backend (works on any file system, no O_DIRECT
/// alignment needed for odd-sized segment files), no zero-filling ahead.
fn config(dir: &Path) -> Config {
    Config::new(dir)
        .io_backend(IoBackend::Portable)
        .segment_bytes(256 << 10)
        .commit_bytes_max(64 << 10)
        .record_bytes_max(16 << 10)
        .ring_records(64)
        .segment_prezero(false)
        .pin_threads(false)
}
