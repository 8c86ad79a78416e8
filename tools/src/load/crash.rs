//! `load crash`: SIGKILL a producing child at random moments and check every acknowledged
//! record after each restart.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use floodgate::{Config, Log, Offset, Record, TopicConfig};
use serde_json::json;

use super::*;
use crate::error::{CliError, CliResult};
use crate::outln;

pub(crate) const CRASH_TOPIC: &str = "crash";

/// Small segments and commits, so a short crash run rolls segments and tears tails often.
pub(crate) fn crash_config(dir: &Path) -> Config {
    Config::new(dir)
        .segment_bytes(8 << 20)
        .commit_bytes_max(256 << 10)
        .record_bytes_max(64 << 10)
}

pub(crate) const CRASH_PARTITIONS: u32 = 4;
/// An ack journal record: u32 partition, u32 reserved, u64 offset, u64 payload hash, u64
/// xxh3 of the first 24 bytes. A power of two, so records never straddle a page.
pub(crate) const JOURNAL_RECORD_BYTES: usize = 32;

pub(crate) fn journal_record(partition: u32, offset: u64, hash: u64) -> [u8; JOURNAL_RECORD_BYTES] {
    let mut r = [0u8; JOURNAL_RECORD_BYTES];
    r[0..4].copy_from_slice(&partition.to_le_bytes());
    r[8..16].copy_from_slice(&offset.to_le_bytes());
    r[16..24].copy_from_slice(&hash.to_le_bytes());
    let check = xxhash_rust::xxh3::xxh3_64(&r[..24]);
    r[24..32].copy_from_slice(&check.to_le_bytes());
    r
}

/// ((partition, offset), payload hash) of every journaled ack, in journal order.
pub(crate) type AckJournal = Vec<((u32, u64), u64)>;

/// The journal's records; `Err` names a damaged record.
pub(crate) fn read_journal(bytes: &[u8]) -> CliResult<AckJournal> {
    bytes
        .chunks_exact(JOURNAL_RECORD_BYTES)
        .enumerate()
        .map(|(i, r)| {
            let word = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
            if xxhash_rust::xxh3::xxh3_64(&r[..24]) != word(24) {
                return Err(CliError::from(format!("ack journal record {i} is damaged")));
            }
            let partition = u32::from_le_bytes(r[0..4].try_into().unwrap());
            Ok(((partition, word(8)), word(16)))
        })
        .collect()
}

/// The child: sends records forever (until killed), each waited for (Sync), and appends
/// `partition offset hash` to the journal after each ack.
pub(crate) fn crash_child(args: CrashChildArgs) -> CliResult {
    use std::io::Write;
    let log = Log::open(crash_config(&args.dir))?;
    if !log.list_topics().iter().any(|t| t.name == CRASH_TOPIC) {
        log.create_topic(CRASH_TOPIC, TopicConfig::new(CRASH_PARTITIONS))
            .map_err(|e| e.to_string())?;
    }
    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.journal)
        .map_err(|e| e.to_string())?;
    // A kill can tear a write where it crosses a page boundary; records are 32 bytes, so they
    // never do, but the previous child may have died mid-record: cut that partial record off.
    let len = journal.metadata().map_err(|e| e.to_string())?.len();
    journal
        .set_len(len - len % JOURNAL_RECORD_BYTES as u64)
        .map_err(|e| e.to_string())?;
    let mut producer = log.producer();
    let mut acks = VecDeque::new();
    for seq in 0u64.. {
        // Varied sizes so frames straddle sectors and blocks.
        let size = HEADER_BYTES + (seq as usize * 7919) % 3000;
        let mut value = Vec::new();
        payload(RecordId::new(args.round, seq), size, &mut value);
        let hash = xxhash_rust::xxh3::xxh3_64(&value);
        let ack = producer
            .send(CRASH_TOPIC, Record::new(&value).partition((seq % 4) as u32))
            .map_err(|e| e.to_string())?;
        acks.push_back((ack, hash));
        // Keep up to 64 records in flight so commits group several records.
        while acks.len() > 64 || acks.front().is_some_and(|(a, _)| a.try_get().is_some()) {
            let (ack, hash) = acks.pop_front().expect("non-empty");
            let at = ack.wait()?;
            journal
                .write_all(&journal_record(at.partition, at.offset.0, hash))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// What the crash run knows between rounds, so a round reads only what changed.
///
/// A round reads the records stored since the previous round, re-reads a random stretch of
/// each partition's older records, and checks the acks journaled since the previous round;
/// every `--full-check-every` rounds and in the last round it re-reads the whole log and checks
/// every journaled ack again. A stretch found different from what an earlier round read (or a
/// partition shorter than before) makes that round check every ack too.
#[derive(Default)]
pub(crate) struct CrashCheck {
    /// Per partition, the hash of each record stored at its offset, as last read.
    pub(crate) stored: Vec<Vec<u64>>,
    /// Every journaled ack: (partition, offset, payload hash).
    pub(crate) acks: Vec<(u32, u64, u64)>,
    /// Journal bytes already taken into `acks`.
    pub(crate) journal_read: u64,
    pub(crate) journaled: u64,
    pub(crate) acks_checked: u64,
    pub(crate) records_read: u64,
    pub(crate) full_checks: u64,
    pub(crate) samples: u64,
    /// Records found shorter or different from an earlier round's reading (a sign of a bug
    /// only where acknowledged: those count as lost or corrupt).
    pub(crate) changed: u64,
    pub(crate) lost: u64,
    pub(crate) corrupt: u64,
    pub(crate) offset_gaps: u64,
}

/// Records re-read from each partition's older part in a round that is not a full check.
pub(crate) const CRASH_SAMPLE_RECORDS: u64 = 256;

impl CrashCheck {
    fn round(
        &mut self,
        log: &Log,
        journal: &Path,
        full: bool,
        random: &mut impl FnMut() -> u64,
    ) -> CliResult {
        self.stored.resize(CRASH_PARTITIONS as usize, Vec::new());
        let new_from = self.acks.len();
        self.read_new_acks(journal)?;
        let mut check_all = full;
        self.full_checks += u64::from(full);
        for p in 0..CRASH_PARTITIONS {
            let end = log.offsets(CRASH_TOPIC, p).map_or(0, |(_, end)| end.0);
            let known = self.stored[p as usize].len() as u64;
            if end < known {
                self.changed += known - end;
                self.stored[p as usize].truncate(end as usize);
                check_all = true;
            }
            if full {
                check_all |= self.read_range(log, p, 0, end)?;
                continue;
            }
            // A random stretch of the older records, then everything new.
            let older = known.min(end);
            let at = random() % (older.saturating_sub(CRASH_SAMPLE_RECORDS) + 1);
            let again = (at + CRASH_SAMPLE_RECORDS).min(older);
            self.samples += again - at;
            check_all |= self.read_range(log, p, at, again)?;
            let new_from = self.stored[p as usize].len() as u64;
            check_all |= self.read_range(log, p, new_from, end)?;
        }
        let from = if check_all { 0 } else { new_from };
        for i in from..self.acks.len() {
            let (p, offset, hash) = self.acks[i];
            self.check_ack(p, offset, hash);
        }
        Ok(())
    }

    /// Appends the journal's new records to `acks`.
    fn read_new_acks(&mut self, journal: &Path) -> CliResult {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(journal) {
            f.seek(std::io::SeekFrom::Start(self.journal_read))
                .and_then(|_| f.read_to_end(&mut bytes))
                .map_err(|e| format!("reading the ack journal: {e}"))?;
        }
        bytes.truncate(bytes.len() - bytes.len() % JOURNAL_RECORD_BYTES);
        self.journal_read += bytes.len() as u64;
        for ((p, offset), hash) in read_journal(&bytes)? {
            if p >= CRASH_PARTITIONS {
                return Err(format!("the ack journal names partition {p}").into());
            }
            self.acks.push((p, offset, hash));
            self.journaled += 1;
        }
        Ok(())
    }

    /// Reads partition `p`'s records `from..to` into `stored`; true when a record read again
    /// differs from the earlier reading.
    fn read_range(&mut self, log: &Log, p: u32, from: u64, to: u64) -> CliResult<bool> {
        let mut differs = false;
        let mut offset = from;
        while offset < to {
            let records = log
                .read(CRASH_TOPIC, p, Offset(offset), 1 << 20)
                .map_err(|e| format!("reading {p}/{offset}: {e}"))?;
            if records.is_empty() {
                break;
            }
            for r in records {
                let read_at = r.offset.0;
                if read_at >= to {
                    break;
                }
                if read_at != offset {
                    self.offset_gaps += 1;
                }
                let hash = xxhash_rust::xxh3::xxh3_64(&r.value.unwrap_or_default());
                let stored = &mut self.stored[p as usize];
                let len = stored.len();
                match stored.get_mut(read_at as usize) {
                    Some(h) if *h != hash => {
                        *h = hash;
                        self.changed += 1;
                        differs = true;
                    }
                    Some(_) => {}
                    None if read_at as usize == len => stored.push(hash),
                    None => self.offset_gaps += 1,
                }
                self.records_read += 1;
                offset = read_at + 1;
            }
        }
        if offset < to {
            // Fewer records than `offsets` promised: what is missing is behind the read end.
            self.stored[p as usize].truncate(offset as usize);
            differs = true;
        }
        Ok(differs)
    }

    fn check_ack(&mut self, p: u32, offset: u64, hash: u64) {
        self.acks_checked += 1;
        match self.stored[p as usize].get(offset as usize) {
            None => {
                self.lost += 1;
                eprintln!("acknowledged record {p}/{offset} is missing");
            }
            Some(&h) if h != hash => {
                self.corrupt += 1;
                eprintln!("acknowledged record {p}/{offset} has other bytes");
            }
            Some(_) => {}
        }
    }
}

pub(crate) fn crash(args: CrashArgs) -> CliResult {
    let (dir, tmp) = data_dir(args.dir.as_ref(), args.keep)?;
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let journal = dir.with_extension("acks");
    let _ = std::fs::remove_file(&journal);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut check = CrashCheck::default();
    let mut torn_tails = 0usize;
    for round in 0..args.iterations {
        let mut child = std::process::Command::new(&exe)
            .args([
                "load",
                "crash-child",
                "--round",
                &round.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .arg("--journal")
            .arg(&journal)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let wait_ms = 20 + next() % args.kill_after_ms_max.max(1);
        std::thread::sleep(Duration::from_millis(wait_ms));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("round {round}: the child exited early ({status})").into());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        // Reopen (recovery runs) and check every acknowledged record.
        let log = Log::open(crash_config(&dir))
            .map_err(|e| format!("round {round}: reopening after the kill: {e}"))?;
        torn_tails += log.recovery_report().torn_tails.len();
        let full = round + 1 == args.iterations
            || (args.full_check_every > 0 && (round + 1) % args.full_check_every == 0);
        check
            .round(&log, &journal, full, &mut next)
            .map_err(|e| format!("round {round}: {e}"))?;
        drop(log);
        if (round + 1) % 50 == 0 {
            // Long runs: a line now and then, so a run cut short still says what it checked.
            eprintln!(
                "floodgate load crash: {} kills, {} acks journaled, {} checks: {} lost, {} \
                 corrupt, {} offset gaps",
                round + 1,
                check.journaled,
                check.acks_checked,
                check.lost,
                check.corrupt,
                check.offset_gaps
            );
        }
    }
    let report = json!({
        "scenario": "crash",
        "seed": seed,
        "iterations": args.iterations,
        "acks_checked": check.acks_checked,
        "acks_in_journal": check.journaled,
        "records_read": check.records_read,
        "full_checks": check.full_checks,
        "samples_rechecked": check.samples,
        "stored_changed": check.changed,
        "lost": check.lost,
        "corrupt": check.corrupt,
        "offset_gaps": check.offset_gaps,
        "torn_tails_recovered": torn_tails,
        "env": env_json(&dir, &fs_type(&dir)),
    });
    if args.json {
        outln!("{report}");
    } else {
        outln!(
            "floodgate load crash: {} kills (seed {seed}), {} acknowledged records journaled, {} \
             checks ({} full): {} lost, {} corrupt, {} offset gaps; {torn_tails} torn tails \
             recovered",
            args.iterations,
            check.journaled,
            check.acks_checked,
            check.full_checks,
            check.lost,
            check.corrupt,
            check.offset_gaps
        );
    }
    let _ = std::fs::remove_file(&journal);
    if args.keep
        && let Some(t) = tmp
    {
        eprintln!("kept data directory {}", t.keep().display());
    }
    if check.lost + check.corrupt + check.offset_gaps > 0 {
        return Err(format!("crash test failed (seed {seed})").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate::Ack;

    /// A log with `n` records in each crash partition, and a journal of their acks.
    fn crash_log(dir: &Path, n: u64) -> (Log, PathBuf) {
        let log = Log::open(crash_config(dir)).unwrap();
        log.create_topic(CRASH_TOPIC, TopicConfig::new(CRASH_PARTITIONS))
            .unwrap();
        let journal = dir.with_extension("acks");
        let mut lines = Vec::new();
        let mut producer = log.producer();
        for seq in 0..n * u64::from(CRASH_PARTITIONS) {
            let value = format!("record {seq}").into_bytes();
            let p = (seq % u64::from(CRASH_PARTITIONS)) as u32;
            let at = producer
                .send(CRASH_TOPIC, Record::new(&value).partition(p))
                .and_then(Ack::wait)
                .unwrap();
            let hash = xxhash_rust::xxh3::xxh3_64(&value);
            lines.extend_from_slice(&journal_record(at.partition, at.offset.0, hash));
        }
        std::fs::write(&journal, lines).unwrap();
        (log, journal)
    }

    fn append(journal: &Path, record: [u8; JOURNAL_RECORD_BYTES]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(journal)
            .unwrap();
        f.write_all(&record).unwrap();
    }

    #[test]
    fn a_round_checks_new_acks_and_finds_missing_and_changed_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (log, journal) = crash_log(&dir, 50);
        let mut rng = 7u64;
        let mut random = move || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            rng >> 11
        };
        let mut check = CrashCheck::default();
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!(check.acks_checked, 200);
        assert_eq!((check.lost, check.corrupt, check.offset_gaps), (0, 0, 0));
        // A second round checks only what the journal gained: an ack past the partition's end
        // and an ack whose bytes differ from the stored record's.
        append(&journal, journal_record(1, 50, 1));
        append(&journal, journal_record(2, 3, 1));
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!(check.acks_checked, 202);
        assert_eq!((check.lost, check.corrupt), (1, 1));
        // A full check looks at every ack again.
        check.round(&log, &journal, true, &mut random).unwrap();
        assert_eq!(check.acks_checked, 404);
        assert_eq!((check.lost, check.corrupt), (2, 2));
        assert_eq!(check.full_checks, 1);
    }

    #[test]
    fn a_partition_shorter_than_an_earlier_round_read_rechecks_every_ack() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (log, journal) = crash_log(&dir, 40);
        let mut random = || 0;
        let mut check = CrashCheck::default();
        check.round(&log, &journal, false, &mut random).unwrap();
        assert_eq!((check.acks_checked, check.lost), (160, 0));
        drop(log);
        // Records that an earlier round read go missing (what a recovery bug could do): cut
        // the segment in the middle of its frames; recovery keeps a prefix.
        let segment = std::fs::read_dir(dir.join("shard-000"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .expect("a segment file");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(2048)
            .unwrap();
        // Open refuses the cut (the checkpoint says the records were durable); repair takes it.
        let log = Log::open(crash_config(&dir).repair_truncate_damaged(true)).unwrap();
        // Not a full round, and the journal has nothing new: the shorter partitions make the
        // round check every ack.
        check.round(&log, &journal, false, &mut random).unwrap();
        assert!(check.changed > 0);
        assert!(check.lost > 0, "lost {}", check.lost);
        assert_eq!(check.acks_checked, 320);
    }
}
