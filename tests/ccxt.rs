//! ccxt, the client most trading software uses to reach Binance, against the real binary:
//! `fulgur serve` on a new data directory (the demo markets), API keys, funded accounts,
//! then `tests/ccxt/binance_compat.py` drives REST, market-data streams and the WebSocket
//! API through ccxt's own code (see the script for the steps). The script must pass every
//! step, and SIGTERM must then stop the server cleanly.
//!
//! Python and ccxt come from `scripts/python-env.sh` (a cached virtualenv with a pinned
//! ccxt). Without CI set, a machine that cannot build it (no network for pip) skips the
//! test with the reason; in CI (`CI` set) that is a failure.

mod common;

use std::fs::File;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{in_ci, python, root, Server};

/// What each account is credited with, on top of the demo's own deposits.
const DEPOSITS: [&str; 4] = ["USDT", "BTC", "ETH", "USDC"];

/// Accounts 1 and 2 are the script's own; 3 and 4 only quote while it watches the order
/// book. An account may place 100 orders per 10 s, so four make the thousands of book
/// updates it watches in about 25 s instead of 100.
const ACCOUNTS: [u32; 4] = [1, 2, 3, 4];

/// The script keeps itself well under two minutes; this only catches a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn deposit(s: &Server, account: u32, asset: &str) {
    let out = Process::new(env!("CARGO_BIN_EXE_fulgur"))
        .args(["admin", "deposit", "--data-dir"])
        .arg(&s.data)
        .args(["--listen", &s.addr.to_string()])
        .args(["--account", &account.to_string(), "--asset", asset])
        .args(["--amount", "1000000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "admin deposit: {out:?}");
}

/// Waits for a child with a deadline; kills it when the deadline passes (None).
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ccxt_speaks_to_fulgur_as_to_binance() {
    let python = match python() {
        Ok(p) => p,
        Err(why) if !in_ci() => {
            eprintln!(
                "skipping the ccxt test: no Python environment for it (CI would fail).\n{why}"
            );
            return;
        }
        Err(why) => panic!("CI needs the ccxt Python environment: {why}"),
    };

    let s = Server::start("ccxt");
    let keys: Vec<(String, String)> = ACCOUNTS.iter().map(|&a| s.key(a)).collect();
    for account in ACCOUNTS {
        for asset in DEPOSITS {
            deposit(&s, account, asset);
        }
    }

    let mut cmd = Process::new(&python);
    cmd.arg(root().join("tests/ccxt/binance_compat.py"))
        .args(["--base", &format!("http://{}", s.addr)])
        .args(["--key", &keys[0].0, "--secret", &keys[0].1])
        .args(["--key2", &keys[1].0, "--secret2", &keys[1].1]);
    for (key, secret) in &keys[2..] {
        cmd.args(["--extra-account", &format!("{key}:{secret}")]);
    }
    // Both streams into one file: the script's lines and anything Python prints on a crash,
    // in order, with no pipe to fill up.
    let log = s.data.with_extension("ccxt.log");
    let out = File::create(&log).unwrap();
    let mut script = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run tests/ccxt/binance_compat.py");
    let status = wait_for(&mut script, SCRIPT_TIMEOUT);
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        // Shown with --nocapture: what each step saw.
        Some(st) if st.success() => println!("{output}"),
        Some(st) => panic!("ccxt steps failed ({st}):\n{output}"),
        None => panic!("the ccxt script did not finish in {SCRIPT_TIMEOUT:?}:\n{output}"),
    }

    let exit = s.stop();
    assert!(
        exit.success(),
        "SIGTERM must drain, snapshot and exit 0: {exit:?}"
    );
}
