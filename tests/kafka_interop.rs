//! floodgate's stored batches are Kafka RecordBatch v2: the `kafka-protocol` crate decodes what
//! floodgate writes, and floodgate decodes what that crate encodes.

mod common;

use bytes::{Bytes, BytesMut};
use common::{segments, small_config, test_dir};
use floodgate::segment::format::FRAME_HEADER_BYTES;
use floodgate::segment::{BatchView, decode_frame};
use floodgate::{IoBackend, Log, Record, TopicConfig};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

#[test]
fn kafka_decodes_floodgate_batches() {
    let dir = test_dir("interop");
    {
        let log = Log::open(small_config(dir.path(), IoBackend::IoUring)).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let mut producer = log.producer();
        let acks: Vec<_> = (0..20u32)
            .map(|i| {
                let v = format!("value-{i}");
                let k = format!("key-{i}");
                let mut r = Record::new(v.as_bytes()).timestamp(1_700_000_000_000 + i as i64);
                if !i.is_multiple_of(3) {
                    r = r
                        .key(k.as_bytes())
                        .header("trace", Some(b"abc"))
                        .header("n", None);
                }
                producer.send("t", r).unwrap()
            })
            .collect();
        acks.into_iter().for_each(|a| {
            a.wait().unwrap();
        });
    }
    let topic_id = common::topic_id(dir.path(), "t");
    let image = std::fs::read(&segments(dir.path(), 0)[0]).unwrap();
    let mut pos = 0;
    let mut next_offset = 0i64;
    while let Some((header, _)) = decode_frame(&image[pos..]).unwrap() {
        let batch = &image[pos + FRAME_HEADER_BYTES..pos + header.frame_bytes() as usize];
        pos += header.frame_bytes() as usize;
        if header.topic_id != topic_id {
            continue; // the internal offsets topic, which records the topic
        }
        let mut buf = Bytes::copy_from_slice(batch);
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(set.version, 2);
        for r in set.records {
            let i = r.offset as u32;
            assert_eq!(r.offset, next_offset);
            assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
            if i.is_multiple_of(3) {
                assert_eq!(r.key, None);
                assert!(r.headers.is_empty());
            } else {
                assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_bytes()));
                assert_eq!(r.headers.len(), 2);
                assert_eq!(
                    r.headers[&StrBytes::from_static_str("trace")].as_deref(),
                    Some(&b"abc"[..])
                );
                assert_eq!(r.headers[&StrBytes::from_static_str("n")], None);
            }
            next_offset += 1;
        }
    }
    assert_eq!(next_offset, 20);
}

#[test]
fn floodgate_decodes_kafka_batches() {
    let records: Vec<KRecord> = (0..10i64)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_string(format!("h{i}")),
                Some(Bytes::from_static(b"hv")),
            );
            KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 500 + i,
                sequence: -1,
                timestamp: 1_000 + i * 7,
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; i as usize * 10])),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    // The encoder may split the records into several batches: walk them all.
    let mut decoded = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let len = 12 + i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let batch = BatchView::decode(&buf[pos..pos + len]).unwrap();
        batch.check_records().unwrap();
        assert!(batch.max_timestamp >= batch.base_timestamp);
        for got in batch.records() {
            let got = got.unwrap();
            let headers: Vec<(String, Option<Vec<u8>>)> = got
                .headers()
                .map(|h| h.unwrap())
                .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                .collect();
            decoded.push((
                got.offset,
                got.timestamp,
                got.key.map(<[u8]>::to_vec),
                got.value.map(<[u8]>::to_vec),
                headers,
            ));
        }
        pos += len;
    }
    let want: Vec<_> = records
        .iter()
        .map(|r| {
            let headers: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec())))
                .collect();
            (
                r.offset as u64,
                r.timestamp,
                r.key.as_ref().map(|b| b.to_vec()),
                r.value.as_ref().map(|b| b.to_vec()),
                headers,
            )
        })
        .collect();
    assert_eq!(decoded, want);
    // A flipped bit anywhere under the CRC is refused.
    let mut damaged = buf.to_vec();
    damaged[30] ^= 1;
    assert!(BatchView::decode(&damaged).is_err());
}
