//! A check of a request's array lengths before the protocol crate decodes it. The crate
//! (0.18) reserves an array's declared length up front, so a few bytes declaring two billion
//! elements would make it ask for gigabytes and abort the process. Every element takes at least
//! one byte on the wire, so a length past the bytes left is impossible: this walk over the
//! served requests' layouts refuses it before anything is allocated. It reads the layouts as
//! the Kafka protocol defines them (docs.kafka.apache.org/protocol), version by version.

use kafka_protocol::messages::ApiKey;

/// A field of a request's layout.
#[derive(Clone, Copy)]
enum F {
    /// A fixed number of bytes (integers, booleans, UUIDs).
    Fixed(usize),
    /// A string or byte array: i16 or i32 length (non-flexible), unsigned varint length + 1
    /// (flexible); -1 / 0 is null.
    Str,
    Bytes,
    /// An array of `&[F]` structs (i32 length, or unsigned varint + 1 when flexible).
    Array(&'static [F]),
    /// The tagged fields that end a flexible struct (nothing in non-flexible versions).
    Tags,
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    flexible: bool,
}

type Step = Result<(), String>;

impl Walk<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Step {
        if n > self.left() {
            return Err(format!("{n} bytes declared, {} left", self.left()));
        }
        self.at += n;
        Ok(())
    }

    fn int(&mut self, n: usize) -> Result<i64, String> {
        let b = self.bytes.get(self.at..self.at + n).ok_or("cut short")?;
        self.at += n;
        Ok(b.iter().fold(0i64, |v, &x| (v << 8) | i64::from(x)))
    }

    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..5 {
            let b = *self.bytes.get(self.at).ok_or("cut short")?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// A length (null: 0): flexible lengths are stored plus one.
    fn length(&mut self, non_flexible_bytes: usize) -> Result<usize, String> {
        let n = match self.flexible {
            true => self.uvarint()? as i64 - 1,
            false => {
                let raw = self.int(non_flexible_bytes)?;
                // Sign-extend the i16 or i32.
                let bits = 64 - 8 * non_flexible_bytes as u32;
                (raw << bits) >> bits
            }
        };
        match n {
            n if n < -1 => Err(format!("length {n}")),
            n => Ok(n.max(0) as usize),
        }
    }

    fn fields(&mut self, fields: &[F]) -> Step {
        for f in fields {
            match *f {
                F::Fixed(n) => self.take(n)?,
                F::Str => {
                    let n = self.length(2)?;
                    self.take(n)?;
                }
                F::Bytes => {
                    let n = self.length(4)?;
                    self.take(n)?;
                }
                F::Array(element) => {
                    let n = self.length(4)?;
                    if n > self.left() {
                        return Err(format!("an array of {n} elements in {} bytes", self.left()));
                    }
                    for _ in 0..n {
                        self.fields(element)?;
                    }
                }
                F::Tags if self.flexible => {
                    let count = self.uvarint()?;
                    for _ in 0..count {
                        self.uvarint()?;
                        let n = self.uvarint()? as usize;
                        self.take(n)?;
                    }
                }
                F::Tags => {}
            }
        }
        Ok(())
    }
}

const I8: F = F::Fixed(1);
const I16: F = F::Fixed(2);
const I32: F = F::Fixed(4);
const I64: F = F::Fixed(8);
const UUID: F = F::Fixed(16);

/// Checks that every array `body` (a request of `key` at `version`, after its header) declares
/// fits in the bytes after it. Requests the server does not decode pass.
pub(crate) fn check(key: ApiKey, version: i16, body: &[u8]) -> Step {
    let v = version;
    let layout: Vec<F> = match key {
        ApiKey::Metadata => {
            const T0: &[F] = &[F::Str, F::Tags];
            const T10: &[F] = &[UUID, F::Str, F::Tags];
            let mut l = vec![F::Array(if v >= 10 { T10 } else { T0 })];
            if v >= 4 {
                l.push(I8);
            }
            if (8..=10).contains(&v) {
                l.push(I8);
            }
            if v >= 8 {
                l.push(I8);
            }
            l
        }
        ApiKey::Produce => {
            const PARTITION: &[F] = &[I32, F::Bytes, F::Tags];
            const TOPIC: &[F] = &[F::Str, F::Array(PARTITION), F::Tags];
            match v {
                // v0-2 (answered by hand): no transactional id.
                ..=2 => vec![I16, I32, F::Array(TOPIC)],
                _ => vec![F::Str, I16, I32, F::Array(TOPIC)],
            }
        }
        ApiKey::Fetch => {
            const P4: &[F] = &[I32, I64, I32, F::Tags];
            const P5: &[F] = &[I32, I64, I64, I32, F::Tags];
            const P9: &[F] = &[I32, I32, I64, I64, I32, F::Tags];
            const P12: &[F] = &[I32, I32, I64, I32, I64, I32, F::Tags];
            const T4: &[F] = &[F::Str, F::Array(P4), F::Tags];
            const T5: &[F] = &[F::Str, F::Array(P5), F::Tags];
            const T9: &[F] = &[F::Str, F::Array(P9), F::Tags];
            const T12: &[F] = &[F::Str, F::Array(P12), F::Tags];
            const FORGOTTEN: &[F] = &[F::Str, F::Array(&[I32]), F::Tags];
            let topic = match v {
                ..=4 => T4,
                5..=8 => T5,
                9..=11 => T9,
                _ => T12,
            };
            let mut l = vec![I32, I32, I32, I32, I8];
            if v >= 7 {
                l.extend([I32, I32]);
            }
            l.push(F::Array(topic));
            if v >= 7 {
                l.push(F::Array(FORGOTTEN));
            }
            if v >= 11 {
                l.push(F::Str);
            }
            l
        }
        ApiKey::ListOffsets => {
            const P1: &[F] = &[I32, I64, F::Tags];
            const P4: &[F] = &[I32, I32, I64, F::Tags];
            const T1: &[F] = &[F::Str, F::Array(P1), F::Tags];
            const T4: &[F] = &[F::Str, F::Array(P4), F::Tags];
            let mut l = vec![I32];
            if v >= 2 {
                l.push(I8);
            }
            l.push(F::Array(if v >= 4 { T4 } else { T1 }));
            l
        }
        ApiKey::CreateTopics => {
            const ASSIGNMENT: &[F] = &[I32, F::Array(&[I32]), F::Tags];
            const CONFIG: &[F] = &[F::Str, F::Str, F::Tags];
            const TOPIC: &[F] = &[
                F::Str,
                I32,
                I16,
                F::Array(ASSIGNMENT),
                F::Array(CONFIG),
                F::Tags,
            ];
            vec![F::Array(TOPIC), I32, I8]
        }
        ApiKey::DeleteTopics => vec![F::Array(&[F::Str]), I32],
        ApiKey::CreatePartitions => {
            const ASSIGNMENT: &[F] = &[F::Array(&[I32]), F::Tags];
            const TOPIC: &[F] = &[F::Str, I32, F::Array(ASSIGNMENT), F::Tags];
            vec![F::Array(TOPIC), I32, I8]
        }
        ApiKey::DeleteRecords => {
            const PARTITION: &[F] = &[I32, I64, F::Tags];
            const TOPIC: &[F] = &[F::Str, F::Array(PARTITION), F::Tags];
            vec![F::Array(TOPIC), I32]
        }
        ApiKey::DescribeConfigs => {
            const RESOURCE: &[F] = &[I8, F::Str, F::Array(&[F::Str]), F::Tags];
            let mut l = vec![F::Array(RESOURCE)];
            if v >= 1 {
                l.push(I8);
            }
            if v >= 3 {
                l.push(I8);
            }
            l
        }
        ApiKey::FindCoordinator => match v {
            0 => vec![F::Str],
            1..=3 => vec![F::Str, I8],
            _ => vec![I8, F::Array(&[F::Str])],
        },
        ApiKey::JoinGroup => {
            const PROTOCOL: &[F] = &[F::Str, F::Bytes, F::Tags];
            let mut l = vec![F::Str, I32];
            if v >= 1 {
                l.push(I32);
            }
            l.push(F::Str);
            if v >= 5 {
                l.push(F::Str);
            }
            l.extend([F::Str, F::Array(PROTOCOL)]);
            if v >= 8 {
                l.push(F::Str);
            }
            l
        }
        ApiKey::SyncGroup => {
            const ASSIGNMENT: &[F] = &[F::Str, F::Bytes, F::Tags];
            let mut l = vec![F::Str, I32, F::Str];
            if v >= 3 {
                l.push(F::Str);
            }
            if v >= 5 {
                l.extend([F::Str, F::Str]);
            }
            l.push(F::Array(ASSIGNMENT));
            l
        }
        ApiKey::LeaveGroup => match v {
            ..=2 => vec![F::Str, F::Str],
            3..=4 => vec![F::Str, F::Array(&[F::Str, F::Str, F::Tags])],
            _ => vec![F::Str, F::Array(&[F::Str, F::Str, F::Str, F::Tags])],
        },
        ApiKey::OffsetCommit => {
            const P2: &[F] = &[I32, I64, F::Str, F::Tags];
            const P6: &[F] = &[I32, I64, I32, F::Str, F::Tags];
            const T2: &[F] = &[F::Str, F::Array(P2), F::Tags];
            const T6: &[F] = &[F::Str, F::Array(P6), F::Tags];
            let mut l = vec![F::Str, I32, F::Str];
            if v >= 7 {
                l.push(F::Str);
            }
            if v <= 4 {
                l.push(I64);
            }
            l.push(F::Array(if v >= 6 { T6 } else { T2 }));
            l
        }
        ApiKey::OffsetFetch => {
            const TOPIC: &[F] = &[F::Str, F::Array(&[I32]), F::Tags];
            const GROUP: &[F] = &[F::Str, F::Array(TOPIC), F::Tags];
            // v9: the member id and epoch of a consumer-protocol member.
            const GROUP9: &[F] = &[F::Str, F::Str, I32, F::Array(TOPIC), F::Tags];
            match v {
                ..=6 => vec![F::Str, F::Array(TOPIC)],
                7 => vec![F::Str, F::Array(TOPIC), I8],
                8 => vec![F::Array(GROUP), I8],
                _ => vec![F::Array(GROUP9), I8],
            }
        }
        ApiKey::DescribeGroups => match v {
            ..=2 => vec![F::Array(&[F::Str])],
            _ => vec![F::Array(&[F::Str]), I8],
        },
        ApiKey::ListGroups => match v {
            ..=3 => vec![],
            4 => vec![F::Array(&[F::Str])],
            _ => vec![F::Array(&[F::Str]), F::Array(&[F::Str])],
        },
        ApiKey::ConsumerGroupHeartbeat => {
            const OWNED: &[F] = &[UUID, F::Array(&[I32]), F::Tags];
            // Group, member id, epoch, instance id, rack id, rebalance timeout, topic names.
            let mut l = vec![
                F::Str,
                F::Str,
                I32,
                F::Str,
                F::Str,
                I32,
                F::Array(&[F::Str]),
            ];
            if v >= 1 {
                l.push(F::Str); // the topic regex
            }
            l.extend([F::Str, F::Array(OWNED)]);
            l
        }
        ApiKey::ConsumerGroupDescribe => vec![F::Array(&[F::Str]), I8],
        ApiKey::DeleteGroups => vec![F::Array(&[F::Str])],
        ApiKey::IncrementalAlterConfigs => {
            const CONFIG: &[F] = &[F::Str, I8, F::Str, F::Tags];
            const RESOURCE: &[F] = &[I8, F::Str, F::Array(CONFIG), F::Tags];
            vec![F::Array(RESOURCE), I8]
        }
        ApiKey::AlterConfigs => {
            const CONFIG: &[F] = &[F::Str, F::Str, F::Tags];
            const RESOURCE: &[F] = &[I8, F::Str, F::Array(CONFIG), F::Tags];
            vec![F::Array(RESOURCE), I8]
        }
        // Resource type, name, pattern type, principal, host, operation, permission type.
        ApiKey::DescribeAcls => vec![I8, F::Str, I8, F::Str, F::Str, I8, I8],
        ApiKey::CreateAcls | ApiKey::DeleteAcls => {
            const ACL: &[F] = &[I8, F::Str, I8, F::Str, F::Str, I8, I8, F::Tags];
            vec![F::Array(ACL)]
        }
        _ => return Ok(()),
    };
    let mut walk = Walk {
        bytes: body,
        at: 0,
        flexible: flexible(key, version),
    };
    walk.fields(&layout)?;
    walk.fields(&[F::Tags])
}

/// Whether `key` at `version` uses the flexible encoding (compact lengths, tagged fields).
fn flexible(key: ApiKey, version: i16) -> bool {
    // The request header version is 2 exactly for flexible request versions.
    key.request_header_version(version) >= 2
}
