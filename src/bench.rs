//! `fulgur bench`: replay a flow through the engine and measure it.

use std::time::Instant;

use fulgur_engine::flow::Flow;
use fulgur_engine::{EngineConfig, Event, Exchange};

use crate::alloc::{allocations, peak_rss_bytes};

/// Figures of one throughput run.
pub struct Run {
    pub commands: u64,
    pub seconds: f64,
    pub trades: u64,
    pub allocations: u64,
    pub resting: usize,
    pub book_bytes: usize,
    pub max_orders: u32,
    pub state_hash: u64,
}

/// Capacities sized for a flow: every order of it could rest.
pub fn config_for(flow: &Flow) -> EngineConfig {
    let n = (flow.commands.len() as u32).clamp(1 << 16, u32::MAX - 1);
    EngineConfig {
        max_orders: n,
        max_orders_per_market: n,
        max_accounts: 1 << 16,
        ..EngineConfig::default()
    }
}

/// Applies the setup, then times the flow's commands in a tight loop. Events are consumed
/// (trades counted) as a real reader would, into a buffer cleared per command.
pub fn throughput_once(flow: &Flow) -> Run {
    let mut ex = Exchange::new(config_for(flow));
    ex.prefault();
    let mut out: Vec<Event> = Vec::with_capacity(1 << 16);
    for c in &flow.setup {
        ex.apply(c, &mut out);
    }
    let mut trades = 0u64;
    let allocs_before = allocations();
    let t0 = Instant::now();
    for c in &flow.commands {
        out.clear();
        ex.apply(c, &mut out);
        for e in &out {
            if let Event::Trade { .. } = e {
                trades += 1;
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let allocations = allocations() - allocs_before;
    Run {
        commands: flow.commands.len() as u64,
        seconds,
        trades,
        allocations,
        resting: ex.resting_orders(),
        book_bytes: ex.book_heap_bytes(),
        max_orders: ex.config().max_orders,
        state_hash: ex.state_hash(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn throughput(name: &str, flow: &Flow, repeat: usize, json: bool) {
    let runs: Vec<Run> = (0..repeat.max(1)).map(|_| throughput_once(flow)).collect();
    let hashes_agree = runs.iter().all(|r| r.state_hash == runs[0].state_hash);
    assert!(hashes_agree, "the same flow gave different state hashes");
    let mut rates: Vec<f64> = runs.iter().map(|r| r.commands as f64 / r.seconds).collect();
    let (lo, hi) = (
        rates.iter().cloned().fold(f64::INFINITY, f64::min),
        rates.iter().cloned().fold(0.0, f64::max),
    );
    let med = median(&mut rates);
    let mut secs: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let med_secs = median(&mut secs);
    let last = runs.last().expect("at least one run");
    let allocs_per_cmd = runs.iter().map(|r| r.allocations).sum::<u64>() as f64
        / runs.iter().map(|r| r.commands).sum::<u64>() as f64;
    let bytes_per_order = last.book_bytes as f64 / last.max_orders as f64;
    let rss = peak_rss_bytes().unwrap_or(0);
    if json {
        println!(
            "{{\"flow\":\"{name}\",\"runs\":{},\"commands\":{},\"seconds\":{med_secs:.6},\"commands_per_sec\":{med:.0},\"commands_per_sec_min\":{lo:.0},\"commands_per_sec_max\":{hi:.0},\"trades\":{},\"allocations_per_command\":{allocs_per_cmd},\"resting_orders\":{},\"book_bytes_per_order_slot\":{bytes_per_order:.1},\"peak_rss_bytes\":{rss},\"state_hash\":\"{:016x}\"}}",
            runs.len(), last.commands, last.trades, last.resting, last.state_hash
        );
    } else {
        println!("flow                      {name}");
        println!("runs                      {}", runs.len());
        println!("commands                  {}", last.commands);
        println!("trades                    {}", last.trades);
        println!("seconds (median)          {med_secs:.4}");
        println!("commands/s (median)       {:.2} M", med / 1e6);
        println!(
            "commands/s (min .. max)   {:.2} .. {:.2} M",
            lo / 1e6,
            hi / 1e6
        );
        println!("allocations/command       {allocs_per_cmd:.6}");
        println!("resting orders at end     {}", last.resting);
        println!(
            "book bytes/order slot     {bytes_per_order:.1}  (max_orders {})",
            last.max_orders
        );
        println!(
            "peak RSS                  {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
        println!("state hash                {:016x}", last.state_hash);
    }
}
