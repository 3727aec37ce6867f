//! The data directory: snapshots, the journal, and recovery from them.
//!
//! ```text
//! <data dir>/journal/journal-<first seq>.seg     append-only command log (engine::journal)
//! <data dir>/snapshots/snapshot-<seq>.snap       exchange state after command <seq>
//! ```
//!
//! Recovery = the newest snapshot that reads back whole (an unreadable one is reported and
//! the next older one tried) + replay of the journal after it. A torn journal tail (a crash
//! mid-write) is cut and reported; a corrupt record in the middle stops start-up with an
//! error naming its segment and offset.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use fulgur_engine::journal::{self, JournalConfig, JournalWriter, TornTail};
use fulgur_engine::{EngineConfig, Event, Exchange};

use crate::pipeline::Snapshotter;

/// Locks the data directory for this process (an OS file lock on `<data dir>/LOCK`, released
/// when the returned file is dropped or the process dies, even by SIGKILL). A second
/// `fulgur` on the same directory would corrupt its journal, so it is refused.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, String> {
    fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let path = data_dir.join("LOCK");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "data directory {} is in use by another fulgur process",
            data_dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// Snapshots in the directory, newest first.
pub fn list_snapshots(data_dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = snapshot_dir(data_dir);
    let mut v = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(seq) = e.file_name().to_str().and_then(parse_snapshot_name) {
                    v.push((seq, e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    v.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(v)
}

/// What recovery did, for the log and `fulgur journal verify`.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// The snapshot recovered from, if any.
    pub snapshot: Option<(u64, PathBuf)>,
    /// Snapshots that did not read back, newest first, with why.
    pub bad_snapshots: Vec<(PathBuf, String)>,
    pub replayed: u64,
    pub last_seq: u64,
    pub torn_tail: Option<TornTail>,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snapshot {
            Some((seq, p)) => write!(f, "snapshot {} (seq {seq})", p.display())?,
            None => write!(f, "no snapshot")?,
        }
        write!(
            f,
            ", {} journal commands replayed, last seq {}",
            self.replayed, self.last_seq
        )?;
        for (p, why) in &self.bad_snapshots {
            write!(f, "; skipped unreadable snapshot {}: {why}", p.display())?;
        }
        if let Some(t) = &self.torn_tail {
            write!(
                f,
                "; torn journal tail cut: {} at offset {} ({} bytes)",
                t.segment.display(),
                t.offset,
                t.bytes
            )?;
        }
        Ok(())
    }
}

/// Rebuilds the exchange from `data_dir` and opens its journal for appending.
pub fn recover(
    data_dir: &Path,
    engine: EngineConfig,
    journal_cfg: JournalConfig,
) -> Result<(Exchange, u64, JournalWriter, RecoveryReport), String> {
    let mut report = RecoveryReport::default();
    let mut state: Option<(Exchange, u64)> = None;
    for (seq, path) in list_snapshots(data_dir)
        .map_err(|e| format!("{}: {e}", snapshot_dir(data_dir).display()))?
    {
        let read = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| Exchange::read_snapshot(BufReader::new(f)).map_err(|e| e.to_string()));
        match read {
            Ok((ex, s)) if s == seq => {
                report.snapshot = Some((seq, path));
                state = Some((ex, s));
                break;
            }
            Ok((_, s)) => report
                .bad_snapshots
                .push((path, format!("holds seq {s}, its name says {seq}"))),
            Err(e) => report.bad_snapshots.push((path, e)),
        }
    }
    let (mut exchange, snapshot_seq) = state.unwrap_or_else(|| (Exchange::new(engine), 0));
    let jdir = journal_dir(data_dir);
    // Opening for writing cuts a torn tail (and says so) before the replay reads it.
    let (writer, open) = JournalWriter::open(&jdir, journal_cfg).map_err(|e| e.to_string())?;
    report.torn_tail = open.torn_tail;
    let mut out: Vec<Event> = Vec::with_capacity(1024);
    let replay = journal::replay(&jdir, snapshot_seq, |c| {
        // Refusals replay as refusals, as they were journaled: nothing to check here.
        out.clear();
        exchange.apply(&c, &mut out);
    })
    .map_err(|e| e.to_string())?;
    report.replayed = replay.replayed;
    report.last_seq = replay.last_seq.unwrap_or(0).max(snapshot_seq);
    if let Some(next) = writer.next_seq() {
        if next != report.last_seq + 1 {
            return Err(format!(
                "the journal in {} continues at seq {next}, but the state recovered ends at seq {}: \
                 the journal lost commands a snapshot holds (was fsync \"never\"?)",
                jdir.display(),
                report.last_seq
            ));
        }
    }
    Ok((exchange, report.last_seq, writer, report))
}

/// Hands `f` the events of every command with seq in `(after, upto]`, rebuilt from the
/// newest snapshot at or before `after` (or from nothing) and the journal: the engine is
/// deterministic, so these are the events the live exchange published. For readers that
/// missed some (settlement after a restart or a cut-off). Reads only.
pub fn replay_events(
    data_dir: &Path,
    engine: EngineConfig,
    after: u64,
    upto: u64,
    mut f: impl FnMut(u64, &Event),
) -> Result<(), String> {
    let mut state: Option<(Exchange, u64)> = None;
    for (seq, path) in list_snapshots(data_dir)
        .map_err(|e| format!("{}: {e}", snapshot_dir(data_dir).display()))?
        .into_iter()
        .filter(|(seq, _)| *seq <= after)
    {
        let read = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| Exchange::read_snapshot(BufReader::new(f)).map_err(|e| e.to_string()));
        if let Ok((ex, s)) = read {
            if s == seq {
                state = Some((ex, s));
                break;
            }
        }
    }
    let (mut exchange, from) = state.unwrap_or_else(|| (Exchange::new(engine), 0));
    let mut out: Vec<Event> = Vec::with_capacity(1024);
    let mut reached = from;
    journal::replay(journal_dir(data_dir), from, |c| {
        if c.seq > upto {
            return;
        }
        out.clear();
        exchange.apply(&c, &mut out);
        if c.seq > after {
            for e in &out {
                f(c.seq, e);
            }
        }
        reached = c.seq;
    })
    .map_err(|e| e.to_string())?;
    if reached < upto {
        return Err(format!(
            "the journal ends at seq {reached}, before seq {upto} (not yet written?)"
        ));
    }
    Ok(())
}

/// Writes snapshots atomically (temp file, fsync, rename, fsync of the directory) and keeps
/// the newest `keep`.
pub struct FileSnapshotter {
    pub data_dir: PathBuf,
    pub keep: usize,
}

impl FileSnapshotter {
    pub fn write(&self, exchange: &Exchange, last_seq: u64) -> std::io::Result<PathBuf> {
        let dir = snapshot_dir(&self.data_dir);
        fs::create_dir_all(&dir)?;
        let path = dir.join(snapshot_name(last_seq));
        let tmp = dir.join(format!("{}.tmp", snapshot_name(last_seq)));
        {
            let f = File::create(&tmp)?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            exchange.write_snapshot(last_seq, &mut w)?;
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()?;
        for (_, old) in list_snapshots(&self.data_dir)?
            .into_iter()
            .skip(self.keep.max(1))
        {
            let _ = fs::remove_file(old);
        }
        Ok(path)
    }
}

impl Snapshotter for FileSnapshotter {
    fn snapshot(&mut self, exchange: &Exchange, last_seq: u64) -> std::io::Result<()> {
        self.write(exchange, last_seq).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{EngineThread, Pipeline, PipelineConfig};
    use fulgur_engine::flow::liquibook;
    use std::time::Duration;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fulgur-recovery-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// A Liquibook-style flow as plain commands: its setup, then its orders.
    fn liquibook_commands(orders: usize, seed: u64, accounts: u32) -> Vec<fulgur_engine::Command> {
        let flow = liquibook(orders, seed, accounts);
        let mut cmds = flow.setup_commands(0);
        cmds.extend(flow.commands.iter().map(|c| c.command.clone()));
        cmds
    }

    fn cfg() -> EngineConfig {
        EngineConfig {
            max_accounts: 64,
            max_orders: 1 << 16,
            ..EngineConfig::default()
        }
    }

    /// Runs commands through a real pipeline into `dir`, returns the final state hash.
    fn run(
        dir: &Path,
        cmds: &[fulgur_engine::Command],
        snapshot_every: u64,
        clean: bool,
    ) -> (u64, u64) {
        let (ex, seq, writer, _) = recover(dir, cfg(), JournalConfig::default()).unwrap();
        let p = Pipeline::start(
            PipelineConfig {
                snapshot_every,
                ..PipelineConfig::default()
            },
            EngineThread::new(
                ex,
                seq,
                Box::new(writer),
                Box::new(FileSnapshotter {
                    data_dir: dir.to_path_buf(),
                    keep: 2,
                }),
            ),
        );
        let r = p.subscribe().unwrap();
        let g = p.gateway(0);
        for (i, c) in cmds.iter().enumerate() {
            while g.submit(i as u64, c.clone()).is_err() {
                std::thread::yield_now();
            }
        }
        // Wait until every command is published (= durable).
        let mut seen = 0;
        while seen < cmds.len() {
            if let Some(b) = r.next_timeout(Duration::from_secs(10)).unwrap() {
                seen += b.entries.len();
            }
        }
        if clean {
            let e = p.shutdown();
            (e.exchange.state_hash(), e.last_seq)
        } else {
            // A crash: the pipeline is leaked, nothing is flushed or snapshotted beyond
            // what was already durable.
            let last = p.stats.last_seq.load(std::sync::atomic::Ordering::Acquire);
            std::mem::forget(p);
            (0, last)
        }
    }

    #[test]
    fn recovery_rebuilds_the_same_state_from_snapshots_and_journal() {
        let dir = temp("same");
        let cmds = liquibook_commands(6_000, 5, 20);
        let (first, _) = cmds.split_at(3_000);
        // Snapshots every 1,000 commands, then a clean stop (a final snapshot).
        let (h1, s1) = run(&dir, first, 1_000, true);
        let (ex, seq, _, report) = recover(&dir, cfg(), JournalConfig::default()).unwrap();
        assert_eq!((ex.state_hash(), seq), (h1, s1));
        assert_eq!(report.replayed, 0, "the shutdown snapshot holds everything");
        assert!(
            list_snapshots(&dir).unwrap().len() <= 2,
            "old snapshots are pruned"
        );
        // A reference: the same commands applied directly, in the same order.
        let mut reference = Exchange::new(cfg());
        let mut out = Vec::new();
        for (i, c) in first.iter().enumerate() {
            reference.apply(
                &fulgur_engine::Sequenced {
                    seq: i as u64 + 1,
                    ts_ns: 0,
                    command: c.clone(),
                },
                &mut out,
            );
        }
        // Timestamps differ (the pipeline stamps the wall clock), but nothing in this flow
        // depends on time, so the state is the same.
        assert_eq!(reference.state_hash(), h1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_are_rebuilt_from_a_snapshot_and_the_journal_as_they_were_published() {
        let dir = temp("replay-events");
        let cmds = liquibook_commands(4_000, 5, 20);
        // Snapshots every 1,000 commands: the replay starts from one of them.
        let (_, last) = run(&dir, &cmds, 1_000, true);
        // The events as published: the commands applied from the start.
        let mut ex = Exchange::new(cfg());
        let mut out = Vec::new();
        let mut published = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            out.clear();
            let seq = i as u64 + 1;
            ex.apply(
                &fulgur_engine::Sequenced {
                    seq,
                    ts_ns: 0,
                    command: c.clone(),
                },
                &mut out,
            );
            published.extend(out.iter().map(|e| (seq, *e)));
        }
        for (after, upto) in [(0, 10), (1_500, 2_750), (2_999, last)] {
            let mut got = Vec::new();
            replay_events(&dir, cfg(), after, upto, |seq, e| got.push((seq, *e))).unwrap();
            let want: Vec<_> = published
                .iter()
                .filter(|(s, _)| *s > after && *s <= upto)
                .copied()
                .collect();
            assert!(!want.is_empty());
            assert_eq!(got, want, "({after}, {upto}]");
        }
        let e = replay_events(&dir, cfg(), 0, last + 5, |_, _| {}).unwrap_err();
        assert!(e.contains("ends at seq"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_loses_nothing_published_and_a_torn_tail_is_cut() {
        let dir = temp("crash");
        let cmds = liquibook_commands(4_000, 6, 20);
        let (_, published) = run(&dir, &cmds, 0, false);
        // Tear the last record, as a crash mid-write would.
        let jdir = journal_dir(&dir);
        let seg = journal::list_segments(&jdir).unwrap().pop().unwrap();
        let len = fs::metadata(&seg.path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .unwrap()
            .set_len(len - 50)
            .unwrap();
        let (ex, seq, _, report) = recover(&dir, cfg(), JournalConfig::default()).unwrap();
        assert!(report.torn_tail.is_some(), "{report}");
        assert_eq!(seq, published - 1, "only the torn record is gone");
        ex.check_invariants().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_data_directory_is_used_by_one_process_at_a_time() {
        let dir = temp("lock");
        let held = lock_data_dir(&dir).unwrap();
        let e = lock_data_dir(&dir).unwrap_err();
        assert!(e.contains("in use by another fulgur process"), "{e}");
        drop(held);
        lock_data_dir(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_snapshot_falls_back_to_an_older_one() {
        let dir = temp("badsnap");
        let cmds = liquibook_commands(3_000, 7, 20);
        let (h, s) = run(&dir, &cmds, 1_000, true);
        let snaps = list_snapshots(&dir).unwrap();
        assert!(snaps.len() >= 2);
        // Damage the newest.
        let mut bytes = fs::read(&snaps[0].1).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(&snaps[0].1, bytes).unwrap();
        let (ex, seq, _, report) = recover(&dir, cfg(), JournalConfig::default()).unwrap();
        assert_eq!(report.bad_snapshots.len(), 1, "{report}");
        assert_eq!((ex.state_hash(), seq), (h, s), "{report}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
