//! The operator commands' client (`fulgur admin ...`): one HTTP/1.1 request per connection to
//! the local server's admin endpoints. They need so little of HTTP (a POST with a JSON body,
//! the status and body of the answer) that a client crate would be all weight.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, send and read each give up after this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The admin endpoints answer small JSON objects; anything bigger is not ours.
const MAX_RESPONSE: u64 = 1 << 20;

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Nothing listens there: the server is not running (or listens elsewhere).
    NotRunning(SocketAddr),
    /// Anything else: the text says what.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRunning(a) => write!(
                f,
                "no Fulgur server answers at {a}: is it running, with this --listen (or --config)?"
            ),
            Error::Other(m) => f.write_str(m),
        }
    }
}

/// Where to reach a server that listens on `listen`: a wildcard address (0.0.0.0, ::) is
/// reached on this host's loopback.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// `POST /fulgur/v1/admin/deposit` `{"account":N,"asset":"USDT","amount":"1000.5"}` with the
/// admin token, to the server listening on `listen`.
pub fn deposit(
    listen: SocketAddr,
    token: &str,
    account: u32,
    asset: &str,
    amount: &str,
) -> Result<Response, Error> {
    #[derive(serde::Serialize)]
    struct Deposit<'a> {
        account: u32,
        asset: &'a str,
        amount: &'a str,
    }
    let body = serde_json::to_string(&Deposit {
        account,
        asset,
        amount,
    })
    .map_err(|e| Error::Other(e.to_string()))?;
    post_json(
        connect_addr(listen),
        "/fulgur/v1/admin/deposit",
        &[("X-Fulgur-Admin-Token", token)],
        &body,
        TIMEOUT,
    )
}

/// One POST with a JSON body over a fresh connection (`Connection: close`); returns the
/// status and the body of the answer, whatever the status.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, Error> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::NotRunning(addr),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            Error::Other(format!("{addr}: no answer within {} s", timeout.as_secs()))
        }
        _ => Error::Other(format!("{addr}: {e}")),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fulgur/{}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in headers {
        // A line break in a value would start a header (or a request) of its own.
        if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
            return Err(Error::Other(format!("header {name}: bad characters")));
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);

    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream.write_all(request.as_bytes()).map_err(io_err)?;
    stream.flush().map_err(io_err)?;

    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(io_err)?;
    parse_response(&raw).map_err(|m| Error::Other(format!("{addr}: {m}")))
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the answer's headers are not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;

    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "bad Content-Length".to_string())?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("the answer ended before its Content-Length")?
            .to_vec()
    } else {
        // Neither: the body runs to the end of the connection.
        rest.to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| "the answer's body is not UTF-8")?;
    Ok(Response { status, body })
}

/// `Transfer-Encoding: chunked`: hex size line, data, CRLF; a zero size ends it.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "a malformed chunked body".to_string();
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_line = std::str::from_utf8(&rest[..eol]).map_err(|_| bad())?;
        // Chunk extensions (`;name=value`) carry nothing we need.
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(bad)?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    /// Takes one connection, reads one request (headers and Content-Length body), answers
    /// `answer` and closes; yields the request as received.
    fn fake_server(answer: String) -> (SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, handle)
    }

    #[test]
    fn deposit_posts_the_json_with_the_token() {
        let (addr, server) = fake_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"ok\":true}\n".into(),
        );
        let r = deposit(addr, "tok123", 5, "USDT", "1000.5").unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "{\"ok\":true}\n".into()
            }
        );
        assert!(r.is_success());
        let req = server.join().unwrap();
        let body = "{\"account\":5,\"asset\":\"USDT\",\"amount\":\"1000.5\"}";
        assert!(
            req.starts_with("POST /fulgur/v1/admin/deposit HTTP/1.1\r\n"),
            "{req}"
        );
        for line in [
            format!("Host: {addr}"),
            "X-Fulgur-Admin-Token: tok123".into(),
            "Content-Type: application/json".into(),
            format!("Content-Length: {}", body.len()),
            "Connection: close".into(),
        ] {
            assert!(req.contains(&format!("{line}\r\n")), "{line} in {req}");
        }
        assert!(req.ends_with(&format!("\r\n\r\n{body}")), "{req}");
    }

    #[test]
    fn an_error_answer_is_returned_with_its_body() {
        let error = "{\"code\":-1002,\"msg\":\"You are not authorized to execute this request.\"}";
        let (addr, server) = fake_server(format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{error}",
            error.len()
        ));
        let r = deposit(addr, "wrong", 1, "BTC", "1").unwrap();
        assert_eq!(r.status, 401);
        assert!(!r.is_success());
        assert_eq!(r.body, error);
        server.join().unwrap();
    }

    #[test]
    fn chunked_and_unsized_bodies() {
        let (addr, server) = fake_server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n".into(),
        );
        let r = post_json(addr, "/x", &[], "{}", TIMEOUT).unwrap();
        assert_eq!(r.body, "{\"a\":1}");
        server.join().unwrap();
        let (addr, server) = fake_server("HTTP/1.0 503 Service Unavailable\r\n\r\nbusy".into());
        let r = post_json(addr, "/x", &[], "{}", TIMEOUT).unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "busy"));
        server.join().unwrap();
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SMTP 200\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn no_server_is_not_running() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: the port refuses connections.
        let e = deposit(addr, "t", 1, "BTC", "1").unwrap_err();
        assert_eq!(e, Error::NotRunning(addr));
        assert!(e.to_string().contains("is it running"));
    }

    #[test]
    fn header_values_cannot_smuggle_lines() {
        // Refused before connecting: nothing listens on the discard port.
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = post_json(addr, "/x", &[("X-A", "a\r\nX-B: b")], "", TIMEOUT).unwrap_err();
        assert!(matches!(e, Error::Other(m) if m.contains("X-A")));
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        let a = |s: &str| connect_addr(s.parse().unwrap()).to_string();
        assert_eq!(a("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(a("[::]:8080"), "[::1]:8080");
        assert_eq!(a("10.1.2.3:80"), "10.1.2.3:80");
    }
}
