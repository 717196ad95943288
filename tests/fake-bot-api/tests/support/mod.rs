//! Test helpers: a tiny blocking HTTP/1.1 client on std's TcpStream (one request per connection,
//! `Connection: close`), and a bot token.
#![allow(dead_code)] // each test file uses a different part of it

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// A token of the real shape: bot id 123456, a 35-character secret.
pub const TOKEN: &str = "123456:AAE_abcdefghijklmnopqrstuvwxyz-0123";
pub const BOT_ID: i64 = 123_456;

/// No single test request may take longer than this (long polls in tests are shorter).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {} {}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends one request and reads the whole answer.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    write_request(&mut stream, method, path, content_type, body)?;
    read_response(&mut stream)
}

pub fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Reads until EOF and parses the response (Content-Length or chunked body).
pub fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        let text = String::from_utf8_lossy(&raw).into_owned();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    try_request(addr, method, path, content_type, body)
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, None, b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// POSTs a Bot API call with JSON parameters, like teloxide does.
pub fn call(addr: SocketAddr, token: &str, method: &str, params: &Value) -> Response {
    post_json(addr, &format!("/bot{token}/{method}"), params)
}

/// A successful call's `result`; panics with the answer otherwise.
pub fn result(addr: SocketAddr, token: &str, method: &str, params: &Value) -> Value {
    let response = call(addr, token, method, params);
    let json = response.json();
    assert_eq!(
        (response.status, &json["ok"]),
        (200, &Value::Bool(true)),
        "{method} failed: {json}"
    );
    json["result"].clone()
}

/// The update ids in a getUpdates result.
pub fn update_ids(result: &Value) -> Vec<i64> {
    result
        .as_array()
        .expect("getUpdates result is an array")
        .iter()
        .map(|u| u["update_id"].as_i64().expect("update_id"))
        .collect()
}
