//! Building a flow from a `--flow KIND[:PATH]` argument.

use fulgur_engine::flow::{self, Flow};

/// Options of the generated flow kinds.
#[derive(Clone, Debug)]
pub struct FlowOpts {
    /// Orders (liquibook) or measured commands (synthetic).
    pub orders: usize,
    pub seed: u64,
    pub accounts: u32,
}

impl Default for FlowOpts {
    fn default() -> Self {
        FlowOpts {
            orders: 1_000_000,
            seed: 1,
            accounts: 1_000,
        }
    }
}

/// The kinds `--flow` knows, for help and error texts.
pub const KINDS: &str = "liquibook";

/// `KIND` or `KIND:PATH`.
pub fn load(spec: &str, opts: &FlowOpts) -> Result<Flow, String> {
    let (kind, path) = match spec.split_once(':') {
        Some((k, p)) => (k, Some(p)),
        None => (spec, None),
    };
    match (kind, path) {
        ("liquibook", None) => Ok(flow::liquibook(opts.orders, opts.seed, opts.accounts)),
        ("liquibook", Some(_)) => {
            Err("flow kind 'liquibook' is generated and takes no path".into())
        }
        (other, _) => Err(format!("unknown flow kind '{other}' (known: {KINDS})")),
    }
}
