//! The HTTP endpoints of `fulgur serve` answer as docs/api.md promises: health, metrics,
//! commands answered after durability, and clear errors for bad input that leave the
//! server serving.

mod common;

use common::Server;

fn start() -> Server {
    Server::start("http")
}

/// (status, body) of a request carrying the operator's token.
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let token = common::admin_token(addr);
    common::request(
        addr,
        method,
        path,
        &[("X-Fulgur-Admin-Token", &token)],
        body,
    )
    .map(|r| (r.status, r.body))
}

#[test]
fn endpoints_answer_as_documented() {
    let s = start();
    let (status, body) = request(s.addr, "GET", "/health", b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    // The demo setup of a new data directory: 22 commands.
    assert_eq!(v["last_seq"].as_u64(), Some(22));

    // A command is answered with its sequence number and events.
    let (status, body) = request(
        s.addr,
        "POST",
        "/fulgur/v1/commands",
        br#"{"Deposit":{"account":7,"asset":2,"amount":500}}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["seq"].as_u64(), Some(23));
    assert_eq!(
        v["events"][0]["BalanceChanged"]["free"].as_u64(),
        Some(500),
        "{body}"
    );

    // A refusal by the engine is an event of a journaled command, not an HTTP error.
    let (status, body) = request(
        s.addr,
        "POST",
        "/fulgur/v1/commands",
        br#"{"Deposit":{"account":7,"asset":99,"amount":500}}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("UnknownAsset"), "{body}");

    // Malformed input: -1100 naming what is wrong; nothing is journaled.
    for bad in [
        &b"{not json"[..],
        br#"{"Deposit":{"account":7}}"#,
        br#"{"Launch":{}}"#,
    ] {
        let (status, body) = request(s.addr, "POST", "/fulgur/v1/commands", bad).unwrap();
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"].as_i64(), Some(-1100), "{body}");
        assert!(
            v["msg"].as_str().unwrap().starts_with("Illegal command"),
            "{body}"
        );
    }
    let (status, _) = request(s.addr, "POST", "/fulgur/v1/commands", &vec![b' '; 100_000]).unwrap();
    assert_eq!(status, 413);
    // Without the data directory's admin token: 401, nothing taken.
    for token in [None, Some("wrong")] {
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("X-Fulgur-Admin-Token", t)])
            .unwrap_or_default();
        let r = common::request(
            s.addr,
            "POST",
            "/fulgur/v1/commands",
            &headers,
            br#"{"Deposit":{"account":7,"asset":2,"amount":500}}"#,
        )
        .unwrap();
        assert_eq!((r.status, r.code()), (401, -1002), "{r:?}");
    }

    // The server still serves, and nothing of the bad requests reached the journal.
    let (_, body) = request(s.addr, "GET", "/health", b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_seq"].as_u64(), Some(24));

    let (status, metrics) = request(s.addr, "GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    for name in [
        "fulgur_commands_total 2",
        "fulgur_last_seq 24",
        "fulgur_queue_depth 0",
        "fulgur_busy_rejections_total 0",
        "fulgur_journal_fsync_seconds_bucket{le=\"+Inf\"}",
        "fulgur_http_connections_total",
        "# TYPE fulgur_journal_fsync_seconds histogram",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[test]
fn the_trading_page_and_its_assets_are_served() {
    let s = Server::start("http-page");
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    if page.body.contains("The trading page was not built") && !common::in_ci() {
        // The build had no Node.js or npm registry (build.rs said why); CI has them.
        eprintln!("skipping the page's assets: the page was not built");
        return;
    }
    // Every asset the page names is served, cacheable for good (content-hashed names).
    let names: Vec<&str> = page
        .body
        .split("assets/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".js")) && names.iter().any(|n| n.ends_with(".css")),
        "the page names its script and stylesheet: {}",
        page.body
    );
    for name in names {
        let r = s.get(&format!("/assets/{name}"));
        assert_eq!(r.status, 200, "{name}");
        let kind = if name.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(r.header("content-type"), Some(kind), "{name}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert!(!r.body.is_empty());
    }
    let r = s.get("/assets/app-NOPE.js");
    assert_eq!((r.status, r.code()), (404, -1099));
    // `serve` hands out no demo key (the page then asks the user for one).
    let r = s.get("/fulgur/v1/demo/key");
    assert_eq!((r.status, r.body.as_str()), (204, ""));
}
