//! What the integration tests share: a real `fulgur serve` on a free port with a fresh data
//! directory, a small HTTP/1.1 client, API keys made by the real `fulgur keys create`, and
//! Binance request signing.
#![allow(dead_code)]

pub mod chain;
pub mod ln;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Data directories of the servers this test binary started, by address: the operator
/// endpoints want the directory's admin token.
static DATA_DIRS: std::sync::Mutex<Vec<(SocketAddr, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// The admin token of the server at `addr` (one started with `Server::start*`).
pub fn admin_token(addr: SocketAddr) -> String {
    let dirs = DATA_DIRS.lock().unwrap();
    let (_, data) = dirs
        .iter()
        .find(|(a, _)| *a == addr)
        .expect("a server started by these helpers");
    std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// `POST /fulgur/v1/admin/<area>/<action>` with the server's admin token; the answer.
pub fn operator_request(
    s: &Server,
    area: &str,
    action: &str,
    body: &str,
) -> std::io::Result<Response> {
    let token = admin_token(s.addr);
    request(
        s.addr,
        "POST",
        &format!("/fulgur/v1/admin/{area}/{action}"),
        &[
            ("X-Fulgur-Admin-Token", &token),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

/// An operator action that must succeed; its JSON answer.
pub fn operator(
    s: &Server,
    area: &str,
    action: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let r = operator_request(s, area, action, &body.to_string()).unwrap();
    assert_eq!(r.status, 200, "{area}/{action}: {}", r.body);
    r.json()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// `fulgur serve` on a new data directory (the demo markets, no flow).
    pub fn start(name: &str) -> Server {
        let data = std::env::temp_dir().join(format!("fulgur-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        Server::start_in(data)
    }

    /// `fulgur serve` on `data` (removed when the server is dropped).
    pub fn start_in(data: PathBuf) -> Server {
        Server::start_with(data, None, &[])
    }

    /// `fulgur serve` on `data` with a config file and environment variables, not waiting
    /// for it to answer (a crash test's server may die before it listens).
    pub fn spawn_with(
        data: PathBuf,
        config: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Server {
        Server::spawn_cmd("serve", data, config, env)
    }

    /// `fulgur demo` (its flow running, the web account's key served to the page) on a new
    /// data directory, once it answers `/health`.
    pub fn start_demo(name: &str) -> Server {
        let data = std::env::temp_dir().join(format!("fulgur-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let server = Server::spawn_cmd("demo", data, None, &[]);
        server.wait_healthy();
        server
    }

    fn spawn_cmd(
        subcommand: &str,
        data: PathBuf,
        config: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut p = Process::new(env!("CARGO_BIN_EXE_fulgur"));
        p.args([subcommand, "--data-dir"])
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(c) = config {
            p.arg("--config").arg(c);
        }
        for (k, v) in env {
            p.env(k, v);
        }
        let child = p.spawn().unwrap();
        DATA_DIRS.lock().unwrap().push((addr, data.clone()));
        Server { child, addr, data }
    }

    /// `fulgur serve` on `data` with a config file and environment variables, once it
    /// answers `/health`.
    pub fn start_with(
        data: PathBuf,
        config: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Server {
        let server = Server::spawn_with(data, config, env);
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = request(self.addr, "GET", "/health", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fulgur did not become healthy");
    }

    /// Stops with SIGTERM, as an operator would; the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// A new API key of `account` (HMAC): (api key, secret).
    pub fn key(&self, account: u32) -> (String, String) {
        let out = Process::new(env!("CARGO_BIN_EXE_fulgur"))
            .args([
                "keys",
                "create",
                "--json",
                "--account",
                &account.to_string(),
            ])
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["apiKey"].as_str().unwrap().to_string(),
            v["secretKey"].as_str().unwrap().to_string(),
        )
    }

    /// An engine command through the loopback operator endpoint; its reply.
    pub fn command(&self, json: &str) -> serde_json::Value {
        let token = admin_token(self.addr);
        let r = request(
            self.addr,
            "POST",
            "/fulgur/v1/commands",
            &[("X-Fulgur-Admin-Token", &token)],
            json.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"").unwrap()
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The Binance error code of an error answer.
    pub fn code(&self) -> i64 {
        self.json()["code"].as_i64().unwrap_or(0)
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

pub fn hmac_hex(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A Binance API client of one key.
pub struct Client {
    pub addr: SocketAddr,
    pub key: String,
    pub secret: String,
}

impl Client {
    /// A SIGNED request: `params` plus timestamp, signed, in the query string.
    pub fn signed(&self, method: &str, path: &str, params: &str) -> Response {
        let sep = if params.is_empty() { "" } else { "&" };
        let q = format!("{params}{sep}timestamp={}", now_ms());
        let sig = hmac_hex(&self.secret, &q);
        request(
            self.addr,
            method,
            &format!("{path}?{q}&signature={sig}"),
            &[("X-MBX-APIKEY", &self.key)],
            b"",
        )
        .unwrap()
    }

    /// A new order (`POST /api/v3/order`) that must be accepted.
    pub fn place(&self, params: &str) -> Response {
        let r = self.signed("POST", "/api/v3/order", params);
        assert_eq!(r.status, 200, "{params}: {r:?}");
        r
    }

    /// A SIGNED request with its parameters in a form body.
    pub fn signed_body(&self, method: &str, path: &str, params: &str) -> Response {
        let q = format!("{params}&timestamp={}", now_ms());
        let sig = hmac_hex(&self.secret, &q);
        request(
            self.addr,
            method,
            path,
            &[
                ("X-MBX-APIKEY", &self.key),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("{q}&signature={sig}").as_bytes(),
        )
        .unwrap()
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ccxt virtualenv's python (the last line `scripts/python-env.sh` prints), or why not.
pub fn python() -> Result<PathBuf, String> {
    script("python-env.sh", &[]).map(PathBuf::from)
}

/// Runs `scripts/<name>` with `args`; the last line it prints, or why it failed.
pub fn script(name: &str, args: &[&str]) -> Result<String, String> {
    let out = Process::new("bash")
        .arg(root().join("scripts").join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (
        out.status.success(),
        stdout.lines().rev().find(|l| !l.trim().is_empty()),
    ) {
        (true, Some(line)) => Ok(line.trim().to_string()),
        _ => Err(format!(
            "scripts/{name} {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}
