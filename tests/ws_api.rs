//! The WebSocket API of `fulgur serve` over a real socket, as docs/api.md promises: session
//! logon with an Ed25519 key, orders, queries, user-data subscriptions delivering
//! executionReport and outboundAccountPosition, HMAC-signed subscriptions, listen keys, and
//! Binance's errors for bad input on a connection that stays up.
//!
//! Keys come from `fulgur keys create --data-dir D --account N [--ed25519 PEM_FILE] --json`,
//! which prints `{"apiKey":..,"secretKey":..}`.

mod common;

use common::Server;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

/// Accounts of the test: a buyer with an Ed25519 key, a seller with an HMAC key.
const BUYER: u32 = 10;
const SELLER: u32 = 11;

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fulgur-ws-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(data: PathBuf) -> Server {
    Server::start_in(data)
}

/// (status, body) of a request.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    common::request(addr, method, path, headers, body).map(|r| (r.status, r.body))
}

/// `fulgur keys create`: the key's JSON (`apiKey`, and `secretKey` for HMAC keys).
fn create_key(data: &Path, account: u32, ed25519_pem: Option<&Path>) -> Value {
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_fulgur"));
    cmd.args(["keys", "create", "--data-dir"]).arg(data).args([
        "--account",
        &account.to_string(),
        "--json",
    ]);
    if let Some(pem) = ed25519_pem {
        // `@FILE`: the PEM file, as an operator passes one.
        cmd.arg("--ed25519").arg(format!("@{}", pem.display()));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "fulgur keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keys create --json prints JSON")
}

/// Credits an account through the operator endpoint (asset ids of the demo setup).
fn deposit(addr: SocketAddr, account: u32, asset: u32, amount: u64) {
    let body = json!({"Deposit": {"account": account, "asset": asset, "amount": amount}});
    let token = common::admin_token(addr);
    let (status, reply) = request(
        addr,
        "POST",
        "/fulgur/v1/commands",
        &[("X-Fulgur-Admin-Token", &token)],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("BalanceChanged"), "{reply}");
}

const BTC: u32 = 0;
const USDT: u32 = 2;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How a client signs.
enum Signing {
    Ed25519(SigningKey),
    Hmac(String),
}

impl Signing {
    /// Adds `apiKey` (if given), `timestamp` and `signature` over the sorted parameters.
    fn sign(&self, api_key: Option<&str>, params: Value) -> Value {
        self.sign_at(api_key, params, now_ms())
    }

    fn sign_at(&self, api_key: Option<&str>, params: Value, timestamp_ms: u64) -> Value {
        let mut p: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
        if let Some(k) = api_key {
            p.insert("apiKey".into(), json!(k));
        }
        p.insert("timestamp".into(), json!(timestamp_ms));
        let mut names: Vec<&String> = p.keys().collect();
        names.sort();
        let payload = names
            .iter()
            .map(|k| match &p[*k] {
                Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join("&");
        let signature = match self {
            Signing::Ed25519(key) => base64::engine::general_purpose::STANDARD
                .encode(key.sign(payload.as_bytes()).to_bytes()),
            Signing::Hmac(secret) => {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(payload.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
        };
        p.insert("signature".into(), json!(signature));
        Value::Object(p)
    }

    /// Only `timestamp`: for a logged-on session.
    fn stamped(params: Value) -> Value {
        let mut p = params.as_object().cloned().unwrap_or_default();
        p.insert("timestamp".into(), json!(now_ms()));
        Value::Object(p)
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WS API client: responses by id, events kept as they arrive.
struct Client {
    ws: Ws,
    next_id: u64,
    events: Vec<Value>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws-api/v3"))
            .await
            .expect("the WS API accepts connections");
        Client {
            ws,
            next_id: 0,
            events: Vec::new(),
        }
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next frame that is not an event (events are kept).
    async fn response(&mut self) -> Value {
        loop {
            let v = self.frame().await;
            if v.get("subscriptionId").is_some() && v.get("event").is_some() {
                self.events.push(v);
            } else {
                return v;
            }
        }
    }

    async fn frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("the connection is open")
                .unwrap();
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        let req = json!({"id": id, "method": method, "params": params});
        self.send_text(&req.to_string()).await;
        let r = self.response().await;
        assert_eq!(r["id"], json!(id), "{r}");
        r
    }

    async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert_eq!(r["status"], 200, "{method}: {r}");
        r["result"].clone()
    }

    async fn error(&mut self, method: &str, params: Value) -> (u64, i64) {
        let r = self.call(method, params).await;
        assert!(r.get("result").is_none(), "{method} should fail: {r}");
        (
            r["status"].as_u64().unwrap(),
            r["error"]["code"].as_i64().unwrap(),
        )
    }

    /// Waits for an event matching `want` (events already received count).
    async fn event(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.events.iter().position(|e| want(&e["event"])) {
                return self.events.remove(i);
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among {:?}",
                self.events
            );
            let v = self.frame().await;
            assert!(v.get("event").is_some(), "a response nobody asked for: {v}");
            self.events.push(v);
        }
    }
}

fn report(x: &'static str, client: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["e"] == "executionReport" && e["x"] == x && e["c"] == client
}

struct Keys {
    ed25519: SigningKey,
    ed25519_api_key: String,
    hmac_api_key: String,
    hmac: Signing,
}

fn keys(data: &Path) -> Keys {
    let ed25519 = SigningKey::from_bytes(&[7u8; 32]);
    let pem_path = data.with_extension("ed25519.pem");
    let pem = ed25519
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&pem_path, pem).unwrap();
    let ed = create_key(data, BUYER, Some(&pem_path));
    let _ = std::fs::remove_file(&pem_path);
    let hm = create_key(data, SELLER, None);
    Keys {
        ed25519,
        ed25519_api_key: ed["apiKey"].as_str().unwrap().to_string(),
        hmac_api_key: hm["apiKey"].as_str().unwrap().to_string(),
        hmac: Signing::Hmac(hm["secretKey"].as_str().unwrap().to_string()),
    }
}

#[tokio::test]
async fn trading_and_user_data_over_the_ws_api() {
    let data = data_dir("trade");
    let k = keys(&data);
    let s = start(data);
    deposit(s.addr, BUYER, USDT, 100_000 * 100_000_000);
    deposit(s.addr, SELLER, BTC, 100_000_000);

    // The buyer logs on with its Ed25519 key; its requests then carry only a timestamp.
    let mut buyer = Client::connect(s.addr).await;
    let status = buyer.ok("session.status", json!({})).await;
    assert_eq!(status["apiKey"], Value::Null);
    let ed = Signing::Ed25519(k.ed25519.clone());
    let logon = buyer
        .ok(
            "session.logon",
            ed.sign(Some(&k.ed25519_api_key), json!({})),
        )
        .await;
    assert_eq!(logon["apiKey"], json!(k.ed25519_api_key));
    assert_eq!(logon["userDataStream"], false);
    let sub = buyer.ok("userDataStream.subscribe", json!({})).await;
    assert_eq!(sub["subscriptionId"], 0);
    assert_eq!(
        buyer.error("userDataStream.subscribe", json!({})).await,
        (400, -2035)
    );
    assert_eq!(
        buyer.ok("session.subscriptions", json!({})).await,
        json!([{"subscriptionId": 0}])
    );

    let bid = json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                     "quantity": "0.00100000", "price": "50000", "newClientOrderId": "bid-1"});
    let r = buyer
        .call("order.place", Signing::stamped(bid.clone()))
        .await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["result"]["status"], "NEW");
    let order_id = r["result"]["orderId"].as_u64().unwrap();
    let limits = r["rateLimits"].as_array().unwrap();
    assert!(
        limits
            .iter()
            .any(|l| l["rateLimitType"] == "ORDERS" && l["count"] == 1),
        "{r}"
    );
    assert!(limits
        .iter()
        .any(|l| l["rateLimitType"] == "REQUEST_WEIGHT" && l["count"].as_u64() > Some(0)));
    let new = buyer.event("NEW of bid-1", report("NEW", "bid-1")).await;
    assert_eq!(new["subscriptionId"], 0);
    assert_eq!(new["event"]["i"], json!(order_id));
    assert_eq!(new["event"]["p"], "50000.00000000");
    let pos = buyer
        .event("the locked USDT", |e| {
            e["e"] == "outboundAccountPosition"
                && e["B"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["a"] == "USDT" && b["l"] == "50.00000000")
        })
        .await;
    assert_eq!(pos["subscriptionId"], 0);

    let st = buyer
        .ok(
            "order.status",
            Signing::stamped(json!({"symbol": "BTCUSDT", "orderId": order_id})),
        )
        .await;
    assert_eq!(
        (st["clientOrderId"].as_str(), st["status"].as_str()),
        (Some("bid-1"), Some("NEW"))
    );
    let open = buyer
        .ok(
            "openOrders.status",
            Signing::stamped(json!({"symbol": "BTCUSDT"})),
        )
        .await;
    assert_eq!(open.as_array().unwrap().len(), 1);

    // Cancel-replace: the bid moves to 49,000.
    let cr = buyer
        .ok(
            "order.cancelReplace",
            Signing::stamped(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.001", "price": "49000",
                "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrigClientOrderId": "bid-1",
                "newClientOrderId": "bid-2"})),
        )
        .await;
    assert_eq!(
        (cr["cancelResult"].as_str(), cr["newOrderResult"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS")),
        "{cr}"
    );
    buyer
        .event("CANCELED of bid-1", |e| {
            e["e"] == "executionReport" && e["x"] == "CANCELED" && e["C"] == "bid-1"
        })
        .await;
    buyer.event("NEW of bid-2", report("NEW", "bid-2")).await;

    // The seller signs each request with its HMAC key, and subscribes with a signature.
    let mut seller = Client::connect(s.addr).await;
    let sub = seller
        .ok(
            "userDataStream.subscribe.signature",
            k.hmac.sign(Some(&k.hmac_api_key), json!({})),
        )
        .await;
    assert_eq!(sub["subscriptionId"], 0);
    let ask = json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                     "quantity": "0.001", "price": "49000", "newClientOrderId": "ask-1"});
    let fill = seller
        .ok("order.place", k.hmac.sign(Some(&k.hmac_api_key), ask))
        .await;
    assert_eq!(fill["status"], "FILLED", "{fill}");
    assert_eq!(fill["fills"][0]["price"], "49000.00000000");

    let trade = buyer
        .event("TRADE of bid-2", report("TRADE", "bid-2"))
        .await;
    let e = &trade["event"];
    assert_eq!(
        (e["X"].as_str(), e["l"].as_str(), e["L"].as_str()),
        (Some("FILLED"), Some("0.00100000"), Some("49000.00000000")),
        "{e}"
    );
    assert_eq!(e["m"], true);
    buyer
        .event("the bought BTC", |e| {
            e["e"] == "outboundAccountPosition"
                && e["B"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["a"] == "BTC" && b["f"] != "0.00000000")
        })
        .await;
    seller.event("NEW of ask-1", report("NEW", "ask-1")).await;
    let t = seller
        .event("TRADE of ask-1", report("TRADE", "ask-1"))
        .await;
    assert_eq!(
        (t["event"]["X"].as_str(), t["event"]["m"].as_bool()),
        (Some("FILLED"), Some(false))
    );
    seller
        .event("the seller's position", |e| {
            e["e"] == "outboundAccountPosition"
        })
        .await;

    let acct = buyer
        .ok(
            "account.status",
            Signing::stamped(json!({"omitZeroBalances": true})),
        )
        .await;
    let btc = acct["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "BTC")
        .expect("the buyer holds BTC");
    assert_ne!(btc["free"], "0.00000000");
    let trades = buyer
        .ok("myTrades", Signing::stamped(json!({"symbol": "BTCUSDT"})))
        .await;
    assert_eq!(trades.as_array().unwrap().len(), 1);
    let all = buyer
        .ok("allOrders", Signing::stamped(json!({"symbol": "BTCUSDT"})))
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2);

    // Cancel-all, then amend (keep priority) of a fresh order.
    buyer
        .ok(
            "order.place",
            Signing::stamped(json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                "timeInForce": "GTC", "quantity": "0.002", "price": "48000",
                "newClientOrderId": "bid-3"})),
        )
        .await;
    let amended = buyer
        .ok(
            "order.amend.keepPriority",
            Signing::stamped(json!({"symbol": "BTCUSDT", "origClientOrderId": "bid-3",
                                     "newQty": "0.001"})),
        )
        .await;
    assert_eq!(amended["amendedOrder"]["qty"], "0.00100000");
    let replaced = buyer
        .event("REPLACED of bid-3", report("REPLACED", "bid-3"))
        .await;
    assert_eq!(replaced["event"]["q"], "0.00100000");
    let cancelled = buyer
        .ok(
            "openOrders.cancelAll",
            Signing::stamped(json!({"symbol": "BTCUSDT"})),
        )
        .await;
    assert_eq!(cancelled.as_array().unwrap().len(), 1);
    assert_eq!(cancelled[0]["status"], "CANCELED");
    let test = buyer.ok("order.test", Signing::stamped(bid.clone())).await;
    assert_eq!(test, json!({}));

    // Unsubscribing ends the stream with eventStreamTerminated; logout forgets the key.
    buyer
        .ok("userDataStream.unsubscribe", json!({"subscriptionId": 0}))
        .await;
    buyer
        .event("eventStreamTerminated", |e| {
            e["e"] == "eventStreamTerminated"
        })
        .await;
    assert_eq!(
        buyer.error("userDataStream.unsubscribe", json!({})).await,
        (400, -2036)
    );
    let out = buyer.ok("session.logout", json!({})).await;
    assert_eq!(out["apiKey"], Value::Null);
    assert_eq!(
        buyer
            .error(
                "order.status",
                Signing::stamped(json!({"symbol": "BTCUSDT", "orderId": order_id}))
            )
            .await,
        (400, -1102)
    );
    assert_eq!(
        buyer.error("userDataStream.subscribe", json!({})).await.1,
        -1002
    );

    // Listen keys: USER_STREAM, the API key header only.
    let key_header = [("X-MBX-APIKEY", k.hmac_api_key.as_str())];
    let (status, body) =
        request(s.addr, "POST", "/api/v3/userDataStream", &key_header, b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let listen_key = serde_json::from_str::<Value>(&body).unwrap()["listenKey"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, again) = request(s.addr, "POST", "/api/v3/userDataStream", &key_header, b"").unwrap();
    assert!(again.contains(&listen_key), "one key per account: {again}");
    let path = format!("/api/v3/userDataStream?listenKey={listen_key}");
    assert_eq!(
        request(s.addr, "PUT", &path, &key_header, b"").unwrap(),
        (200, "{}".to_string())
    );
    assert_eq!(
        request(s.addr, "DELETE", &path, &key_header, b"")
            .unwrap()
            .0,
        200
    );
    let (status, body) = request(s.addr, "PUT", &path, &key_header, b"").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("-1125"), "{body}");
    let (status, body) = request(s.addr, "POST", "/api/v3/userDataStream", &[], b"").unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("-2014"), "{body}");
}

#[tokio::test]
async fn errors_keep_the_connection() {
    let data = data_dir("errors");
    let k = keys(&data);
    let s = start(data);
    let mut c = Client::connect(s.addr).await;

    // Malformed frames: Binance's errors, id null, and the connection stays.
    c.send_text("{not json").await;
    let r = c.response().await;
    assert_eq!(
        (
            r["id"].clone(),
            r["status"].as_u64(),
            r["error"]["code"].as_i64()
        ),
        (Value::Null, Some(400), Some(-1013)),
        "{r}"
    );
    c.send_text("[1,2]").await;
    assert_eq!(c.response().await["error"]["code"], -1013);
    c.send_text(r#"{"method":"ping"}"#).await;
    assert_eq!(c.response().await["error"]["code"], -1102);
    c.send_text(r#"{"id":{"a":1},"method":"ping"}"#).await;
    assert_eq!(c.response().await["error"]["code"], -1100);
    c.send_text(r#"{"id":5,"method":"ping","params":[1]}"#)
        .await;
    let r = c.response().await;
    assert_eq!(
        (r["id"].as_u64(), r["error"]["code"].as_i64()),
        (Some(5), Some(-1100))
    );
    assert_eq!(c.error("no.such.method", json!({})).await, (400, -1013));

    let ping = c.call("ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
    assert_eq!(ping["rateLimits"][0]["rateLimitType"], "REQUEST_WEIGHT");
    let quiet = c.call("time", json!({"returnRateLimits": false})).await;
    assert!(quiet.get("rateLimits").is_none(), "{quiet}");
    assert!(quiet["result"]["serverTime"].as_u64().unwrap() > 0);
    let info = c
        .ok("exchangeInfo", json!({"symbols": ["BTCUSDT", "ETHUSDT"]}))
        .await;
    assert_eq!(info["symbols"].as_array().unwrap().len(), 2);
    assert_eq!(
        c.error("exchangeInfo", json!({"symbol": "NOPE"})).await,
        (400, -1121)
    );
    let book = c
        .ok("depth", json!({"symbol": "BTCUSDT", "limit": 5}))
        .await;
    assert!(book["bids"].is_array());

    // Authentication.
    let ed = Signing::Ed25519(k.ed25519.clone());
    let mut bad = ed.sign(Some(&k.ed25519_api_key), json!({}));
    bad["timestamp"] = json!(now_ms() + 1); // signed over another timestamp
    assert_eq!(c.error("session.logon", bad).await, (400, -1022));
    assert_eq!(
        c.error("session.logon", ed.sign(Some("no-such-key"), json!({})))
            .await,
        (401, -2015)
    );
    // Session logon is for Ed25519 keys, as Binance's.
    assert_eq!(
        c.error(
            "session.logon",
            k.hmac.sign(Some(&k.hmac_api_key), json!({}))
        )
        .await
        .1,
        -2015
    );
    let hmac_bad_sig = Signing::Hmac("not-the-secret".into());
    assert_eq!(
        c.error(
            "order.status",
            hmac_bad_sig.sign(
                Some(&k.hmac_api_key),
                json!({"symbol": "BTCUSDT", "orderId": 1})
            )
        )
        .await,
        (400, -1022)
    );
    // Signed correctly, but two minutes old.
    let stale = k.hmac.sign_at(
        Some(&k.hmac_api_key),
        json!({"symbol": "BTCUSDT", "orderId": 1}),
        now_ms() - 120_000,
    );
    assert_eq!(c.error("order.status", stale).await, (400, -1021));

    // Bad parameters of a correctly signed request.
    let hm = |params: Value| k.hmac.sign(Some(&k.hmac_api_key), params);
    let order = json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                       "timeInForce": "GTC", "quantity": "0.001", "price": "abc"});
    assert_eq!(c.error("order.place", hm(order)).await, (400, -1100));
    let no_side = json!({"symbol": "BTCUSDT", "type": "LIMIT", "timeInForce": "GTC",
                         "quantity": "0.001", "price": "50000"});
    assert_eq!(c.error("order.place", hm(no_side)).await, (400, -1102));
    let nothing = json!({"symbol": "BTCUSDT", "orderId": 1});
    assert_eq!(c.error("order.status", hm(nothing)).await, (400, -2013));
    assert_eq!(
        c.error("order.status", json!({"symbol": "BTCUSDT", "orderId": 1}))
            .await,
        (400, -1102)
    );

    // Still serving; then a message over 64 KiB closes the connection.
    assert_eq!(c.ok("ping", json!({})).await, json!({}));
    let huge = format!(
        r#"{{"id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "a".repeat(70_000)
    );
    let _ = c.ws.send(Message::Text(huge.into())).await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the connection should close");
}
