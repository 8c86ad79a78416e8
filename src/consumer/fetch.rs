//! Fetching: how a consumer reads the records it hands out. One partition is read through its
//! index; several are read by scanning each shard's log in position order from a cursor and
//! handing each frame to its partition (see [`Consumer::fetch`]).

use super::{
    Consumer, ConsumerRecord, FETCH_BYTES_DEFAULT, FETCH_BYTES_RATE_LIMITED,
    FETCH_BYTES_RATE_LIMITED_MAX, record_bytes,
};
use crate::error::{Error, Result};
use crate::segment::LogPos;
use crate::segment::TopicPartition;
use crate::shard::read::{LogScan, ReadMode};
use crate::store::Stretch;

/// How far before the earliest batch found a cursor may be placed instead of reading an index
/// run to place it exactly: the scan reads these bytes once, and skips their frames.
const PLACE_SLACK_BYTES: u64 = 1 << 20;
/// What reading one index run to place a cursor costs, in bytes of log a scan reads and skips
/// in the same time (8-9 µs against 1.3 GB/s): once the index runs read for one placement
/// would cost more than scanning from the bound, the cursor goes to the bound.
const PLACE_READ_BYTES: u64 = 16 << 10;

impl Consumer {
    /// Reads the next records beyond what was read. Returns whether anything was read.
    ///
    /// A consumer of one partition reads it through its index. One of many reads each shard's
    /// log in position order from its cursor and hands each frame to its partition (a merge by
    /// position over the partitions it owns): each region of the log is read once, and a
    /// frame costs a header check and a table lookup, whatever the partition count.
    pub(super) fn fetch(&mut self) -> Result<bool> {
        // A paced consumer reads little at a time and nothing ahead: its reads share the disk
        // with the writer's commits. One draining a backlog reads whole windows, ahead.
        let limited = self.rate_limited();
        if limited {
            self.paced_read_bytes = match self.repaying() {
                true => (self.paced_read_bytes * 2).min(FETCH_BYTES_RATE_LIMITED_MAX),
                false => (self.paced_read_bytes / 2).max(FETCH_BYTES_RATE_LIMITED),
            };
        }
        let (fetch_bytes, mode) = match limited {
            true => (self.paced_read_bytes, ReadMode::Exact),
            false => (FETCH_BYTES_DEFAULT, ReadMode::Ahead),
        };
        let fetch_bytes = self.fetch_bytes.unwrap_or(fetch_bytes);
        if self.partitions.len() <= 1 {
            for _ in 0..self.partitions.len() {
                let i = self.next % self.partitions.len();
                self.next = i + 1;
                if !self.partitions[i].paused && self.read_one(i, fetch_bytes, mode)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        if self.strays > 0
            && let Some(i) = self.partitions.iter().position(|s| s.stray)
        {
            self.partitions[i].stray = false;
            self.strays -= 1;
            self.cursors.clear();
            if !self.partitions[i].paused && self.read_one(i, fetch_bytes, mode)? {
                return Ok(true);
            }
        }
        self.scan(fetch_bytes, mode)
    }

    /// Reads partition `partitions[i]` through its index from where it was read to. Returns
    /// whether anything was read.
    fn read_one(&mut self, i: usize, fetch_bytes: usize, mode: ReadMode) -> Result<bool> {
        let state = &self.partitions[i];
        let read = self.store.read_before(
            &self.topic,
            state.partition,
            state.fetched,
            fetch_bytes,
            mode,
            None,
        );
        let read = match read {
            Err(Error::OffsetOutOfRange {
                offset, earliest, ..
            }) if self.skip_deleted && offset < earliest => {
                self.skipped += earliest - offset;
                let buffered = self.buffer.iter().any(|r| r.partition == state.partition);
                let state = &mut self.partitions[i];
                state.fetched = earliest;
                if !buffered {
                    state.position = earliest;
                }
                return Ok(true);
            }
            r => r?,
        };
        // Past a gap a repair left, even if it held all that was read.
        self.partitions[i].fetched = read.next.max(state.fetched);
        if read.records.is_empty() {
            return Ok(false);
        }
        let partition = self.partitions[i].partition;
        self.buffer.extend(
            read.records
                .into_iter()
                .map(|record| ConsumerRecord { partition, record }),
        );
        Ok(true)
    }

    /// Scans the shards' logs from their cursors (see [`Consumer::fetch`]), a shard at a time,
    /// until a scan hands this consumer's partitions something. Returns whether one did.
    fn scan(&mut self, fetch_bytes: usize, mode: ReadMode) -> Result<bool> {
        let moved = |c: &Consumer, s: usize| c.store.shards[s].layout_moved(c.cursor_layouts[s]);
        if self.cursors.is_empty() || (0..self.cursors.len()).any(|s| moved(self, s)) {
            self.place_cursors()?;
        }
        let shards = self.cursors.len();
        for _ in 0..shards {
            let s = self.next_shard % shards;
            self.next_shard = s + 1;
            while let Some(at) = self.cursors[s] {
                if moved(self, s) {
                    self.place_cursors()?;
                    continue;
                }
                let (at, read) = match self.own_stretches(s, at, (fetch_bytes, mode)) {
                    Stretch::Scan => (at, (fetch_bytes, mode)),
                    Stretch::Run(start, end) => {
                        let bytes = (end - start) as usize;
                        (LogPos::new(at.segment, start), (bytes, ReadMode::Exact))
                    }
                    Stretch::None => {
                        self.cursors[s] = Some(LogPos::new(at.segment.next(), 0));
                        continue;
                    }
                };
                // Taken out while its frames are handed over, and put back for the next scan.
                let mut scan = std::mem::take(&mut self.scan);
                let scanned = self.store.scan_log(s as u32, at, read, &mut scan);
                let taken = match scanned {
                    // Read across a rewrite's replacement: placed again, read again.
                    Ok(()) if moved(self, s) => {
                        scan.clear();
                        self.scan = scan;
                        self.place_cursors()?;
                        continue;
                    }
                    Ok(()) => {
                        self.cursors[s] = Some(scan.next);
                        match scan.frames.is_empty() {
                            true => Ok(None),
                            false => self.take_frames(s as u32, &scan).map(Some),
                        }
                    }
                    Err(e) => Err(e),
                };
                scan.clear();
                self.scan = scan;
                match taken? {
                    None => break,
                    Some(true) => return Ok(true),
                    Some(false) => {}
                }
            }
        }
        Ok(false)
    }

    /// Where the scan of shard `s` from `at` reads next, for the partitions this consumer
    /// reads now (see [`crate::store::Store::next_stretch`]); the next runs are read ahead when `mode` says
    /// so.
    fn own_stretches(
        &mut self,
        s: usize,
        at: LogPos,
        (fetch_bytes, mode): (usize, ReadMode),
    ) -> Stretch {
        let (topic_id, slot_of, partitions) = (self.topic_id, &self.slot_of, &self.partitions);
        let wanted = |tp: TopicPartition| {
            tp.topic_id == topic_id
                && (slot_of.get(tp.partition as usize))
                    .and_then(|&i| partitions.get(i as usize))
                    .is_some_and(|p| !p.paused && !p.stray)
        };
        let ahead = (mode == ReadMode::Ahead).then_some((&mut self.prefetched[s], self.scan.tag));
        (self.store).next_stretch(s as u32, at, wanted, fetch_bytes, ahead, &mut self.runs)
    }

    /// Hands scanned frames to the partitions they belong to: the records from each one's
    /// read position on. Returns whether any partition moved on.
    fn take_frames(&mut self, shard: u32, scan: &LogScan) -> Result<bool> {
        let mut moved = false;
        let mut taken = 0u64;
        for f in &scan.frames {
            if f.tp.topic_id != self.topic_id {
                continue;
            }
            let Some(&i) = self.slot_of.get(f.tp.partition as usize) else {
                continue;
            };
            let Some(state) = self.partitions.get_mut(i as usize) else {
                continue;
            };
            if state.paused || state.stray {
                continue;
            }
            if f.entry.base_offset > state.fetched {
                // Its batches from the read position on are gone: read it on its own, which
                // says so (or skips them).
                state.stray = true;
                self.strays += 1;
                moved = true;
                continue;
            }
            let partition = state.partition;
            let buffer = &mut self.buffer;
            let next = scan.records(f, state.fetched, |record| {
                buffer.push_back(ConsumerRecord { partition, record });
            })?;
            taken += u64::from(f.entry.frame_bytes);
            if next > state.fetched {
                state.fetched = next;
                moved = true;
            }
        }
        self.store.count_frames_read(shard, taken);
        Ok(moved)
    }

    /// Places each shard's cursor at the earliest batch any of its partitions here has yet to
    /// read, or at the end of its published log if none has one: what is published after lies
    /// past that end. A partition whose batch lies in a sealed segment gives first only that
    /// segment's start, from memory; its index file is read only while that bound is below the
    /// earliest batch found so far, by more than [`PLACE_SLACK_BYTES`] (a consumer of 10,000
    /// partitions starting together read 10,000 index runs, 13% of its catch-up's CPU, to find
    /// one position), and while the runs read so far cost less than scanning from the bound
    /// ([`PLACE_READ_BYTES`]): a group member given the middle third of 100,000 partitions
    /// produced in turn found each one's first batch 5-10 MB into the segment, 1 MiB from none
    /// of the others, and read 33,000 index runs (280 ms) before its first record.
    fn place_cursors(&mut self) -> Result<()> {
        self.cursor_layouts = (self.store.shards.iter())
            .map(|s| s.layout_seen())
            .collect();
        let mut cursors: Vec<Option<LogPos>> = vec![None; self.store.shards.len()];
        for state in self.partitions.iter().filter(|s| !s.paused) {
            let c = &mut cursors[state.shard as usize];
            if c.is_none() {
                *c = Some(self.store.acked_end(state.shard));
            }
        }
        let mut bounds: Vec<(LogPos, usize)> = Vec::new();
        for i in 0..self.partitions.len() {
            let state = &self.partitions[i];
            if state.paused || state.stray {
                continue;
            }
            let p = self.store.partition(&self.topic, state.partition)?;
            if p.offset_acked() <= state.fetched {
                continue;
            }
            match p.position_bound(state.fetched) {
                Some((at, true)) => {
                    let c = &mut cursors[state.shard as usize];
                    *c = Some(c.map_or(at, |c| c.min(at)));
                }
                Some((bound, false)) => bounds.push((bound, i)),
                None => self.place_exactly(i, &mut cursors)?,
            }
        }
        bounds.sort_unstable();
        let mut runs_read = vec![0u64; cursors.len()];
        for (bound, i) in bounds {
            let shard = self.partitions[i].shard as usize;
            match cursors[shard] {
                Some(c) if c <= bound => continue,
                Some(c)
                    if c.segment == bound.segment
                        && (c.pos - bound.pos <= PLACE_SLACK_BYTES
                            || c.pos - bound.pos <= runs_read[shard] * PLACE_READ_BYTES) =>
                {
                    cursors[shard] = Some(bound);
                    continue;
                }
                _ => {}
            }
            self.place_exactly(i, &mut cursors)?;
            runs_read[shard] += 1;
        }
        self.cursors = cursors;
        self.prefetched = vec![LogPos::default(); self.cursors.len()];
        Ok(())
    }

    /// Moves its shard's cursor in `cursors` back to the batch holding partition
    /// `partitions[i]`'s read position, found in its index.
    fn place_exactly(&mut self, i: usize, cursors: &mut [Option<LogPos>]) -> Result<()> {
        let state = &self.partitions[i];
        let at = match self
            .store
            .batch_holding(&self.topic, state.partition, state.fetched)
        {
            Ok(entry) => entry.at(),
            // Retention deleted it: its own read says so (or skips).
            Err(Error::OffsetOutOfRange { .. }) => {
                self.partitions[i].stray = true;
                self.strays += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let c = &mut cursors[state.shard as usize];
        *c = Some(c.map_or(at, |c| c.min(at)));
        Ok(())
    }

    /// After `partitions` changed: the partition table, and the cursors placed again.
    pub(super) fn reindex(&mut self) {
        self.partitions.sort_by_key(|s| s.partition);
        let count = self
            .partitions
            .last()
            .map_or(0, |s| s.partition as usize + 1);
        self.slot_of = vec![u32::MAX; count];
        for (i, s) in self.partitions.iter().enumerate() {
            self.slot_of[s.partition as usize] = i as u32;
        }
        self.strays = self.partitions.iter().filter(|s| s.stray).count();
        self.cursors.clear();
    }

    /// Reads on after a fetch, for a consumer that no rate limit paces, until the buffer holds
    /// a fetch's worth of bytes or `poll_records_max` records, or nothing is left to read: with
    /// many partitions one read hands over a batch of a few records, and a poll per batch
    /// spent more on the poll than on the records.
    pub(super) fn fetch_more(&mut self) -> Result<()> {
        if self.rate_limited() {
            return Ok(());
        }
        let bytes_max = self.fetch_bytes.unwrap_or(FETCH_BYTES_DEFAULT);
        let mut bytes: usize = self.buffer.iter().map(record_bytes).sum();
        while self.buffer.len() < self.poll_records_max && bytes < bytes_max {
            let before = self.buffer.len();
            if !self.fetch()? {
                break;
            }
            bytes += self
                .buffer
                .iter()
                .skip(before)
                .map(record_bytes)
                .sum::<usize>();
        }
        Ok(())
    }
}
