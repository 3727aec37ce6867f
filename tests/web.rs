//! The trading page in a real browser: `fulgur demo` (its market maker and taker running),
//! then `web/tests/*.test.mjs` under Node's test runner. The unit tests check the page's
//! order rules and book sync; `page.test.mjs` drives Debian's Chromium through Playwright
//! (`playwright-core`): the page loads without console errors, its book equals REST depth
//! at the same update id, a limit order placed through the form shows in open orders and
//! in the book and a cancel removes it, a crossing order puts its trade in the tape and its
//! fill in history, a rejected order shows the exchange's message, and the depth chart and
//! candles draw. A screenshot of the page is left at `target/web/trading-page.png`.
//!
//! Node.js, the npm packages and Chromium come from `scripts/web.sh`. Without CI set, a
//! machine that cannot get them (no network) skips the test with the reason; in CI (`CI`
//! set) that is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::{in_ci, root, script, Server};

/// The browser steps take some 10 s; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(300);

fn tools() -> Result<(String, String), String> {
    Ok((
        script("web.sh", &["deps"])?,
        script("web.sh", &["chromium"])?,
    ))
}

#[test]
fn the_trading_page_works_in_chromium() {
    let (node, chromium) = match tools() {
        Ok(t) => t,
        Err(why) if !in_ci() => {
            eprintln!("skipping the web page test: no Node.js or Chromium (CI would fail).\n{why}");
            return;
        }
        Err(why) => panic!("CI needs Node.js and Chromium for the web page test: {why}"),
    };
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp`: the screenshot goes beside it, as an artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("web/trading-page.png");
    let _ = std::fs::remove_file(&shot);

    let s = Server::start_demo("web");
    let mut child = Process::new(&node)
        .current_dir(root().join("web"))
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "tests/",
        ])
        .env("FULGUR_URL", format!("http://{}", s.addr))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &shot)
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the web page tests did not finish in {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the web page tests failed ({status}); see their output above"
    );
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    assert!(s.stop().success(), "fulgur demo did not stop cleanly");
}
