//! `fulgur bench pipeline`: commands through a gateway queue, the journal (fsync per batch by
//! default) and the engine thread, to a reader: no network. Latency is from a command's
//! arrival (its due time in open loop, its accepted submit in a flood) to the moment a reader
//! holds its published events; "added" subtracts the batch's fsync wait, which is reported
//! on its own.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulgur_engine::flow::Flow;
use fulgur_engine::journal::{FsyncPolicy, JournalConfig, JournalWriter};
use fulgur_engine::{Command, Exchange, Sequenced};
use hdrhistogram::Histogram;

use crate::bench::{config_for, Percentiles};
use crate::pipeline::{EngineThread, NoSnapshots, Pipeline, PipelineConfig};

#[derive(Clone, Debug)]
pub struct PipelineReport {
    pub flow: String,
    pub fsync: String,
    pub rate: Option<f64>,
    pub commands: u64,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub batches: u64,
    pub busy_retries: u64,
    /// Arrival to published, all of it.
    pub latency: Percentiles,
    /// The same minus the batch's fsync wait: what the pipeline itself adds.
    pub added: Percentiles,
    /// One sample per fsync.
    pub fsync_ns: Percentiles,
    pub syncs: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// Runs the flow's commands (after its setup and warm-up, applied directly) through a
/// pipeline journaling into `dir`.
/// `journal: false` replaces the journal with nothing: what the queues, threads and engine
/// cost without the disk.
pub fn run(
    flow: &Flow,
    rate: Option<f64>,
    fsync: FsyncPolicy,
    dir: &Path,
    journal: bool,
) -> std::io::Result<PipelineReport> {
    let mut ex = Exchange::new(config_for(flow, 1));
    ex.prefault();
    let mut out = Vec::new();
    let mut seq = 0;
    let mut apply = |ex: &mut Exchange, command: Command| {
        seq += 1;
        out.clear();
        ex.apply(
            &Sequenced {
                seq,
                ts_ns: 0,
                command,
            },
            &mut out,
        );
    };
    for c in flow.setup_commands(0) {
        apply(&mut ex, c);
    }
    let cmds = flow.remapped(0, 0, 0);
    let (warm, measured) = cmds.split_at(flow.warmup.min(cmds.len()));
    for c in warm {
        apply(&mut ex, c.command.clone());
    }
    let last_seq = seq;
    let durable: Box<dyn crate::pipeline::Durable> = if journal {
        let (writer, _) = JournalWriter::open(
            dir,
            JournalConfig {
                fsync,
                ..JournalConfig::default()
            },
        )
        .map_err(std::io::Error::other)?;
        Box::new(writer)
    } else {
        Box::new(crate::pipeline::NoJournal)
    };
    let cfg = PipelineConfig {
        gateways: 1,
        ..PipelineConfig::default()
    };
    let p = Pipeline::start(
        cfg,
        EngineThread::new(ex, last_seq, durable, Box::new(NoSnapshots)),
    );
    let reader = p.subscribe().expect("a reader slot");
    let gw = p.gateway(0);
    let n = measured.len();
    let arrival: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let t0 = Instant::now();
    let arrivals = arrival.clone();
    let ready = Arc::new(std::sync::Barrier::new(2));
    let consumer_ready = ready.clone();
    let first_gw = gw.clone();
    let consumer = std::thread::spawn(move || {
        // The reader is registered once a first command comes back to it; waiting here
        // also makes this thread the one it wakes.
        first_gw
            .submit(u64::MAX, Command::Tick)
            .expect("an empty queue");
        while reader
            .next_timeout(Duration::from_secs(10))
            .expect("not cut off")
            .is_none()
        {}
        consumer_ready.wait();
        let (mut lat, mut added, mut sync) = (hist(), hist(), hist());
        let (mut seen, mut batches, mut last_ns) = (0usize, 0u64, 0u64);
        while seen < n {
            let Some(b) = reader
                .next_timeout(Duration::from_secs(30))
                .expect("not cut off")
            else {
                panic!("no batch for 30 s after {seen} of {n} commands");
            };
            let now = t0.elapsed().as_nanos() as u64;
            last_ns = now;
            batches += 1;
            if b.sync_ns > 0 {
                sync.saturating_record(b.sync_ns);
            }
            for e in &b.entries {
                let Some(a) = arrivals.get(e.origin.request as usize) else {
                    continue;
                };
                let l = now.saturating_sub(a.load(Ordering::Acquire)).max(1);
                lat.saturating_record(l);
                added.saturating_record(l.saturating_sub(b.sync_ns).max(1));
                seen += 1;
            }
        }
        (lat, added, sync, batches, last_ns)
    });
    ready.wait();
    let start_ns = t0.elapsed().as_nanos() as u64;
    let interval_ns = rate.map(|r| 1e9 / r);
    let mut busy_retries = 0u64;
    for (i, c) in measured.iter().enumerate() {
        let at = match interval_ns {
            Some(iv) => {
                let due = start_ns + (i as f64 * iv) as u64;
                // Sleep, don't spin, until the command is due: on two cores a spinning
                // producer would take a core from the threads it measures. Commands that
                // fell due meanwhile go out at once; their arrival is still their due time.
                loop {
                    let now = t0.elapsed().as_nanos() as u64;
                    if now >= due {
                        break;
                    }
                    let wait = due - now;
                    if wait > 20_000 {
                        std::thread::sleep(Duration::from_nanos(wait - 10_000));
                    } else {
                        std::thread::yield_now();
                    }
                }
                due
            }
            None => t0.elapsed().as_nanos() as u64,
        };
        arrival[i].store(at, Ordering::Release);
        let mut cmd = c.command.clone();
        loop {
            match gw.submit(i as u64, cmd) {
                Ok(()) => break,
                Err(busy) => {
                    // A benchmark producer retries; a real gateway answers "busy". Yield:
                    // on two cores a spinning producer starves the threads it waits for.
                    busy_retries += 1;
                    cmd = busy.0;
                    std::thread::yield_now();
                }
            }
        }
    }
    let (lat, added, sync, batches, last_ns) = consumer.join().expect("reader thread");
    let syncs = p.stats.syncs.load(Ordering::Relaxed);
    p.shutdown();
    let seconds = last_ns.saturating_sub(start_ns).max(1) as f64 / 1e9;
    let of = |h: &Histogram<u64>| {
        if h.is_empty() {
            Percentiles::default()
        } else {
            Percentiles::of(h)
        }
    };
    Ok(PipelineReport {
        flow: flow.name.clone(),
        fsync: if journal {
            format!("{fsync:?}")
        } else {
            "no journal".into()
        },
        rate,
        commands: n as u64,
        seconds,
        commands_per_sec: n as f64 / seconds,
        batches,
        busy_retries,
        latency: of(&lat),
        added: of(&added),
        fsync_ns: of(&sync),
        syncs,
    })
}

impl PipelineReport {
    pub fn json(&self) -> String {
        format!(
            "{{\"flow\":\"{}\",\"fsync\":\"{}\",\"rate\":{},\"commands\":{},\"seconds\":{:.6},\"commands_per_sec\":{:.0},\"batches\":{},\"busy_retries\":{},\"syncs\":{},\"latency_ns\":{},\"added_latency_ns\":{},\"fsync_ns\":{}}}",
            self.flow,
            self.fsync,
            self.rate.map_or("null".to_string(), |r| format!("{r:.0}")),
            self.commands,
            self.seconds,
            self.commands_per_sec,
            self.batches,
            self.busy_retries,
            self.syncs,
            self.latency.json(),
            self.added.json(),
            self.fsync_ns.json()
        )
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<30}{v}");
        };
        let p = |x: &Percentiles| {
            format!(
                "p50 {} p90 {} p99 {} p99.9 {} max {}",
                x.p50, x.p90, x.p99, x.p999, x.max
            )
        };
        row("flow", self.flow.clone());
        row("fsync", self.fsync.clone());
        row(
            "offered rate",
            self.rate
                .map_or("flood".to_string(), |r| format!("{:.2} M/s", r / 1e6)),
        );
        row("commands", self.commands.to_string());
        row(
            "commands/s",
            format!("{:.2} M", self.commands_per_sec / 1e6),
        );
        row(
            "batches (mean size)",
            format!(
                "{} ({:.1})",
                self.batches,
                self.commands as f64 / self.batches.max(1) as f64
            ),
        );
        row("fsyncs", self.syncs.to_string());
        row("busy retries", self.busy_retries.to_string());
        row("latency ns", p(&self.latency));
        row("added ns (without fsync)", p(&self.added));
        row("fsync ns", p(&self.fsync_ns));
        let goals = [
            (
                format!(">= 2 M commands/s ({:.2} M)", self.commands_per_sec / 1e6),
                self.commands_per_sec >= 2e6,
            ),
            (
                format!("p99 added by the pipeline < 20 us ({} ns)", self.added.p99),
                self.added.p99 < 20_000,
            ),
        ];
        for (g, met) in goals {
            row(if met { "goal met" } else { "goal NOT met" }, g);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_comes_through_the_journal_and_is_replayable() {
        let flow = fulgur_engine::flow::liquibook(20_000, 3, 20);
        let dir = std::env::temp_dir().join(format!("fulgur-pipebench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = run(&flow, None, FsyncPolicy::EveryBatch, &dir, true).unwrap();
        assert_eq!(r.commands, 20_000);
        assert!(r.syncs >= 1 && r.batches >= 1);
        // The journal holds the reader's first Tick and every measured command, in order.
        let mut seqs = Vec::new();
        // The setup was applied before the pipeline started: the journal begins after it.
        let first = fulgur_engine::journal::verify(&dir)
            .unwrap()
            .first_seq
            .unwrap();
        let summary =
            fulgur_engine::journal::replay(&dir, first - 1, |c| seqs.push(c.seq)).unwrap();
        assert_eq!(summary.replayed, 20_001);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
