//! Frame encode and decode, and the CRC-32C under them: the per-batch CPU cost of the write
//! path (writer framing a batch of producer-encoded records) and the read path (verifying and
//! walking a stored batch), and a client batch compressed again for a topic's own codec.
//! Throughput is in payload bytes.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use floodgate::Codec;
use floodgate::segment::compression::recompress_batch;
use floodgate::segment::decode_frame;
use floodgate::segment::format::{
    BATCH_HEADER_BYTES, BatchMeta, FRAME_HEADER_BYTES, FrameHeader, checksum_batches,
    encode_record_tail, frame_batch, record_bytes, seal_batch, write_record,
};
use std::hint::black_box;
use std::ops::Range;

/// Frames `count` records of `size`-byte values into `out` (cleared), as the writer does.
fn encode(tails: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    let total: usize = tails
        .iter()
        .enumerate()
        .map(|(i, t)| record_bytes(t.len(), i as i64, i as u32))
        .sum();
    out.resize(FRAME_HEADER_BYTES + BATCH_HEADER_BYTES + total, 0);
    let mut at = FRAME_HEADER_BYTES + BATCH_HEADER_BYTES;
    for (i, t) in tails.iter().enumerate() {
        at += write_record(&mut out[at..], t, i as i64, i as u32);
    }
    let meta = BatchMeta {
        base_offset: 1000,
        record_count: tails.len() as u32,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_000 + tails.len() as i64,
    };
    seal_batch(&mut out[FRAME_HEADER_BYTES..], &meta);
    let header = FrameHeader {
        topic_id: 1,
        partition: 0,
        base_offset: 1000,
        batch_bytes: (out.len() - FRAME_HEADER_BYTES) as u32,
        durable_behind_blocks: 1,
    };
    header.encode((&mut out[..FRAME_HEADER_BYTES]).try_into().unwrap());
}

/// Frames each record as its own batch, back to back in `out` (cleared): the writer's work at
/// 10,000 partitions, where a commit holds one record per partition. With `deferred`, the
/// batches are checksummed after all are framed (into its ranges), as the writer does;
/// without, each as it is framed.
fn encode_singles(
    tails: &[Vec<u8>],
    out: &mut Vec<u8>,
    mut deferred: Option<&mut Vec<Range<usize>>>,
) {
    out.clear();
    let total: usize = tails
        .iter()
        .map(|t| FRAME_HEADER_BYTES + BATCH_HEADER_BYTES + record_bytes(t.len(), 0, 0))
        .sum();
    out.resize(total, 0);
    if let Some(frames) = deferred.as_deref_mut() {
        frames.clear();
    }
    let mut at = 0;
    for (i, t) in tails.iter().enumerate() {
        let frame_at = at;
        at += FRAME_HEADER_BYTES + BATCH_HEADER_BYTES;
        at += write_record(&mut out[at..], t, 0, 0);
        let meta = BatchMeta {
            base_offset: 1000 + i as u64,
            record_count: 1,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000,
        };
        let batch = frame_at + FRAME_HEADER_BYTES..at;
        match deferred.as_deref_mut() {
            Some(frames) => {
                frame_batch(&mut out[batch.clone()], &meta);
                frames.push(batch);
            }
            None => seal_batch(&mut out[batch], &meta),
        }
        let header = FrameHeader {
            topic_id: 1,
            partition: i as u32,
            base_offset: 1000 + i as u64,
            batch_bytes: (at - frame_at - FRAME_HEADER_BYTES) as u32,
            durable_behind_blocks: 1,
        };
        header.encode(
            (&mut out[frame_at..frame_at + FRAME_HEADER_BYTES])
                .try_into()
                .unwrap(),
        );
    }
    if let Some(frames) = deferred {
        checksum_batches(out, frames);
    }
}

fn tails(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut t = Vec::new();
            encode_record_tail(&mut t, None, Some(&vec![i as u8; size]), &[]);
            t
        })
        .collect()
}

fn bench_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (count, size) in [(1000usize, 100usize), (16, 4096)] {
        let tails = tails(count, size);
        let mut frame = Vec::new();
        encode(&tails, &mut frame);
        let (_, batch) = decode_frame(&frame).unwrap().unwrap();
        batch.check_records().unwrap();
        assert_eq!(batch.record_count as usize, count);
        group.throughput(Throughput::Bytes((count * size) as u64));
        let id = format!("{count}x{size}B");
        group.bench_function(BenchmarkId::new("encode", &id), |b| {
            b.iter(|| encode(black_box(&tails), &mut frame))
        });
        group.bench_function(BenchmarkId::new("decode_verify", &id), |b| {
            b.iter(|| {
                let (_, batch) = decode_frame(black_box(&frame)).unwrap().unwrap();
                let mut n = 0;
                for r in batch.records() {
                    n += r.unwrap().value.unwrap().len();
                }
                n
            })
        });
    }
    // One record per batch (10,000 partitions): framing overhead and two checksums per record.
    let tails = tails(1000, 100);
    let mut frames = Vec::new();
    encode_singles(&tails, &mut frames, None);
    let mut at = 0;
    while at < frames.len() {
        let (header, batch) = decode_frame(&frames[at..]).unwrap().unwrap();
        batch.check_records().unwrap();
        assert_eq!(batch.record_count, 1);
        at += header.frame_bytes() as usize;
    }
    assert_eq!(at, frames.len());
    group.throughput(Throughput::Bytes(100 * 1000));
    group.bench_function(BenchmarkId::new("encode", "1000x1x100B"), |b| {
        b.iter(|| encode_singles(black_box(&tails), &mut frames, None))
    });
    let mut deferred = Vec::new();
    let mut ranges = Vec::new();
    encode_singles(&tails, &mut deferred, Some(&mut ranges));
    assert_eq!(deferred, frames);
    group.bench_function(
        BenchmarkId::new("encode_checksum_after", "1000x1x100B"),
        |b| b.iter(|| encode_singles(black_box(&tails), &mut deferred, Some(&mut ranges))),
    );
    group.finish();
}

fn bench_crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for size in [4096usize, 1 << 20] {
        let data = vec![0xA5u8; size];
        assert_eq!(crc32c::crc32c(&data), crc32c::crc32c(&data.clone()));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| crc32c::crc32c(black_box(&data)))
        });
    }
    group.finish();
}

/// The short-input CRC (frame headers, one-record batches) against the crate, same inputs.
fn bench_crc_short(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c-short");
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    for size in [28usize, 150, 300, 500] {
        // Unaligned, as a batch's checksummed bytes are (they start at byte 21).
        let bytes = &data[21..21 + size];
        assert_eq!(
            floodgate::segment::crc::crc32c(bytes),
            crc32c::crc32c(bytes)
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("floodgate", size), |b| {
            b.iter(|| floodgate::segment::crc::crc32c(black_box(bytes)))
        });
        group.bench_function(BenchmarkId::new("crate", size), |b| {
            b.iter(|| crc32c::crc32c(black_box(bytes)))
        });
    }
    group.finish();
}

/// A topic with a codec of its own compresses client batches again: the cost per batch of
/// 1,000 order-like records of about 100 bytes, sent uncompressed, in each codec (throughput
/// in the batch's bytes as sent).
fn bench_recompress(c: &mut Criterion) {
    let mut group = c.benchmark_group("recompress");
    let tails: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let value = format!(
                "{{\"order\":{},\"sku\":\"SKU-{:05}\",\"qty\":{},\"price\":{}.{:02},\"to\":\"DC-{}\"}}",
                1_000_000 + i,
                i * 7919 % 50_000,
                1 + i % 9,
                i * 31 % 500,
                i % 100,
                i % 17
            );
            let mut t = Vec::new();
            encode_record_tail(&mut t, Some(&i.to_be_bytes()), Some(value.as_bytes()), &[]);
            t
        })
        .collect();
    let batch = client_batch(&tails);
    group.throughput(Throughput::Bytes(batch.len() as u64));
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let packed = recompress_batch(&batch, codec).unwrap();
        println!(
            "{}: {} bytes as {}",
            codec.name(),
            batch.len(),
            packed.len()
        );
        group.bench_function(BenchmarkId::new("from_none", codec.name()), |b| {
            b.iter(|| recompress_batch(black_box(&batch), codec).unwrap())
        });
    }
    group.finish();
}

/// What the server checks of each client batch before it stores it
/// (`floodgate::producer::check_batch`: its length, magic and CRC-32C, then every record
/// walked): a batch of 1,000 records of 100 bytes, as `load produce --bootstrap` sends them.
fn bench_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    let batch = client_batch(&tails(1000, 100));
    floodgate::producer::check_batch(&batch, 1 << 20).unwrap();
    group.throughput(Throughput::Elements(1000));
    group.bench_function("client_batch/1000x100B", |b| {
        b.iter(|| floodgate::producer::check_batch(black_box(&batch), 1 << 20).is_ok())
    });
    group.finish();
}

/// The RecordBatch of a frame of `tails`, without the frame's header: a client's batch.
fn client_batch(tails: &[Vec<u8>]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode(tails, &mut frame);
    frame[FRAME_HEADER_BYTES..].to_vec()
}

criterion_group!(
    benches,
    bench_frames,
    bench_crc,
    bench_crc_short,
    bench_recompress,
    bench_check
);
criterion_main!(benches);
