//! The offsets of acknowledged records, handed from the shard writer to `Ack` handles.
//!
//! Records are numbered by `seq` in push order. The writer stores the offset of record `seq` in
//! `offsets[seq % capacity]` when it frames it (before the ring slot is freed), and the handle
//! reads it once the record is acknowledged. A handle can outlive its slot: `owner[i]` names the
//! seq whose live handle reads slot i (or [`NO_OWNER`]). Before pushing `seq + capacity` into a
//! slot whose handle for `seq` is still alive, the producer copies that offset into `spilled`,
//! then takes the slot over with a compare-exchange; the handle reads the slot, then checks it
//! still owns it, and otherwise finds its offset in `spilled`. Handles that are waited on or
//! dropped promptly never spill, so the common path costs no allocation.
//!
//! The protocol is checked with loom (`RUSTFLAGS="--cfg loom" cargo test --release --lib
//! slots`) and stress-tested in tests/acks.rs.

use std::collections::HashMap;

#[cfg(loom)]
use loom::sync::Mutex;
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::Mutex;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Set in a slot's value when the writer refused the record's batch instead of giving it an
/// offset; the low bits say why (`framing::Refusal`). Offsets never come near 2^63.
pub(crate) const REFUSED: u64 = 1 << 63;

/// `owner` value of a slot whose handle is gone.
pub(crate) const NO_OWNER: u64 = u64::MAX;

/// See the module documentation.
pub(crate) struct AckSlots {
    /// A power of two at least the ring's capacity (so `seq`'s slot is a mask, not a
    /// division, on the per-record path). A slot is reused
    /// for `seq + len`, which the ring lets in only after `seq` was framed: the same as at
    /// exactly the ring's capacity, later.
    offsets: Box<[AtomicU64]>,
    owner: Box<[AtomicU64]>,
    /// Offsets of live handles whose slot was reused: seq → offset.
    spilled: Mutex<HashMap<u64, u64>>,
}

impl AckSlots {
    /// Slots for a ring of `capacity` records.
    pub fn new(capacity: usize) -> AckSlots {
        let len = capacity.next_power_of_two();
        AckSlots {
            offsets: (0..len).map(|_| AtomicU64::new(0)).collect(),
            owner: (0..len).map(|_| AtomicU64::new(NO_OWNER)).collect(),
            spilled: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, seq: u64) -> usize {
        seq as usize & (self.offsets.len() - 1)
    }

    /// Writer side: record `seq` got `offset`. Called before the record's ring slot is freed,
    /// so before the producer can claim the slot for `seq + capacity`.
    pub fn store(&self, seq: u64, offset: u64) {
        self.offsets[self.slot(seq)].store(offset, Ordering::Relaxed);
    }

    /// Producer side: makes `seq`'s handle the owner of its slot, spilling the offset of a
    /// previous owner that is still alive. The ring guarantees the previous owner's record was
    /// already framed (its offset is in the slot).
    pub fn claim(&self, seq: u64) {
        let slot = self.slot(seq);
        let owner = &self.owner[slot];
        loop {
            let prev = owner.load(Ordering::SeqCst);
            if prev != NO_OWNER {
                let offset = self.offsets[slot].load(Ordering::SeqCst);
                self.spilled
                    .lock()
                    .expect("spill lock")
                    .insert(prev, offset);
            }
            if owner
                .compare_exchange(prev, seq, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return;
            }
            // The previous handle was dropped meanwhile: its spilled offset is not needed.
            self.spilled.lock().expect("spill lock").remove(&prev);
        }
    }

    /// Handle side: the offset of acknowledged record `seq`.
    pub fn offset_of(&self, seq: u64) -> u64 {
        let slot = self.slot(seq);
        let offset = self.offsets[slot].load(Ordering::SeqCst);
        if self.owner[slot].load(Ordering::SeqCst) == seq {
            return offset;
        }
        *self
            .spilled
            .lock()
            .expect("spill lock")
            .get(&seq)
            .expect("a reused slot's offset was spilled")
    }

    /// Handle side: the handle of `seq` is gone.
    pub fn release(&self, seq: u64) {
        let slot = self.slot(seq);
        let released = self.owner[slot]
            .compare_exchange(seq, NO_OWNER, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !released {
            self.spilled.lock().expect("spill lock").remove(&seq);
        }
    }

    /// Offsets held for reused slots (for tests: nothing may leak).
    #[cfg(test)]
    fn spilled_len(&self) -> usize {
        self.spilled.lock().expect("spill lock").len()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A one-slot ring: record 0 is acknowledged with offset 100; while its handle reads and then
    /// drops it, the producer reuses the slot for record 1, which the writer gives offset 200.
    /// In every interleaving the handle reads 100, and no spilled offset is left behind.
    #[test]
    fn a_reused_slot_never_changes_an_acked_offset() {
        loom::model(|| {
            let slots = Arc::new(AckSlots::new(1));
            slots.claim(0);
            slots.store(0, 100);
            let handle = {
                let slots = Arc::clone(&slots);
                thread::spawn(move || {
                    let offset = slots.offset_of(0);
                    slots.release(0);
                    offset
                })
            };
            slots.claim(1);
            slots.store(1, 200);
            assert_eq!(handle.join().unwrap(), 100);
            assert_eq!(slots.offset_of(1), 200);
            slots.release(1);
            assert_eq!(slots.spilled_len(), 0);
        });
    }

    /// The handle of record 0 is dropped without being read while the slot is reused twice.
    #[test]
    fn dropped_handles_leave_nothing_spilled() {
        loom::model(|| {
            let slots = Arc::new(AckSlots::new(1));
            slots.claim(0);
            slots.store(0, 7);
            let handle = {
                let slots = Arc::clone(&slots);
                thread::spawn(move || slots.release(0))
            };
            slots.claim(1);
            slots.store(1, 8);
            handle.join().unwrap();
            assert_eq!(slots.offset_of(1), 8);
            slots.release(1);
            assert_eq!(slots.spilled_len(), 0);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn held_handles_keep_their_offsets_across_reuse() {
        let slots = AckSlots::new(2);
        for seq in 0..10 {
            slots.claim(seq);
            slots.store(seq, seq * 10);
        }
        // Every handle is still alive: the eight older ones were spilled.
        for seq in 0..10 {
            assert_eq!(slots.offset_of(seq), seq * 10);
        }
        for seq in 0..10 {
            slots.release(seq);
        }
        assert_eq!(slots.spilled_len(), 0);
    }

    #[test]
    fn a_ring_of_any_capacity_gets_slots_that_never_mix_up_records() {
        // Three records in the ring: four slots (a power of two); record seq + 4 reuses seq's.
        let slots = AckSlots::new(3);
        for seq in 0..40 {
            slots.claim(seq);
            slots.store(seq, 1000 + seq);
            if seq >= 3 {
                // The ring keeps at most three records unframed; their handles are read and
                // dropped in order.
                assert_eq!(slots.offset_of(seq - 3), 1000 + seq - 3);
                slots.release(seq - 3);
            }
        }
        for seq in 37..40 {
            assert_eq!(slots.offset_of(seq), 1000 + seq);
            slots.release(seq);
        }
        assert_eq!(slots.spilled_len(), 0);
    }
}
