//! Building a flow from a `--flow KIND[:PATH]` argument, and `fulgur flow convert`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};

use fulgur_engine::flow::{self, bitfinex, lobster, native, synthetic, Flow};

/// Where the real order-flow files live: `../shared/orderflow/` beside the project (never
/// copied into it). A path after `KIND:` overrides it.
pub const ORDERFLOW_DIR: &str = "../shared/orderflow";
pub const LOBSTER_FILE: &str = "lobster_AAPL_2012-06-21_message.csv";
pub const BITFINEX_FILE: &str = "bitfinex_tBTCUSD_L3.json";

/// Options of the generated flow kinds.
#[derive(Clone, Debug)]
pub struct FlowOpts {
    /// Orders (liquibook) or measured commands (synthetic).
    pub orders: usize,
    pub seed: u64,
    pub accounts: u32,
    /// Synthetic: markets, and resting orders per market to keep the book near.
    pub markets: u32,
    pub book: usize,
}

impl Default for FlowOpts {
    fn default() -> Self {
        FlowOpts {
            orders: 1_000_000,
            seed: 1,
            accounts: 1_000,
            markets: 10,
            book: 1_000,
        }
    }
}

/// The kinds `--flow` knows, for help and error texts.
pub const KINDS: &str = "lobster[:PATH], bitfinex[:PATH], liquibook, synthetic, native:PATH";

fn open(
    kind: &str,
    path: Option<&str>,
    default_file: &str,
) -> Result<(String, BufReader<File>), String> {
    let path = path.map_or_else(|| format!("{ORDERFLOW_DIR}/{default_file}"), str::to_string);
    match File::open(&path) {
        Ok(f) => Ok((path, BufReader::with_capacity(1 << 20, f))),
        Err(e) => Err(format!(
            "{path}: {e} (flow kind '{kind}' reads {ORDERFLOW_DIR}/{default_file} by default; give another file as {kind}:PATH)"
        )),
    }
}

/// `KIND` or `KIND:PATH`.
pub fn load(spec: &str, opts: &FlowOpts) -> Result<Flow, String> {
    let (kind, path) = match spec.split_once(':') {
        Some((k, p)) => (k, Some(p)),
        None => (spec, None),
    };
    let generated = |f: Flow| match path {
        None => Ok(f),
        Some(_) => Err(format!("flow kind '{kind}' is generated and takes no path")),
    };
    match kind {
        "liquibook" => generated(flow::liquibook(opts.orders, opts.seed, opts.accounts)),
        "synthetic" => generated(synthetic::generate(&synthetic::SyntheticParams {
            commands: opts.orders,
            target_orders: opts.book,
            accounts: opts.accounts,
            markets: opts.markets,
            seed: opts.seed,
            ..Default::default()
        })),
        "lobster" => {
            let (path, r) = open(kind, path, LOBSTER_FILE)?;
            let mut o = lobster::LobsterOptions::new("AAPL");
            o.accounts = opts.accounts;
            lobster::load(r, o).map_err(|e| format!("{path}: {e}"))
        }
        "bitfinex" => {
            let (path, r) = open(kind, path, BITFINEX_FILE)?;
            let mut o = bitfinex::BitfinexOptions::btcusd();
            o.accounts = opts.accounts;
            bitfinex::load(r, o).map_err(|e| format!("{path}: {e}"))
        }
        "native" => {
            let path = path.ok_or("flow kind 'native' needs a path: native:FILE.fcmd")?;
            let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
            native::read(BufReader::new(f)).map_err(|e| format!("{path}: {e}"))
        }
        other => Err(format!("unknown flow kind '{other}' (known: {KINDS})")),
    }
}

/// Writes a flow as a native `.fcmd` file.
pub fn convert(flow: &Flow, out: &str) -> Result<(), String> {
    let f = File::create(out).map_err(|e| format!("{out}: {e}"))?;
    let mut w = BufWriter::new(f);
    native::write(flow, &mut w).map_err(|e| format!("{out}: {e}"))?;
    w.flush().map_err(|e| format!("{out}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_flows_read_back_equal() {
        let opts = FlowOpts {
            orders: 2_000,
            markets: 2,
            book: 50,
            accounts: 20,
            ..FlowOpts::default()
        };
        let dir = std::env::temp_dir().join(format!("fulgur-flows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for kind in ["liquibook", "synthetic"] {
            let flow = load(kind, &opts).unwrap();
            let path = dir.join(format!("{kind}.fcmd"));
            let path = path.to_str().unwrap();
            convert(&flow, path).unwrap();
            assert_eq!(load(&format!("native:{path}"), &opts).unwrap(), flow);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flow_arguments_say_what_is_wrong() {
        let o = FlowOpts::default();
        assert!(load("nope", &o)
            .unwrap_err()
            .contains("unknown flow kind 'nope'"));
        assert!(load("liquibook:x", &o)
            .unwrap_err()
            .contains("takes no path"));
        assert!(load("native", &o).unwrap_err().contains("needs a path"));
        assert!(load("native:/nonexistent.fcmd", &o)
            .unwrap_err()
            .contains("/nonexistent.fcmd"));
        let e = load("lobster:/nonexistent.csv", &o).unwrap_err();
        assert!(
            e.contains("/nonexistent.csv") && e.contains("lobster:PATH"),
            "{e}"
        );
    }

    #[test]
    fn the_fixtures_load_as_flows() {
        let o = FlowOpts::default();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
        let l = load(&format!("lobster:{dir}/lobster_small.csv"), &o).unwrap();
        assert!(!l.expected_makers.is_empty());
        let b = load(&format!("bitfinex:{dir}/bitfinex_small.json"), &o).unwrap();
        assert!(!b.commands.is_empty());
        let s = load(&format!("native:{dir}/synthetic_small.fcmd"), &o).unwrap();
        assert!(s.warmup > 0);
        let r = crate::bench::throughput(&l, 2);
        // Every execution of the fixture hits its expected maker, in both replays.
        let n = 2 * l.expected_makers.len() as u64;
        assert_eq!(
            (r.executions_matched, r.executions_total, r.rejected),
            (n, n, 0)
        );
    }
}
