//! The market-data streams of `fulgur serve`, over real sockets with tokio-tungstenite as
//! the client: every stream's payload, the combined envelope, live subscriptions and their
//! errors, the limits, and a diff-depth stream that is gap-free and rebuilds the REST book
//! exactly by Binance's "local order book" procedure.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// BTCUSDT of the demo setup: market 0, tick 0.01 USDT, lot 0.00001 BTC.
const BTCUSDT: u32 = 0;
const ETHUSDT: u32 = 1;
/// 97000.00 USDT in ticks.
const MID_TICKS: u64 = 9_700_000;
/// Demo accounts funded by the setup: a maker and a taker.
const MAKER: u32 = 1;
const TAKER: u32 = 2;

use common::Server;

fn start(name: &str) -> Server {
    Server::start(&format!("streams-{name}"))
}

/// A keep-alive HTTP/1.1 client (blocking), for commands and REST queries.
struct Http {
    r: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Http {
    fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        Ok(Http {
            r: BufReader::new(s),
            addr,
        })
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let s = self.r.get_mut();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-Fulgur-Admin-Token: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            common::admin_token(self.addr),
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    /// An engine command through the operator endpoint; its reply.
    fn command(&mut self, c: &Value) -> Value {
        let (status, body) = self.call("POST", "/fulgur/v1/commands", &c.to_string());
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn get_json(&mut self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn limit(account: u32, market: u32, side: &str, tif: &str, price: u64, lots: u64) -> Value {
    json!({"PlaceOrder": {"account": account, "market": market, "side": side,
        "order_type": "Limit", "tif": tif, "quantity": {"Base": lots}, "price": price,
        "client_order_id": "", "stp": "None"}})
}

fn cancel_all(account: u32, market: u32) -> Value {
    json!({"CancelAll": {"account": account, "market": market}})
}

/// Runs blocking HTTP calls off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn rest(addr: SocketAddr, path: &str) -> Value {
    let path = path.to_string();
    blocking(move || Http::connect(addr).unwrap().get_json(&path)).await
}

async fn commands(addr: SocketAddr, cs: Vec<Value>) -> Vec<Value> {
    blocking(move || {
        let mut h = Http::connect(addr).unwrap();
        cs.iter().map(|c| h.command(c)).collect()
    })
    .await
}

type Client = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Client {
    tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .0
}

/// What a read gave: a JSON text, the end of the connection (with its close code), or
/// nothing before the timeout.
#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<CloseCode>),
    Timeout,
}

async fn read<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    timeout: Duration,
) -> Got {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Got::Timeout,
            Ok(None) | Ok(Some(Err(_))) => return Got::Closed(None),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Got::Json(serde_json::from_str(t.as_str()).unwrap())
            }
            Ok(Some(Ok(Message::Close(f)))) => return Got::Closed(f.map(|f| f.code)),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sends a control message and returns its answer (a message with `id`), skipping data.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) -> Value {
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match read(ws, Duration::from_secs(5)).await {
            Got::Json(v) if v.get("id").is_some() => return v,
            Got::Json(_) => {}
            other => panic!("no answer to {text}: {other:?}"),
        }
    }
}

/// Every message until `quiet` has passed without one.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    quiet: Duration,
) -> Vec<Value> {
    let mut v = Vec::new();
    while let Got::Json(m) = read(ws, quiet).await {
        v.push(m);
    }
    v
}

/// The stream messages of a combined connection, by stream name, in order.
fn by_stream(msgs: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for x in msgs {
        let name = x["stream"]
            .as_str()
            .unwrap_or_else(|| panic!("no envelope: {x}"));
        m.entry(name.to_string())
            .or_default()
            .push(x["data"].clone());
    }
    m
}

fn book_of(v: &Value) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let side = |s: &Value| {
        s.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l[0].as_str().unwrap().to_string(),
                    l[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    (side(&v["bids"]), side(&v["asks"]))
}

/// Checks that diff events are contiguous (each `U` = previous `u` + 1), then rebuilds the
/// book as Binance says a client should: snapshot, drop what it covers, apply the rest.
/// Returns the book and the last update id applied.
fn rebuild(
    events: &[Value],
    snapshot: &Value,
) -> (BTreeMap<String, String>, BTreeMap<String, String>, u64) {
    for w in events.windows(2) {
        assert_eq!(
            w[1]["U"].as_u64().unwrap(),
            w[0]["u"].as_u64().unwrap() + 1,
            "gap between {} and {}",
            w[0],
            w[1]
        );
    }
    for e in events {
        assert_eq!(e["e"], "depthUpdate");
        assert!(e["U"].as_u64().unwrap() <= e["u"].as_u64().unwrap(), "{e}");
    }
    let (mut bids, mut asks) = book_of(snapshot);
    let last_id = snapshot["lastUpdateId"].as_u64().unwrap();
    let mut applied = last_id;
    let mut first = true;
    for e in events {
        let (from, to) = (e["U"].as_u64().unwrap(), e["u"].as_u64().unwrap());
        if to <= last_id {
            continue;
        }
        if first {
            assert!(
                from <= last_id + 1 && to > last_id,
                "first event {e} after {last_id}"
            );
            first = false;
        }
        for (key, book) in [("b", &mut bids), ("a", &mut asks)] {
            for l in e[key].as_array().unwrap() {
                let (p, q) = (l[0].as_str().unwrap(), l[1].as_str().unwrap());
                if q.bytes().all(|b| b == b'0' || b == b'.') {
                    book.remove(p);
                } else {
                    book.insert(p.to_string(), q.to_string());
                }
            }
        }
        applied = to;
    }
    (bids, asks, applied)
}

/// A deterministic order flow on one market: the maker quotes both sides within 50 ticks of
/// the mid, the taker crosses with IOC orders, and the maker cancels everything every 100
/// commands (which removes many levels in one command).
fn flow(addr: SocketAddr, market: u32, seed: u64, n: usize, done: &AtomicUsize) {
    let mut h = Http::connect(addr).unwrap();
    let mut x = seed;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 33;
        let off = r % 50;
        let lots = 10 + (r >> 8) % 190;
        let c = if i % 100 == 99 {
            cancel_all(MAKER, market)
        } else {
            match r % 100 {
                0..35 => limit(MAKER, market, "Buy", "Gtc", MID_TICKS - 1 - off, lots),
                35..70 => limit(MAKER, market, "Sell", "Gtc", MID_TICKS + 1 + off, lots),
                70..85 => limit(TAKER, market, "Buy", "Ioc", MID_TICKS + off, lots),
                _ => limit(TAKER, market, "Sell", "Ioc", MID_TICKS - off, lots),
            }
        };
        h.command(&c);
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_delivers_binance_payloads() {
    let s = start("payloads");
    let addr = s.addr;
    let names = [
        "btcusdt@trade",
        "btcusdt@aggTrade",
        "btcusdt@bookTicker",
        "btcusdt@depth",
        "btcusdt@depth@100ms",
        "btcusdt@depth5@100ms",
        "btcusdt@depth10",
        "btcusdt@kline_1m",
        "btcusdt@kline_1d",
        "btcusdt@ticker",
        "btcusdt@miniTicker",
        "!ticker@arr",
        "!miniTicker@arr",
    ];
    let mut ws = connect(addr, &format!("/stream?streams={}", names.join("/"))).await;
    let mut raw = connect(addr, "/ws/btcusdt@trade/btcusdt@bookTicker").await;
    // An answer means the connection's streams are registered.
    let listed = ask(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(listed, json!({"result": names, "id": 1}));
    let listed = ask(&mut raw, r#"{"method":"LIST_SUBSCRIPTIONS","id":"x1"}"#).await;
    assert_eq!(
        listed,
        json!({"result": ["btcusdt@trade", "btcusdt@bookTicker"], "id": "x1"})
    );

    let replies = commands(
        addr,
        vec![
            limit(MAKER, BTCUSDT, "Sell", "Gtc", MID_TICKS, 70),
            limit(MAKER, BTCUSDT, "Buy", "Gtc", MID_TICKS - 10_000, 50),
            limit(TAKER, BTCUSDT, "Buy", "Ioc", MID_TICKS, 30),
        ],
    )
    .await;
    let trade = replies[2]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.get("Trade"))
        .expect("the taker traded")
        .clone();
    let trade_id = trade["trade_id"].as_u64().unwrap();

    let msgs = drain(&mut ws, Duration::from_millis(2500)).await;
    let raw_msgs = drain(&mut raw, Duration::from_millis(300)).await;
    let by = by_stream(&msgs);
    let last = |name: &str| -> &Value {
        by.get(name)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("nothing on {name}: {msgs:?}"))
    };
    let depth = rest(addr, "/api/v3/depth?symbol=BTCUSDT&limit=10").await;
    let update_id = depth["lastUpdateId"].as_u64().unwrap();

    let t = last("btcusdt@trade");
    assert_eq!(by["btcusdt@trade"].len(), 1);
    for (k, v) in [
        ("e", json!("trade")),
        ("s", json!("BTCUSDT")),
        ("t", json!(trade_id)),
        ("p", json!("97000.00000000")),
        ("q", json!("0.00030000")),
        ("b", trade["taker_order"].clone()),
        ("a", trade["maker_order"].clone()),
        ("m", json!(false)),
        ("M", json!(true)),
    ] {
        assert_eq!(t[k], v, "{k} of {t}");
    }
    assert!(t["E"].as_u64().unwrap() >= t["T"].as_u64().unwrap());
    // The raw connection gets the same payload without the envelope.
    assert!(
        raw_msgs.iter().all(|m| m.get("stream").is_none()),
        "{raw_msgs:?}"
    );
    let raw_trade = raw_msgs.iter().find(|m| m["e"] == "trade").unwrap();
    assert_eq!(
        (raw_trade["t"].clone(), raw_trade["p"].clone()),
        (t["t"].clone(), t["p"].clone())
    );

    let a = last("btcusdt@aggTrade");
    for (k, v) in [
        ("e", json!("aggTrade")),
        ("s", json!("BTCUSDT")),
        ("p", json!("97000.00000000")),
        ("q", json!("0.00030000")),
        ("f", json!(trade_id)),
        ("l", json!(trade_id)),
        ("m", json!(false)),
    ] {
        assert_eq!(a[k], v, "{k} of {a}");
    }
    assert!(a["a"].as_u64().unwrap() >= 1);

    let bt = last("btcusdt@bookTicker");
    assert_eq!(
        *bt,
        json!({"u": update_id, "s": "BTCUSDT", "b": "96900.00000000", "B": "0.00050000",
               "a": "97000.00000000", "A": "0.00040000"})
    );
    assert_eq!(
        by["btcusdt@bookTicker"].len(),
        3,
        "one per change of the top"
    );
    assert_eq!(raw_msgs.iter().filter(|m| m.get("u").is_some()).count(), 3);

    // Diff depth, both speeds: contiguous from the first update, final quantities.
    for name in ["btcusdt@depth", "btcusdt@depth@100ms"] {
        let events = &by[name];
        assert_eq!(events[0]["U"], 1, "{name}: {events:?}");
        assert_eq!(events.last().unwrap()["u"], update_id, "{name}");
        assert!(events.iter().all(|e| e["s"] == "BTCUSDT"));
        let empty = json!({"lastUpdateId": 0, "bids": [], "asks": []});
        let (bids, asks, _) = rebuild(events, &empty);
        assert_eq!((bids, asks), book_of(&depth), "{name}");
    }
    // One 1000 ms window, or two if a flush fell between the commands.
    assert!(by["btcusdt@depth"].len() <= 2, "{:?}", by["btcusdt@depth"]);

    // Partial depth equals the REST book of that depth.
    let d10 = last("btcusdt@depth10");
    assert_eq!(*d10, depth);
    let d5 = last("btcusdt@depth5@100ms");
    assert_eq!(
        *d5,
        rest(addr, "/api/v3/depth?symbol=BTCUSDT&limit=5").await
    );

    let k = last("btcusdt@kline_1m");
    assert_eq!(
        (k["e"].clone(), k["s"].clone()),
        (json!("kline"), json!("BTCUSDT"))
    );
    let kk = &k["k"];
    for (f, v) in [
        ("s", json!("BTCUSDT")),
        ("i", json!("1m")),
        ("f", json!(trade_id)),
        ("L", json!(trade_id)),
        ("o", json!("97000.00000000")),
        ("c", json!("97000.00000000")),
        ("h", json!("97000.00000000")),
        ("l", json!("97000.00000000")),
        ("v", json!("0.00030000")),
        ("n", json!(1)),
        ("q", json!("29.10000000")),
        ("V", json!("0.00030000")),
        ("Q", json!("29.10000000")),
    ] {
        assert_eq!(kk[f], v, "{f} of {k}");
    }
    let open_ms = kk["t"].as_u64().unwrap();
    assert_eq!(open_ms % 60_000, 0);
    assert_eq!(kk["T"].as_u64().unwrap(), open_ms + 59_999);
    assert!(kk["x"].is_boolean());
    assert_eq!(last("btcusdt@kline_1d")["k"]["i"], "1d");

    let tk = last("btcusdt@ticker");
    for (f, v) in [
        ("e", json!("24hrTicker")),
        ("s", json!("BTCUSDT")),
        ("c", json!("97000.00000000")),
        ("Q", json!("0.00030000")),
        ("o", json!("97000.00000000")),
        ("h", json!("97000.00000000")),
        ("l", json!("97000.00000000")),
        ("v", json!("0.00030000")),
        ("q", json!("29.10000000")),
        ("b", json!("96900.00000000")),
        ("B", json!("0.00050000")),
        ("a", json!("97000.00000000")),
        ("A", json!("0.00040000")),
        ("F", json!(trade_id)),
        ("L", json!(trade_id)),
        ("n", json!(1)),
    ] {
        assert_eq!(tk[f], v, "{f} of {tk}");
    }
    for f in ["p", "P", "w", "x", "E", "O", "C"] {
        assert!(!tk[f].is_null(), "{f} of {tk}");
    }
    let mt = last("btcusdt@miniTicker");
    for (f, v) in [
        ("e", json!("24hrMiniTicker")),
        ("s", json!("BTCUSDT")),
        ("c", json!("97000.00000000")),
        ("o", json!("97000.00000000")),
        ("v", json!("0.00030000")),
        ("q", json!("29.10000000")),
    ] {
        assert_eq!(mt[f], v, "{f} of {mt}");
    }
    for (name, event) in [
        ("!ticker@arr", "24hrTicker"),
        ("!miniTicker@arr", "24hrMiniTicker"),
    ] {
        let arr = last(name).as_array().unwrap();
        let btc = arr.iter().find(|x| x["s"] == "BTCUSDT").expect(name);
        assert_eq!(btc["e"], event);
        assert_eq!(btc["c"], "97000.00000000");
    }
    // The REST ticker agrees with the stream's.
    let rt = rest(addr, "/api/v3/ticker/24hr?symbol=BTCUSDT").await;
    assert_eq!(
        (rt["lastPrice"].clone(), rt["count"].clone()),
        (tk["c"].clone(), tk["n"].clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_depth_is_gap_free_and_rebuilds_the_rest_book() {
    let s = start("gapfree");
    let addr = s.addr;
    let mut fast = connect(addr, "/ws/btcusdt@depth@100ms").await;
    let mut slow = connect(addr, "/stream?streams=btcusdt@depth").await;
    ask(&mut fast, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    ask(&mut slow, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;

    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let collect = |mut ws: Client, combined: bool, target: Arc<AtomicUsize>| async move {
        let mut events = Vec::new();
        loop {
            match read(&mut ws, Duration::from_secs(30)).await {
                Got::Json(v) => {
                    let e = if combined { v["data"].clone() } else { v };
                    let u = e["u"].as_u64().unwrap() as usize;
                    events.push(e);
                    if u >= target.load(Ordering::Acquire) {
                        return events;
                    }
                }
                other => panic!("diff stream ended: {other:?} after {} events", events.len()),
            }
        }
    };
    let fast_events = tokio::spawn(collect(fast, false, target.clone()));
    let slow_events = tokio::spawn(collect(slow, true, target.clone()));

    // Two flows at once, so batches carry several commands; a snapshot in the middle.
    let done = Arc::new(AtomicUsize::new(0));
    let flows: Vec<_> = (0..2)
        .map(|i| {
            let done = done.clone();
            // 1450: the flows do not end on a cancel-all, so the final book is not empty.
            std::thread::spawn(move || flow(addr, BTCUSDT, 7 + i, 1450, &done))
        })
        .collect();
    while done.load(Ordering::Relaxed) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot = rest(addr, "/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
    blocking(move || flows.into_iter().for_each(|f| f.join().unwrap())).await;
    let end = rest(addr, "/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
    let end_id = end["lastUpdateId"].as_u64().unwrap();
    target.store(end_id as usize, Ordering::Release);

    for (name, task) in [("100ms", fast_events), ("1000ms", slow_events)] {
        let events = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{name}: no event reached {end_id}"))
            .unwrap();
        assert_eq!(events[0]["U"], 1, "{name} starts at the first update");
        assert!(end_id > 2000, "thousands of updates: {end_id}");
        let (bids, asks, applied) = rebuild(&events, &snapshot);
        assert_eq!(applied, end_id, "{name}");
        let (rb, ra) = book_of(&end);
        assert_eq!(bids, rb, "{name} bids");
        assert_eq!(asks, ra, "{name} asks");
        assert!(!bids.is_empty() || !asks.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscriptions_properties_and_errors() {
    let s = start("subscribe");
    let addr = s.addr;
    let mut ws = connect(addr, "/ws").await;
    // At most five messages a second: pace the requests.
    async fn paced(ws: &mut Client, text: &str) -> Value {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ask(ws, text).await
    }
    assert_eq!(
        paced(
            &mut ws,
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@bookTicker"],"id":1}"#
        )
        .await,
        json!({"result": null, "id": 1})
    );
    assert_eq!(
        paced(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#).await,
        json!({"result": ["btcusdt@trade", "ethusdt@bookTicker"], "id": 2})
    );
    assert_eq!(
        paced(
            &mut ws,
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":3}"#
        )
        .await,
        json!({"result": null, "id": 3})
    );
    assert_eq!(
        paced(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#).await,
        json!({"result": ["ethusdt@bookTicker"], "id": 4})
    );
    assert_eq!(
        paced(
            &mut ws,
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":5}"#
        )
        .await,
        json!({"result": false, "id": 5})
    );

    // Errors are answered with Binance's codes and texts; the connection lives on.
    let err = |v: &Value| {
        (
            v["error"]["code"].as_i64().unwrap(),
            v["error"]["msg"].as_str().unwrap().to_string(),
        )
    };
    let v = paced(
        &mut ws,
        r#"{"method":"SUBSCRIBE","params":["foousdt@trade"],"id":6}"#,
    )
    .await;
    assert_eq!(
        (err(&v), v["id"].clone()),
        ((2, "Invalid request: invalid stream".into()), json!(6))
    );
    for bad in [
        r#"{"method":"SUBSCRIBE","params":["btcusdt@depth7"],"id":7}"#,
        r#"{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":7}"#,
        r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_2m"],"id":7}"#,
        r#"{"method":"SUBSCRIBE","params":[42],"id":7}"#,
    ] {
        let v = paced(&mut ws, bad).await;
        assert_eq!(
            err(&v),
            (2, "Invalid request: invalid stream".into()),
            "{bad}"
        );
    }
    let v = paced(&mut ws, r#"{"method":"SUBSCRIBX","params":[],"id":8}"#).await;
    let (code, msg) = err(&v);
    assert_eq!(code, 2);
    assert!(msg.starts_with("Invalid request: unknown variant `SUBSCRIBX`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"), "{msg}");
    let v = paced(&mut ws, r#"{"params":[],"id":9}"#).await;
    assert!(
        err(&v)
            .1
            .starts_with("Invalid request: missing field `method`"),
        "{v}"
    );
    let v = paced(
        &mut ws,
        r#"{"method":"LIST_SUBSCRIPTIONS","id":"not-alnum"}"#,
    )
    .await;
    assert_eq!(
        err(&v),
        (
            2,
            "Invalid request: request ID must be an unsigned integer".into()
        )
    );
    let v = paced(
        &mut ws,
        r#"{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":10}"#,
    )
    .await;
    assert_eq!(err(&v), (2, "Invalid request: too many parameters".into()));
    let v = paced(
        &mut ws,
        r#"{"method":"SET_PROPERTY","params":["colour",true],"id":11}"#,
    )
    .await;
    assert_eq!(err(&v), (0, "Unknown property".into()));
    let v = paced(
        &mut ws,
        r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":12}"#,
    )
    .await;
    assert_eq!(err(&v), (1, "Invalid value type: expected Boolean".into()));
    let v = paced(&mut ws, r#"{"method":"GET_PROPERTY","params":[5],"id":13}"#).await;
    assert_eq!(
        err(&v),
        (2, "Invalid request: property name must be a string".into())
    );
    let v = paced(&mut ws, "{not json").await;
    let (code, msg) = err(&v);
    assert_eq!((code, v["id"].clone()), (3, Value::Null));
    assert!(
        msg.starts_with("Invalid JSON: key must be a string at line 1 column 2"),
        "{msg}"
    );

    // Still serving: switch to the combined envelope and get data.
    assert_eq!(
        paced(
            &mut ws,
            r#"{"method":"SET_PROPERTY","params":["combined",true],"id":14}"#
        )
        .await,
        json!({"result": null, "id": 14})
    );
    assert_eq!(
        paced(
            &mut ws,
            r#"{"method":"GET_PROPERTY","params":["combined"],"id":15}"#
        )
        .await,
        json!({"result": true, "id": 15})
    );
    commands(
        addr,
        vec![limit(MAKER, ETHUSDT, "Buy", "Gtc", 339_000, 100)],
    )
    .await;
    let Got::Json(m) = read(&mut ws, Duration::from_secs(5)).await else {
        panic!("no bookTicker")
    };
    assert_eq!(m["stream"], "ethusdt@bookTicker");
    assert_eq!(m["data"]["b"], "3390.00000000");
    assert_eq!(m["data"]["B"], "0.01000000");
    assert_eq!(m["data"]["a"], "0.00000000");

    // Streams in the URL are checked before the upgrade: an HTTP error.
    for path in [
        "/ws/foousdt@trade",
        "/stream?streams=btcusdt@trade/btcusdt@nope",
    ] {
        let e = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .expect_err(path);
        let tokio_tungstenite::tungstenite::Error::Http(r) = e else {
            panic!("{path}: {e}")
        };
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"code": 2, "msg": "Invalid request: invalid stream"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_five_messages_a_second_disconnect() {
    let s = start("ratelimit");
    let mut ws = connect(s.addr, "/ws/btcusdt@trade").await;
    for i in 0..8 {
        let text = format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}"#);
        if ws.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    let mut answers = 0;
    let code = loop {
        match read(&mut ws, Duration::from_secs(5)).await {
            Got::Json(v) => {
                assert_eq!(v["result"], json!(["btcusdt@trade"]));
                answers += 1;
            }
            Got::Closed(code) => break code,
            Got::Timeout => panic!("still connected"),
        }
    };
    assert_eq!(answers, 5);
    assert_eq!(code, Some(CloseCode::Policy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_while_a_fast_one_keeps_up() {
    let s = start("slow");
    let addr = s.addr;
    let streams = "btcusdt@trade/btcusdt@aggTrade/btcusdt@bookTicker/btcusdt@depth@100ms/\
                   btcusdt@depth20@100ms/btcusdt@depth10@100ms/btcusdt@depth5@100ms";
    let path = format!("/stream?streams={streams}");
    // The slow client reads nothing, through a small receive buffer.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .unwrap();
    ask(&mut slow, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    let mut fast = connect(addr, &path).await;
    ask(&mut fast, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;

    let stop = Arc::new(AtomicBool::new(false));
    let fast_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut count = 0usize;
            let mut last_u: Option<u64> = None;
            while !stop.load(Ordering::Acquire) {
                match read(&mut fast, Duration::from_secs(2)).await {
                    Got::Json(v) => {
                        count += 1;
                        if v["stream"] == "btcusdt@depth@100ms" {
                            let d = &v["data"];
                            if let Some(u) = last_u {
                                assert_eq!(d["U"].as_u64().unwrap(), u + 1, "gap");
                            }
                            last_u = d["u"].as_u64();
                        }
                    }
                    Got::Timeout => {}
                    Got::Closed(c) => panic!("the fast client was cut off: {c:?}"),
                }
            }
            count
        })
    };

    // Rounds of three concurrent flows until the server has cut the slow client off. The
    // kernel's socket buffers absorb some megabytes before its queue even fills. A cut-off
    // shows without reading: the server closed with the client's probes unread, so it reset
    // the connection, and the next probe fails.
    let done = Arc::new(AtomicUsize::new(0));
    let mut cut = false;
    for round in 0..40u64 {
        let flows: Vec<_> = (0..3)
            .map(|i| {
                let done = done.clone();
                std::thread::spawn(move || flow(addr, BTCUSDT, round * 10 + i, 1000, &done))
            })
            .collect();
        blocking(move || flows.into_iter().for_each(|f| f.join().unwrap())).await;
        // An unsolicited pong: allowed, and one a round stays under five a second.
        if slow.send(Message::Pong(Default::default())).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let fast_count = fast_task.await.unwrap();
    assert!(
        cut,
        "the slow client was not cut off after {} commands",
        done.load(Ordering::Relaxed)
    );

    // Now the slow client reads: what was buffered, then the end of the connection.
    let mut slow_count = 0usize;
    let ended = loop {
        match read(&mut slow, Duration::from_secs(5)).await {
            Got::Json(_) => slow_count += 1,
            Got::Closed(_) => break true,
            Got::Timeout => break false,
        }
    };
    assert!(
        ended,
        "the slow client is still connected after {slow_count} messages"
    );
    assert!(
        slow_count < fast_count,
        "slow {slow_count} vs fast {fast_count}"
    );
    eprintln!("slow client cut off after {slow_count} messages; the fast one read {fast_count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_every_20_s() {
    let s = start("ping");
    let mut ws = connect(s.addr, "/ws").await;
    let t0 = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => return t0.elapsed(),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("a ping within 30 s");
    assert!(
        got >= Duration::from_secs(19) && got <= Duration::from_secs(25),
        "{got:?}"
    );
    // The client's automatic pong keeps the connection: it still answers.
    let v = ask(&mut ws, r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#).await;
    assert_eq!(v, json!({"result": [], "id": 1}));
}

/// ccxt opens numbered connections (`/ws/0`, `/ws/1`, ...) and subscribes on them; a
/// listen key's `/ws/<key>` carries the account's user events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_connections_and_listen_key_streams() {
    let s = common::Server::start("streams-listen-key");
    let addr = s.addr;
    let mut ws = connect(addr, "/ws/0").await;
    assert_eq!(
        ask(
            &mut ws,
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#
        )
        .await,
        json!({"result": null, "id": 1})
    );

    let (key, _secret) = s.key(9);
    let r = common::request(
        addr,
        "POST",
        "/api/v3/userDataStream",
        &[("X-MBX-APIKEY", &key)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let listen_key = r.json()["listenKey"].as_str().unwrap().to_string();
    let mut user = connect(addr, &format!("/ws/{listen_key}")).await;
    s.command(r#"{"Deposit":{"account":9,"asset":2,"amount":500000000}}"#);
    let events = drain(&mut user, Duration::from_millis(500)).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["e"].as_str()).collect();
    assert!(kinds.contains(&"outboundAccountPosition"), "{events:?}");
    assert!(kinds.contains(&"balanceUpdate"), "{events:?}");
    let bu = events.iter().find(|e| e["e"] == "balanceUpdate").unwrap();
    assert_eq!(
        (bu["a"].as_str(), bu["d"].as_str()),
        (Some("USDT"), Some("5.00000000"))
    );
    // An unknown key is not a stream.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/{}", "k".repeat(60))).await;
    assert!(refused.is_err());
}
