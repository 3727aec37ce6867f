//! `fulgur bench`: replay a flow through the engine and measure it.
//!
//! - Throughput: the flow is built in memory first, each replay's commands are remapped
//!   into fresh markets of one exchange before its clock starts, then applied in a tight
//!   loop; events are consumed (trades counted) as a reader would.
//! - Latency, open loop: command `i` is due at `t0 + i / rate`; its latency is its
//!   completion time minus its due time, so a stall counts against every command queued
//!   behind it (no coordinated omission). Recorded in HdrHistograms, overall and per
//!   command kind.

use std::fmt::Write as _;
use std::time::Instant;

use fulgur_engine::flow::Flow;
use fulgur_engine::{CommandKind, EngineConfig, Event, Exchange, Sequenced};
use hdrhistogram::Histogram;

use crate::alloc::{allocations, peak_rss_bytes};

/// What a bench run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub flow: String,
    pub runs: usize,
    /// Commands measured over all runs.
    pub commands: u64,
    /// Wall time of the measured loops, all runs.
    pub seconds: f64,
    /// Median over runs (throughput) or overall (latency).
    pub commands_per_sec: f64,
    pub commands_per_sec_min: f64,
    pub commands_per_sec_max: f64,
    pub trades: u64,
    pub rejected: u64,
    pub allocations_per_command: f64,
    pub peak_rss_bytes: u64,
    pub book_bytes_per_order_slot: f64,
    pub resting_orders: usize,
    pub state_hash: u64,
    pub timer_overhead_ns: u64,
    pub executions_matched: u64,
    pub executions_total: u64,
    /// Open-loop latency (latency mode only): overall and per command kind.
    pub rate: Option<f64>,
    pub latency: Option<Percentiles>,
    pub latency_by_kind: Vec<(CommandKind, u64, Percentiles)>,
    /// Service time: from the moment the engine could start a command (its due time, or the
    /// previous command's completion if later) to its completion. No queueing in it.
    pub service: Option<Percentiles>,
    /// The machine's own stalls, measured in the same run by a bare clock-spin loop.
    pub jitter: Option<Jitter>,
}

/// How often a bare spin loop on this machine loses the CPU: gaps between consecutive clock
/// reads, per second. An open-loop tail can be no better than this.
#[derive(Clone, Copy, Debug, Default)]
pub struct Jitter {
    pub seconds: f64,
    pub gaps_over_1us_per_sec: f64,
    pub gaps_over_20us_per_sec: f64,
    pub gaps_over_100us_per_sec: f64,
    pub max_gap_ns: u64,
}

/// Spins for `seconds`, counting gaps between consecutive clock reads.
pub fn machine_jitter(seconds: f64) -> Jitter {
    let t0 = Instant::now();
    let limit = (seconds * 1e9) as u64;
    let (mut last, mut g1, mut g20, mut g100, mut max) = (0u64, 0u64, 0u64, 0u64, 0u64);
    loop {
        let now = t0.elapsed().as_nanos() as u64;
        let gap = now - last;
        last = now;
        g1 += (gap > 1_000) as u64;
        g20 += (gap > 20_000) as u64;
        g100 += (gap > 100_000) as u64;
        max = max.max(gap);
        if now >= limit {
            break;
        }
    }
    let s = last as f64 / 1e9;
    Jitter {
        seconds: s,
        gaps_over_1us_per_sec: g1 as f64 / s,
        gaps_over_20us_per_sec: g20 as f64 / s,
        gaps_over_100us_per_sec: g100 as f64 / s,
        max_gap_ns: max,
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"p9999\":{},\"max\":{}}}",
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max
        )
    }
}

/// Capacities for `runs` replays of a flow: every order of every replay could rest. Order
/// capacity is a power of two, where the id indexes cost exactly 16 bytes a slot.
pub fn config_for(flow: &Flow, runs: usize) -> EngineConfig {
    let n = (flow.commands.len() as u64 * runs as u64)
        .next_power_of_two()
        .clamp(1 << 16, 1 << 31) as u32;
    let markets = (flow.markets.len() * runs).max(1) as u32;
    EngineConfig {
        max_orders: n,
        max_orders_per_market: n,
        max_accounts: (flow.accounts + 1).max(2),
        max_assets: flow.assets.len().max(1) as u32,
        max_markets: markets,
        max_gtd_orders: n,
        ..EngineConfig::default()
    }
}

/// One exchange that replays a flow again and again into fresh markets.
pub struct Replayer<'f> {
    flow: &'f Flow,
    pub exchange: Exchange,
    pub out: Vec<Event>,
    seq: u64,
    runs: u32,
}

/// One replay's commands, remapped and ready, plus what to check.
pub struct Prepared {
    pub commands: Vec<Sequenced>,
    /// `expect[i]`: the engine order id the first trade of command `i` should hit, or 0.
    pub expect: Vec<u64>,
}

impl<'f> Replayer<'f> {
    pub fn new(flow: &'f Flow, runs: usize) -> Self {
        let mut exchange = Exchange::new(config_for(flow, runs));
        exchange.prefault();
        Replayer {
            flow,
            exchange,
            out: Vec::with_capacity(1 << 16),
            seq: 0,
            runs: 0,
        }
    }

    /// Sets up the next replay's markets and funding; returns its commands (untimed work).
    pub fn prepare(&mut self) -> Prepared {
        let rep = self.runs;
        self.runs += 1;
        for command in self.flow.setup_commands(rep) {
            self.seq += 1;
            self.out.clear();
            let c = Sequenced {
                seq: self.seq,
                ts_ns: 0,
                command,
            };
            self.exchange.apply(&c, &mut self.out);
            assert!(
                !self
                    .out
                    .iter()
                    .any(|e| matches!(e, Event::CommandRejected { .. })),
                "setup of flow {} refused: {:?}",
                self.flow.name,
                self.out
            );
        }
        let market_offset = rep * self.flow.markets.len() as u32;
        let id_offset = self.exchange.next_order_id() - 1;
        let mut commands = self.flow.remapped(market_offset, id_offset, self.seq);
        self.seq += commands.len() as u64;
        let mut expect = vec![0; commands.len()];
        for &(i, id) in &self.flow.expected_makers {
            if let Some(e) = expect.get_mut(i as usize) {
                *e = id + id_offset;
            }
        }
        // The flow's warm-up (a book fill) is applied now, before any clock starts.
        let warmup = self.flow.warmup.min(commands.len());
        for c in commands.drain(..warmup) {
            self.out.clear();
            self.exchange.apply(&c, &mut self.out);
        }
        expect.drain(..warmup);
        Prepared { commands, expect }
    }
}

/// Counters a measured loop keeps while consuming events.
#[derive(Default)]
struct Tally {
    trades: u64,
    rejected: u64,
    matched: u64,
    total: u64,
}

impl Tally {
    #[inline]
    fn consume(&mut self, out: &[Event], expect: u64) {
        for e in out {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::OrderRejected { .. }
                | Event::CancelRejected { .. }
                | Event::CommandRejected { .. } => self.rejected += 1,
                _ => {}
            }
        }
        if expect != 0 {
            self.total += 1;
            let first = out.iter().find_map(|e| match e {
                Event::Trade { maker_order, .. } => Some(*maker_order),
                _ => None,
            });
            if first == Some(expect) {
                self.matched += 1;
            }
        }
    }
}

/// Median clock-read cost, ns: what each latency sample carries as overhead.
pub fn timer_overhead_ns() -> u64 {
    let mut samples: Vec<u64> = (0..101)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(Instant::now());
            }
            t0.elapsed().as_nanos() as u64 / 1000
        })
        .collect();
    samples.sort_unstable();
    samples[50]
}

fn finish(mut r: Report, rep: &Replayer, tally: &Tally, allocs: u64) -> Report {
    r.trades = tally.trades;
    r.rejected = tally.rejected;
    r.executions_matched = tally.matched;
    r.executions_total = tally.total;
    r.allocations_per_command = allocs as f64 / r.commands.max(1) as f64;
    r.peak_rss_bytes = peak_rss_bytes().unwrap_or(0);
    r.resting_orders = rep.exchange.resting_orders();
    r.book_bytes_per_order_slot =
        rep.exchange.book_heap_bytes() as f64 / rep.exchange.config().max_orders as f64;
    r.state_hash = rep.exchange.state_hash();
    r.timer_overhead_ns = timer_overhead_ns();
    r
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Throughput: `runs` replays into fresh markets of one exchange.
pub fn throughput(flow: &Flow, runs: usize) -> Report {
    let runs = runs.max(1);
    let mut rep = Replayer::new(flow, runs);
    let mut tally = Tally::default();
    let mut rates = Vec::with_capacity(runs);
    let mut seconds = 0.0;
    let mut allocs = 0;
    let mut commands = 0;
    for _ in 0..runs {
        let p = rep.prepare();
        let out = &mut rep.out;
        let a0 = allocations();
        let t0 = Instant::now();
        for (c, &expect) in p.commands.iter().zip(&p.expect) {
            out.clear();
            rep.exchange.apply(c, out);
            tally.consume(out, expect);
        }
        let s = t0.elapsed().as_secs_f64();
        allocs += allocations() - a0;
        seconds += s;
        commands += p.commands.len() as u64;
        rates.push(p.commands.len() as f64 / s);
    }
    let lo = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().cloned().fold(0.0, f64::max);
    let r = Report {
        flow: flow.name.clone(),
        runs,
        commands,
        seconds,
        commands_per_sec: median(&mut rates),
        commands_per_sec_min: lo,
        commands_per_sec_max: hi,
        ..Report::default()
    };
    finish(r, &rep, &tally, allocs)
}

/// Open-loop latency at `rate` commands/s over `runs` replays.
pub fn latency(flow: &Flow, runs: usize, rate: f64) -> Report {
    assert!(rate > 0.0, "rate must be positive");
    let runs = runs.max(1);
    let mut rep = Replayer::new(flow, runs);
    let prepared: Vec<Prepared> = (0..runs).map(|_| rep.prepare()).collect();
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds");
    // One histogram per command kind; the overall one is their sum, so each command costs
    // one record and one clock read (the completion time doubles as "now" for the next wait).
    let mut by_kind: Vec<Histogram<u64>> = CommandKind::ALL.iter().map(|_| new_hist()).collect();
    let mut service = new_hist();
    let jitter = machine_jitter(0.5);
    let mut tally = Tally::default();
    let interval_ns = 1e9 / rate;
    let mut i = 0u64;
    let a0 = allocations();
    let t0 = Instant::now();
    let elapsed_ns = || t0.elapsed().as_nanos() as u64;
    let mut now = 0u64;
    for p in &prepared {
        for (c, &expect) in p.commands.iter().zip(&p.expect) {
            let due = (i as f64 * interval_ns) as u64;
            i += 1;
            // Wait for the command's due time; a late command is already queued: no wait.
            while now < due {
                std::hint::spin_loop();
                now = elapsed_ns();
            }
            // `now` is when the engine could start: the due time (the spin just reached it)
            // or, for a late command, the previous completion.
            let start = now;
            rep.out.clear();
            rep.exchange.apply(c, &mut rep.out);
            now = elapsed_ns();
            by_kind[c.command.kind() as usize].saturating_record((now - due).max(1));
            service.saturating_record((now - start).max(1));
            tally.consume(&rep.out, expect);
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let allocs = allocations() - a0;
    let mut all = new_hist();
    for h in &by_kind {
        all.add(h).expect("same bounds");
    }
    let latency_by_kind = CommandKind::ALL
        .iter()
        .zip(&by_kind)
        .filter(|(_, h)| !h.is_empty())
        .map(|(k, h)| (*k, h.len(), Percentiles::of(h)))
        .collect();
    let r = Report {
        flow: flow.name.clone(),
        runs,
        commands: i,
        seconds,
        commands_per_sec: i as f64 / seconds,
        commands_per_sec_min: i as f64 / seconds,
        commands_per_sec_max: i as f64 / seconds,
        rate: Some(rate),
        latency: Some(Percentiles::of(&all)),
        latency_by_kind,
        service: Some(Percentiles::of(&service)),
        jitter: Some(jitter),
        ..Report::default()
    };
    finish(r, &rep, &tally, allocs)
}

impl Report {
    pub fn json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"flow\":\"{}\",\"runs\":{},\"commands\":{},\"seconds\":{:.6},\"commands_per_sec\":{:.0},\"commands_per_sec_min\":{:.0},\"commands_per_sec_max\":{:.0},\"trades\":{},\"rejected\":{},\"allocations_per_command\":{},\"peak_rss_bytes\":{},\"book_bytes_per_order_slot\":{:.1},\"resting_orders\":{},\"state_hash\":\"{:016x}\",\"timer_overhead_ns\":{}",
            self.flow,
            self.runs,
            self.commands,
            self.seconds,
            self.commands_per_sec,
            self.commands_per_sec_min,
            self.commands_per_sec_max,
            self.trades,
            self.rejected,
            self.allocations_per_command,
            self.peak_rss_bytes,
            self.book_bytes_per_order_slot,
            self.resting_orders,
            self.state_hash,
            self.timer_overhead_ns
        );
        if self.executions_total > 0 {
            let _ = write!(
                s,
                ",\"executions_matched\":{},\"executions_total\":{}",
                self.executions_matched, self.executions_total
            );
        }
        if let (Some(rate), Some(l)) = (self.rate, self.latency) {
            let _ = write!(s, ",\"rate\":{rate:.0},\"latency_ns\":{}", l.json());
            s.push_str(",\"latency_ns_by_kind\":{");
            for (i, (k, n, p)) in self.latency_by_kind.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(
                    s,
                    "{sep}\"{k:?}\":{{\"count\":{n},\"latency_ns\":{}}}",
                    p.json()
                );
            }
            s.push('}');
        }
        if let Some(p) = self.service {
            let _ = write!(s, ",\"service_ns\":{}", p.json());
        }
        if let Some(j) = self.jitter {
            let _ = write!(
                s,
                ",\"machine_jitter\":{{\"seconds\":{:.3},\"gaps_over_1us_per_sec\":{:.0},\"gaps_over_20us_per_sec\":{:.0},\"gaps_over_100us_per_sec\":{:.0},\"max_gap_ns\":{}}}",
                j.seconds, j.gaps_over_1us_per_sec, j.gaps_over_20us_per_sec, j.gaps_over_100us_per_sec, j.max_gap_ns
            );
        }
        s.push('}');
        s
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<30}{v}");
        };
        row("flow", self.flow.clone());
        row("runs", self.runs.to_string());
        row("commands (all runs)", self.commands.to_string());
        row("trades", self.trades.to_string());
        row("rejected commands", self.rejected.to_string());
        row("seconds (all runs)", format!("{:.4}", self.seconds));
        match self.latency {
            None => {
                row(
                    "commands/s (median run)",
                    format!("{:.2} M", self.commands_per_sec / 1e6),
                );
                row(
                    "commands/s (min .. max)",
                    format!(
                        "{:.2} .. {:.2} M",
                        self.commands_per_sec_min / 1e6,
                        self.commands_per_sec_max / 1e6
                    ),
                );
            }
            Some(l) => {
                row(
                    "offered rate",
                    format!("{:.2} M/s", self.rate.unwrap_or(0.0) / 1e6),
                );
                row(
                    "achieved rate",
                    format!("{:.2} M/s", self.commands_per_sec / 1e6),
                );
                row(
                    "latency ns p50/p90/p99",
                    format!("{} / {} / {}", l.p50, l.p90, l.p99),
                );
                row(
                    "latency ns p99.9/p99.99/max",
                    format!("{} / {} / {}", l.p999, l.p9999, l.max),
                );
                if let Some(p) = self.service {
                    row(
                        "service ns p50/p99/p99.9",
                        format!("{} / {} / {} (max {})", p.p50, p.p99, p.p999, p.max),
                    );
                }
                if let Some(j) = self.jitter {
                    row(
                        "machine stalls/s >1/20/100us",
                        format!(
                            "{:.0} / {:.0} / {:.0} (max {} us, bare spin loop)",
                            j.gaps_over_1us_per_sec,
                            j.gaps_over_20us_per_sec,
                            j.gaps_over_100us_per_sec,
                            j.max_gap_ns / 1000
                        ),
                    );
                }
                for (k, n, p) in &self.latency_by_kind {
                    row(
                        &format!("  {k:?}"),
                        format!(
                            "n={n} p50 {} p99 {} p99.9 {} max {}",
                            p.p50, p.p99, p.p999, p.max
                        ),
                    );
                }
            }
        }
        if self.executions_total > 0 {
            row(
                "executions matched",
                format!(
                    "{} / {} ({:.3}%)",
                    self.executions_matched,
                    self.executions_total,
                    100.0 * self.executions_matched as f64 / self.executions_total as f64
                ),
            );
        }
        row(
            "allocations/command",
            format!("{:.6}", self.allocations_per_command),
        );
        row(
            "book bytes/order slot",
            format!("{:.1}", self.book_bytes_per_order_slot),
        );
        row("resting orders at end", self.resting_orders.to_string());
        row(
            "peak RSS",
            format!(
                "{:.1} MiB",
                self.peak_rss_bytes as f64 / (1u64 << 20) as f64
            ),
        );
        row("timer overhead", format!("{} ns", self.timer_overhead_ns));
        row("state hash", format!("{:016x}", self.state_hash));
        for (goal, met) in self.goals() {
            row(if met { "goal met" } else { "goal NOT met" }, goal);
        }
        s
    }

    /// The project's goals for this kind of run, each with whether this run met it.
    pub fn goals(&self) -> Vec<(String, bool)> {
        let mut g = vec![
            (
                format!(
                    "0 allocations per command ({})",
                    self.allocations_per_command
                ),
                self.allocations_per_command == 0.0,
            ),
            (
                format!(
                    "< 100 bytes per resting order ({:.1})",
                    self.book_bytes_per_order_slot
                ),
                self.book_bytes_per_order_slot < 100.0,
            ),
        ];
        match (self.latency, self.service) {
            (None, _) if matches!(self.flow.as_str(), "liquibook" | "lobster") => g.push((
                format!(
                    ">= 10 M commands/s on {} ({:.2} M)",
                    self.flow,
                    self.commands_per_sec / 1e6
                ),
                self.commands_per_sec >= 10e6,
            )),
            (Some(l), Some(sv)) => {
                g.push((
                    format!("engine p99 per command < 1 us (service p99 {} ns)", sv.p99),
                    sv.p99 < 1_000,
                ));
                if self.rate.is_some_and(|r| r >= 5e6) {
                    g.push((
                        format!("open loop p99 < 2 us ({} ns)", l.p99),
                        l.p99 < 2_000,
                    ));
                    g.push((
                        format!("open loop p99.9 < 10 us ({} ns)", l.p999),
                        l.p999 < 10_000,
                    ));
                }
            }
            _ => {}
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_and_latency_replay_the_same_state() {
        let flow = fulgur_engine::flow::liquibook(5_000, 1, 50);
        let t = throughput(&flow, 2);
        let l = latency(&flow, 2, 1e6);
        assert_eq!(t.commands, 10_000);
        assert_eq!(t.rejected, 0);
        assert!(t.trades > 0);
        assert_eq!((t.trades, t.state_hash), (l.trades, l.state_hash));
        let lat = l.latency.unwrap();
        assert!(lat.p50 > 0 && lat.p50 <= lat.p99 && lat.p99 <= lat.max);
        let j = l.json();
        for key in [
            "\"commands\":",
            "\"commands_per_sec\":",
            "\"latency_ns\":{\"p50\"",
            "\"p9999\"",
            "\"allocations_per_command\"",
            "\"peak_rss_bytes\"",
            "\"state_hash\"",
            "\"timer_overhead_ns\"",
        ] {
            assert!(j.contains(key), "{key} missing from {j}");
        }
    }
}
