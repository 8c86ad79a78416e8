//! Offsets: a record's place in its partition.

/// A record's offset in its partition: 0 for the partition's first record, one more for each
/// record after it. An offset is given once: records that are deleted or cut never give theirs
/// to new records.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// A partition's first offset.
    pub const ZERO: Offset = Offset(0);

    /// The offset after this one.
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// The offset before this one, if there is one.
    pub const fn prev(self) -> Option<Offset> {
        match self.0.checked_sub(1) {
            Some(v) => Some(Offset(v)),
            None => None,
        }
    }

    /// How many offsets lie from `earlier` up to this one (0 if `earlier` is not earlier).
    pub const fn since(self, earlier: Offset) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Add<u64> for Offset {
    type Output = Offset;
    fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

/// How many offsets lie from `rhs` up to `self` (`self` must not be before `rhs`).
impl std::ops::Sub for Offset {
    type Output = u64;
    fn sub(self, rhs: Offset) -> u64 {
        self.0 - rhs.0
    }
}

impl std::ops::AddAssign<u64> for Offset {
    fn add_assign(&mut self, n: u64) {
        self.0 += n;
    }
}

impl From<u64> for Offset {
    fn from(v: u64) -> Offset {
        Offset(v)
    }
}

impl From<Offset> for u64 {
    fn from(o: Offset) -> u64 {
        o.0
    }
}
