//! `fulgur`: the exchange binary. Run `fulgur --help` for the manual.

mod alloc;
mod bench;
mod demo;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: alloc::CountingMimalloc = alloc::CountingMimalloc;

/// Fulgur: a deterministic in-memory exchange engine for stablecoin, crypto and tokenized
/// real-world-asset pairs.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine on the demo markets (BTCUSDT, ETHUSDT, USDCUSDT and the RWA pair
    /// TBILLUSDC) with a market-making loop, printing each book's top once a second.
    Demo {
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Measure the engine on replayed order flow.
    Bench {
        #[command(subcommand)]
        kind: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The whole flow is built in memory first, then applied in a tight loop; prints the
    /// median of the runs.
    Throughput {
        /// Flow kind: `liquibook` (Liquibook's insert stream).
        #[arg(long, default_value = "liquibook")]
        flow: String,
        /// Orders in a generated flow.
        #[arg(long, default_value_t = 1_000_000)]
        orders: usize,
        /// Seed of a generated flow.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Runs, each into a fresh exchange; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// One JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo { seconds } => demo::run(seconds),
        Cmd::Bench { kind } => match kind {
            BenchCmd::Throughput {
                flow,
                orders,
                seed,
                repeat,
                json,
            } => {
                let f = match flow.as_str() {
                    "liquibook" => fulgur_engine::flow::liquibook(orders, seed, 1_000),
                    other => {
                        eprintln!("error: unknown flow kind '{other}' (known: liquibook)");
                        std::process::exit(2);
                    }
                };
                bench::throughput(&flow, &f, repeat, json);
            }
        },
    }
}
