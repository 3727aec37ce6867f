//! The Binance-compatible REST API over real sockets against the real binary: every
//! endpoint, Binance's field names and decimals, and every documented error, with the
//! server still serving afterwards.

mod common;

use common::{request, Client, Server};

/// Demo asset ids: BTC 0, ETH 1, USDT 2, USDC 3, TBILL 4; BTCUSDT is market 0.
fn fund(s: &Server, account: u32) {
    s.command(&format!(
        r#"{{"Deposit":{{"account":{account},"asset":0,"amount":1000000000}}}}"#
    ));
    s.command(&format!(
        r#"{{"Deposit":{{"account":{account},"asset":2,"amount":100000000000000}}}}"#
    ));
}

fn client(s: &Server, account: u32) -> Client {
    let (key, secret) = s.key(account);
    Client {
        addr: s.addr,
        key,
        secret,
    }
}

#[test]
fn public_endpoints_answer_as_binance() {
    let s = Server::start("rest-public");
    let r = s.get("/api/v3/ping");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert!(r.header("x-mbx-used-weight-1m").is_some(), "{r:?}");
    let t = s.get("/api/v3/time").json()["serverTime"].as_u64().unwrap();
    assert!(t.abs_diff(common::now_ms()) < 60_000);

    let info = s.get("/api/v3/exchangeInfo").json();
    let symbols = info["symbols"].as_array().unwrap();
    let names: Vec<&str> = symbols
        .iter()
        .map(|m| m["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["BTCUSDT", "ETHUSDT", "USDCUSDT", "TBILLUSDC"]);
    let btc = &symbols[0];
    assert_eq!(btc["status"], "TRADING");
    assert_eq!(btc["baseAsset"], "BTC");
    assert_eq!(btc["quoteAsset"], "USDT");
    let filters: Vec<&str> = btc["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filterType"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "PRICE_FILTER",
            "LOT_SIZE",
            "MARKET_LOT_SIZE",
            "NOTIONAL",
            "PERCENT_PRICE_BY_SIDE",
            "MAX_NUM_ORDERS"
        ]
    );
    assert_eq!(btc["filters"][0]["tickSize"], "0.01000000");
    assert_eq!(btc["filters"][1]["stepSize"], "0.00001000");
    assert_eq!(btc["filters"][3]["minNotional"], "5.00000000");
    assert_eq!(btc["permissionSets"], serde_json::json!([["SPOT"]]));
    assert_eq!(btc["fulgurBaseAssetClass"], "CRYPTO");
    // The RWA pair needs the engine's permission 0 as well, named as Binance's trading
    // groups; the account answer lists the groups an account holds.
    let tbill = &symbols[3];
    assert_eq!(
        tbill["permissionSets"],
        serde_json::json!([["SPOT"], ["TRD_GRP_000"]])
    );
    assert_eq!(tbill["fulgurBaseAssetClass"], "RWA");
    assert_eq!(symbols[2]["fulgurBaseAssetClass"], "STABLECOIN");
    assert!(info["rateLimits"].as_array().unwrap().len() >= 3);
    let one = s
        .get("/api/v3/exchangeInfo?symbols=%5B%22ETHUSDT%22%5D")
        .json();
    assert_eq!(one["symbols"][0]["symbol"], "ETHUSDT");

    // A book and a trade, through the operator endpoint.
    fund(&s, 11);
    fund(&s, 12);
    let c1 = client(&s, 11);
    let c2 = client(&s, 12);

    c1.place("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.5&price=97000.01");

    c1.place("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.25&price=96999");
    c2.place("symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.1");

    let d = s.get("/api/v3/depth?symbol=BTCUSDT&limit=5").json();
    assert_eq!(
        d["bids"],
        serde_json::json!([["96999.00000000", "0.25000000"]])
    );
    assert_eq!(
        d["asks"],
        serde_json::json!([["97000.01000000", "0.40000000"]])
    );
    // lastUpdateId is the market's BookLevel update id: three level changes so far.
    assert_eq!(d["lastUpdateId"], 3);

    let trades = s.get("/api/v3/trades?symbol=BTCUSDT").json();
    assert_eq!(trades.as_array().unwrap().len(), 1);
    assert_eq!(trades[0]["price"], "97000.01000000");
    assert_eq!(trades[0]["qty"], "0.10000000");
    assert_eq!(trades[0]["quoteQty"], "9700.00100000");
    assert_eq!(trades[0]["isBuyerMaker"], false);
    let agg = s.get("/api/v3/aggTrades?symbol=BTCUSDT").json();
    assert_eq!(agg[0]["p"], "97000.01000000");
    assert_eq!(agg[0]["f"], agg[0]["l"]);

    let k = s.get("/api/v3/klines?symbol=BTCUSDT&interval=1m").json();
    assert_eq!(k[0][1], "97000.01000000");
    assert_eq!(k[0][5], "0.10000000");
    assert_eq!(k[0][8], 1);
    for i in [
        "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
    ] {
        let k = s.get(&format!("/api/v3/klines?symbol=BTCUSDT&interval={i}"));
        assert_eq!(k.json().as_array().unwrap().len(), 1, "{i}");
    }
    let t = s.get("/api/v3/ticker/24hr?symbol=BTCUSDT").json();
    assert_eq!(t["lastPrice"], "97000.01000000");
    assert_eq!(t["volume"], "0.10000000");
    assert_eq!(t["bidPrice"], "96999.00000000");
    assert_eq!(t["askPrice"], "97000.01000000");
    assert_eq!(t["count"], 1);
    let all = s.get("/api/v3/ticker/24hr").json();
    assert_eq!(all.as_array().unwrap().len(), 4);
    let p = s.get("/api/v3/ticker/price?symbol=BTCUSDT").json();
    assert_eq!(p["price"], "97000.01000000");
    let b = s.get("/api/v3/ticker/bookTicker?symbol=BTCUSDT").json();
    assert_eq!(
        (&b["bidPrice"], &b["bidQty"], &b["askPrice"], &b["askQty"]),
        (
            &serde_json::json!("96999.00000000"),
            &serde_json::json!("0.25000000"),
            &serde_json::json!("97000.01000000"),
            &serde_json::json!("0.40000000")
        )
    );
    let a = s.get("/api/v3/avgPrice?symbol=BTCUSDT").json();
    assert_eq!(
        (a["mins"].as_u64(), a["price"].as_str()),
        (Some(5), Some("97000.01000000"))
    );

    // Errors: Binance codes and texts.
    for (path, code, msg) in [
        ("/api/v3/depth?symbol=NOPE", -1121, "Invalid symbol."),
        (
            "/api/v3/depth",
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        (
            "/api/v3/depth?symbol=btc%20usdt",
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=7m",
            -1120,
            "Invalid interval.",
        ),
        (
            "/api/v3/depth?symbol=BTCUSDT&limit=abc",
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        ),
        (
            "/api/v3/trades?symbol=BTCUSDT&symbol=ETHUSDT",
            -1101,
            "Duplicate values for a parameter detected.",
        ),
        (
            "/api/v3/ticker/price?symbol=BTCUSDT&symbols=%5B%5D",
            -1128,
            "Combination of optional parameters invalid.",
        ),
        (
            "/api/v3/nowhere",
            -1099,
            "Not found, unauthenticated, or unauthorized.",
        ),
    ] {
        let r = s.get(path);
        assert!(r.status >= 400, "{path}: {r:?}");
        assert_eq!(
            (r.code(), r.json()["msg"].as_str().unwrap()),
            (code, msg),
            "{path}"
        );
    }
    assert_eq!(s.get("/api/v3/ping").status, 200, "still serving");
    assert!(s.stop().success());
}

#[test]
fn signed_endpoints_orders_and_errors() {
    let s = Server::start("rest-signed");
    fund(&s, 11);
    fund(&s, 12);
    let c1 = client(&s, 11);
    let c2 = client(&s, 12);
    let maker = client(&s, 1); // the demo's maker holds the RWA permission

    // Authentication.
    let bad_key = Client {
        addr: s.addr,
        key: "x".repeat(64),
        secret: c1.secret.clone(),
    };
    let r = bad_key.signed("GET", "/api/v3/account", "");
    assert_eq!((r.status, r.code()), (401, -2015), "{r:?}");
    assert_eq!(
        r.json()["msg"],
        "Invalid API-key, IP, or permissions for action."
    );
    let wrong_secret = Client {
        addr: s.addr,
        key: c1.key.clone(),
        secret: "y".repeat(64),
    };
    let r = wrong_secret.signed("GET", "/api/v3/account", "");
    assert_eq!(r.code(), -1022, "{r:?}");
    assert_eq!(r.json()["msg"], "Signature for this request is not valid.");
    let r = request(s.addr, "GET", "/api/v3/account?timestamp=1", &[], b"").unwrap();
    assert_eq!(r.code(), -2014, "{r:?}");
    let old = format!("timestamp={}", common::now_ms() - 10_000);
    let r = request(
        s.addr,
        "GET",
        &format!(
            "/api/v3/account?{old}&signature={}",
            common::hmac_hex(&c1.secret, &old)
        ),
        &[("X-MBX-APIKEY", &c1.key)],
        b"",
    )
    .unwrap();
    assert_eq!(
        (r.code(), r.json()["msg"].as_str().unwrap()),
        (
            -1021,
            "Timestamp for this request is outside of the recvWindow."
        )
    );
    let r = c1.signed("GET", "/api/v3/account", "recvWindow=70000");
    assert_eq!(r.code(), -1131, "{r:?}");

    // Account.
    let acct = c1.signed("GET", "/api/v3/account", "").json();
    assert_eq!(acct["permissions"], serde_json::json!(["SPOT"]));
    let r = maker.signed("GET", "/api/v3/account", "");
    assert_eq!(
        r.json()["permissions"],
        serde_json::json!(["SPOT", "TRD_GRP_000"]),
        "{r:?}"
    );
    let usdt = acct["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USDT")
        .unwrap()
        .clone();
    assert_eq!(
        (usdt["free"].as_str(), usdt["locked"].as_str()),
        (Some("1000000.00000000"), Some("0.00000000"))
    );
    assert_eq!(acct["canTrade"], true);

    // A resting limit order, answered FULL by default.
    let r = c1.signed_body(
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000&newClientOrderId=mm-1",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-mbx-order-count-10s").is_some(), "{r:?}");
    assert!(r.header("x-mbx-order-count-1d").is_some(), "{r:?}");
    let o = r.json();
    assert_eq!(o["status"], "NEW");
    assert_eq!(o["clientOrderId"], "mm-1");
    assert_eq!(o["price"], "96000.00000000");
    assert_eq!(o["origQty"], "0.01000000");
    assert_eq!(o["fills"], serde_json::json!([]));
    let id = o["orderId"].as_u64().unwrap();
    let usdt_locked = c1
        .signed("GET", "/api/v3/account", "omitZeroBalances=true")
        .json()["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "USDT")
        .unwrap()["locked"]
        .clone();
    assert_eq!(usdt_locked, "960.00000000");

    let q = c1
        .signed(
            "GET",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        )
        .json();
    assert_eq!(
        (q["status"].as_str(), q["side"].as_str(), q["type"].as_str()),
        (Some("NEW"), Some("BUY"), Some("LIMIT"))
    );
    let q = c1
        .signed(
            "GET",
            "/api/v3/order",
            "symbol=BTCUSDT&origClientOrderId=mm-1",
        )
        .json();
    assert_eq!(q["orderId"].as_u64(), Some(id));
    let open = c1
        .signed("GET", "/api/v3/openOrders", "symbol=BTCUSDT")
        .json();
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(
        c1.signed("GET", "/api/v3/openOrders", "")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Someone else's order is not found.
    let r = c2.signed(
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    );
    assert_eq!(
        (r.code(), r.json()["msg"].as_str().unwrap()),
        (-2013, "Order does not exist.")
    );

    // Amend keeping priority, then a market sell fills part of it.
    let r = c1.signed(
        "PUT",
        "/api/v3/order/amend/keepPriority",
        &format!("symbol=BTCUSDT&orderId={id}&newQty=0.008"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["amendedOrder"]["qty"], "0.00800000");
    let r = c2.place("symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.003&newOrderRespType=FULL");
    let m = r.json();
    assert_eq!(m["status"], "FILLED");
    assert_eq!(m["executedQty"], "0.00300000");
    assert_eq!(m["cummulativeQuoteQty"], "288.00000000");
    assert_eq!(m["fills"][0]["price"], "96000.00000000");
    assert_eq!(m["fills"][0]["commissionAsset"], "USDT");
    let q = c1
        .signed(
            "GET",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        )
        .json();
    assert_eq!(
        (q["status"].as_str(), q["executedQty"].as_str()),
        (Some("PARTIALLY_FILLED"), Some("0.00300000"))
    );
    let mine = c1
        .signed("GET", "/api/v3/myTrades", "symbol=BTCUSDT")
        .json();
    assert_eq!(mine[0]["isMaker"], true);
    assert_eq!(mine[0]["isBuyer"], true);
    assert_eq!(mine[0]["orderId"].as_u64(), Some(id));
    let theirs = c2
        .signed("GET", "/api/v3/myTrades", "symbol=BTCUSDT")
        .json();
    assert_eq!(
        (
            theirs[0]["isMaker"].as_bool(),
            theirs[0]["isBuyer"].as_bool()
        ),
        (Some(false), Some(false))
    );

    // Market buy by quote amount, RESULT.
    c1.place("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=97000");
    let r =
        c2.place("symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=970&newOrderRespType=RESULT");
    let m = r.json();
    assert_eq!(
        (
            m["status"].as_str(),
            m["executedQty"].as_str(),
            m["origQuoteOrderQty"].as_str()
        ),
        (Some("FILLED"), Some("0.01000000"), Some("970.00000000"))
    );
    assert!(m.get("fills").is_none());

    // cancelReplace: the open order is replaced by a new one.
    let r = c1.signed(
        "POST",
        "/api/v3/order/cancelReplace",
        &format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=95000&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={id}"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let cr = r.json();
    assert_eq!(
        (cr["cancelResult"].as_str(), cr["newOrderResult"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS"))
    );
    assert_eq!(cr["cancelResponse"]["status"], "CANCELED");
    assert_eq!(cr["newOrderResponse"]["status"], "NEW");
    let r = c1.signed(
        "POST",
        "/api/v3/order/cancelReplace",
        &format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=95000&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={id}"),
    );
    assert_eq!((r.status, r.code()), (400, -2022), "{r:?}");
    assert_eq!(r.json()["data"]["cancelResult"], "FAILURE");
    assert_eq!(r.json()["data"]["newOrderResult"], "NOT_ATTEMPTED");

    // Cancel; cancelling again is -2011; order/test; cancel-all; allOrders.
    let r = c1.signed(
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    );
    assert_eq!(
        (r.code(), r.json()["msg"].as_str().unwrap()),
        (-2011, "Unknown order sent."),
        "{r:?}"
    );
    let r = c1.signed(
        "POST",
        "/api/v3/order/test",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=95000",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    let r = c1.signed("DELETE", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().unwrap().len(), 2, "{r:?}");
    assert_eq!(r.json()[0]["status"], "CANCELED");
    let r = c1.signed("DELETE", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(r.code(), -2011, "{r:?}");
    let all = c1
        .signed("GET", "/api/v3/allOrders", "symbol=BTCUSDT")
        .json();
    assert!(all.as_array().unwrap().len() >= 3, "{all}");
    assert_eq!(all[0]["orderId"].as_u64(), Some(id));
    assert_eq!(all[0]["status"], "CANCELED");

    // The account's order counts, as the headers say them.
    let r = c1.signed("GET", "/api/v3/rateLimit/order", "");
    assert_eq!(r.status, 200, "{r:?}");
    let limits = r.json();
    assert_eq!(limits[0]["interval"], "SECOND");
    assert_eq!(limits[0]["limit"], 100);
    assert!(limits[0]["count"].as_u64().unwrap() >= 3, "{limits}");
    assert_eq!(limits[1]["interval"], "DAY");

    // Order errors, word for word.
    let cases: &[(&str, i64, &str)] = &[
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100&price=96000", -2010, "Account has insufficient balance for requested action."),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000.000000001", -1111, "Parameter 'price' has too much precision."),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000.005", -1013, "Filter failure: PRICE_FILTER"),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000015&price=96000", -1013, "Filter failure: LOT_SIZE"),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=96000", -1013, "Filter failure: NOTIONAL"),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000", -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=96000", -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."),
        ("symbol=BTCUSDT&side=UP&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000", -1117, "Invalid side."),
        ("symbol=BTCUSDT&side=BUY&type=STOP&quantity=0.01", -1116, "Invalid orderType."),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTX&quantity=0.01&price=96000", -1115, "Invalid timeInForce."),
        ("symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01&price=96000", -1106, "Parameter 'price' sent when not required."),
        ("symbol=BTCUSDT&side=BUY&type=MARKET", -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000&newClientOrderId=bad%20id", -1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'."),
        ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1e-2&price=96000", -1100, "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
        ("symbol=XYZ&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96000", -1121, "Invalid symbol."),
        ("symbol=BTCUSDT&side=SELL&type=LIMIT_MAKER&quantity=0.01&price=96400", -2010, "Order would immediately match and take."),
        ("symbol=TBILLUSDC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=99.5", -2010, "This symbol is not permitted for this account."),
    ];
    // A resting bid for the LIMIT_MAKER case to cross.

    c2.place("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=96500");
    for (params, code, msg) in cases {
        let r = c1.signed("POST", "/api/v3/order", params);
        assert_eq!(r.status, 400, "{params}: {r:?}");
        assert_eq!(
            (r.code(), r.json()["msg"].as_str().unwrap()),
            (*code, *msg),
            "{params}"
        );
    }
    let r = c1.signed("DELETE", "/api/v3/order", "symbol=BTCUSDT&orderId=999999");
    assert_eq!(r.code(), -2011);
    let r = c1.signed("GET", "/api/v3/order", "symbol=BTCUSDT&orderId=999999");
    assert_eq!(r.code(), -2013);
    let r = c1.signed("GET", "/api/v3/order", "symbol=BTCUSDT");
    assert_eq!(r.code(), -1102, "{r:?}");

    // None of the refused orders changed anything.
    assert_eq!(
        c1.signed("GET", "/api/v3/openOrders", "")
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(s.stop().success());
}

#[test]
fn operator_deposits_need_the_token() {
    let s = Server::start("rest-admin");
    let token = std::fs::read_to_string(s.data.join("admin-token")).unwrap();
    let body = br#"{"account":5,"asset":"USDT","amount":"1000.5"}"#;
    let r = request(
        s.addr,
        "POST",
        "/fulgur/v1/admin/deposit",
        &[("X-Fulgur-Admin-Token", "nope")],
        body,
    )
    .unwrap();
    assert_eq!((r.status, r.code()), (401, -1002), "{r:?}");
    let r = request(
        s.addr,
        "POST",
        "/fulgur/v1/admin/deposit",
        &[("X-Fulgur-Admin-Token", token.trim())],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["free"], "1000.50000000");
    let r = request(
        s.addr,
        "POST",
        "/fulgur/v1/admin/deposit",
        &[("X-Fulgur-Admin-Token", token.trim())],
        br#"{"account":5,"asset":"DOGE","amount":"1"}"#,
    )
    .unwrap();
    assert_eq!(r.code(), -1130, "{r:?}");
    // The CLI does the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulgur"))
        .args([
            "admin",
            "deposit",
            "--account",
            "5",
            "--asset",
            "BTC",
            "--amount",
            "0.5",
        ])
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--listen")
        .arg(s.addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (key, secret) = s.key(5);
    let c = Client {
        addr: s.addr,
        key,
        secret,
    };
    let acct = c
        .signed("GET", "/api/v3/account", "omitZeroBalances=true")
        .json();
    let assets: Vec<(&str, &str)> = acct["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["asset"].as_str().unwrap(), b["free"].as_str().unwrap()))
        .collect();
    assert_eq!(assets, [("BTC", "0.50000000"), ("USDT", "1000.50000000")]);
    assert!(s.stop().success());
}

#[test]
fn request_weight_is_limited_per_ip_with_429_then_418() {
    let s = Server::start("rest-limits");
    // exchangeInfo weighs 20: 300 of them use the minute's 6000; the 301st is refused
    // (or a later one, when the loop crosses a minute and the count restarts).
    let start_minute = common::now_ms() / 60_000;
    let refused_at = (0..700)
        .find(|_| s.get("/api/v3/exchangeInfo?symbol=BTCUSDT").status != 200)
        .expect("refused within two minutes' weight");
    if common::now_ms() / 60_000 == start_minute {
        assert_eq!(refused_at, 300);
    }
    let r = s.get("/api/v3/exchangeInfo?symbol=BTCUSDT");
    assert_eq!((r.status, r.code()), (429, -1003), "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.json()["msg"]
        .as_str()
        .unwrap()
        .starts_with("Too much request weight used"));
    // Going on after 429s is an IP ban: 418.
    let banned = (0..20)
        .map(|_| s.get("/api/v3/ping"))
        .find(|r| r.status == 418)
        .expect("banned");
    assert_eq!(banned.code(), -1003);
    assert!(banned.json()["msg"]
        .as_str()
        .unwrap()
        .starts_with("Way too much request weight used; IP banned until"));
    assert!(s.stop().success());
}

#[test]
fn ed25519_keys_sign_rest_requests() {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let s = Server::start("rest-ed25519");
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public = hex::encode(signing.verifying_key().as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulgur"))
        .args([
            "keys",
            "create",
            "--json",
            "--account",
            "21",
            "--ed25519",
            &public,
        ])
        .arg("--data-dir")
        .arg(&s.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = v["apiKey"].as_str().unwrap();
    assert!(v.get("secretKey").is_none(), "{v}");
    let sign = |payload: &str| {
        let sig = base64::engine::general_purpose::STANDARD
            .encode(signing.sign(payload.as_bytes()).to_bytes());
        // Base64 carries '+', '/' and '=': percent-encoded in a query string, as Binance asks.
        sig.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    };
    let q = format!("omitZeroBalances=true&timestamp={}", common::now_ms());
    let r = request(
        s.addr,
        "GET",
        &format!("/api/v3/account?{q}&signature={}", sign(&q)),
        &[("X-MBX-APIKEY", key)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uid"], 21);
    // Signed by another key: refused.
    let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    let bad = base64::engine::general_purpose::STANDARD.encode(other.sign(q.as_bytes()).to_bytes());
    let bad = bad
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let r = request(
        s.addr,
        "GET",
        &format!("/api/v3/account?{q}&signature={bad}"),
        &[("X-MBX-APIKEY", key)],
        b"",
    )
    .unwrap();
    assert_eq!(r.code(), -1022, "{r:?}");
    assert!(s.stop().success());
}
