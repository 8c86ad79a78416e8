//! Bounded property tests of everything that decodes bytes from disk (the fuzz targets'
//! properties, run in CI): arbitrary input never panics; a frame is never accepted with a
//! damaged checksum; recovery over an arbitrary segment never panics and never hands out a
//! record that does not decode.

mod common;
#[path = "../fuzz/src/props.rs"]
mod fuzz_props;

use floodgate::Offset;
use floodgate::segment::decode_frame;
use floodgate::{IoBackend, Log};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The `frame` fuzz target's property: no panic, nothing accepted with a bad checksum, and
    /// (checksums made right) the records behind them decode or fail cleanly.
    #[test]
    fn frame_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_props::frame(&bytes);
    }

    #[test]
    fn index_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzz_props::index(&bytes);
    }
}

/// The fuzz targets' seeds (`fuzz/corpus`) and saved crashers (`fuzz/regressions`), each
/// through its target's property; the recovery seeds are logs recovery accepts.
#[test]
fn fuzz_seeds_and_regressions_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for target in ["frame", "index", "meta", "recovery"] {
        for folder in ["corpus", "regressions"] {
            let Ok(files) = std::fs::read_dir(root.join(folder).join(target)) else {
                continue;
            };
            for f in files {
                let path = f.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                match target {
                    "frame" => fuzz_props::frame(&data),
                    "index" => fuzz_props::index(&data),
                    "meta" => fuzz_props::meta(&data),
                    _ => {
                        let opened = fuzz_props::recovery(&data);
                        if folder == "corpus" {
                            assert_eq!(opened, 4, "seed {path:?} opens, as it is and repaired");
                        }
                    }
                }
                ran += 1;
            }
        }
    }
    assert!(ran >= 5, "the seeds are there ({ran})");
}

/// A valid frame (from the format's own encoder, via a real log) with bytes replaced at random
/// positions is never accepted unless the change left the checksummed bytes identical.
#[test]
fn damaged_frames_are_never_accepted() {
    use floodgate::{Record, TopicConfig};
    let dir = common::test_dir("decoders");
    {
        let log = Log::open(common::small_config(dir.path(), IoBackend::Portable)).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut p = log.producer();
        let acks: Vec<_> = (0..5u32)
            .map(|i| {
                p.send(
                    "t",
                    Record::new(&i.to_le_bytes()).key(b"k").header("h", None),
                )
                .unwrap()
            })
            .collect();
        acks.into_iter().for_each(|a| {
            a.wait().unwrap();
        });
    }
    let image = std::fs::read(&common::segments(dir.path(), 0)[0]).unwrap();
    let (h, _) = decode_frame(&image).unwrap().unwrap();
    let frame = &image[..h.frame_bytes() as usize];
    proptest!(ProptestConfig::with_cases(3000), |(at in 0..frame.len(), byte in any::<u8>())| {
        let mut damaged = frame.to_vec();
        damaged[at] = byte;
        // The leader epoch (batch bytes 12..16) is the one field under no checksum.
        let epoch = (32 + 12..32 + 16).contains(&at);
        if damaged[at] != frame[at] && !epoch {
            prop_assert!(decode_frame(&damaged).is_err(), "byte {} = {:#x} accepted", at, byte);
        }
    });
}

/// Recovery over segments full of arbitrary bytes (and valid frames followed by garbage): open
/// either fails with an error or succeeds, and everything it then serves decodes.
#[test]
fn recovery_over_arbitrary_segments_never_panics() {
    proptest!(ProptestConfig::with_cases(40), |(garbage in proptest::collection::vec(any::<u8>(), 1..5000), at in 0usize..200_000)| {
        let dir = common::test_dir("arbitrary");
        let config = || common::small_config(dir.path(), IoBackend::Portable).segment_prezero(false);
        {
            let log = Log::open(config()).unwrap();
            log.create_topic("t", floodgate::TopicConfig::new(2)).unwrap();
            let mut p = log.producer();
            for i in 0..50u32 {
                p.send("t", floodgate::Record::new(&i.to_le_bytes())).unwrap().wait().unwrap();
            }
        }
        let seg = common::segments(dir.path(), 0)[0].clone();
        let mut image = std::fs::read(&seg).unwrap();
        let at = at % (image.len() - garbage.len());
        image[at..at + garbage.len()].copy_from_slice(&garbage);
        std::fs::write(&seg, &image).unwrap();
        for repair in [false, true] {
            if let Ok(log) = Log::open(config().repair_truncate_damaged(repair)) {
                for part in 0..2 {
                    let (_, end) = log.offsets("t", part).unwrap();
                    let mut offset = Offset(0);
                    while offset < end {
                        match log.read("t", part, offset, 1 << 20) {
                            Ok(records) if !records.is_empty() => {
                                offset = records.last().unwrap().offset.next()
                            }
                            Ok(_) => break,
                            Err(_) => break, // damage in a part the scan trusted: reported, not served
                        }
                    }
                }
            }
        }
    });
}
