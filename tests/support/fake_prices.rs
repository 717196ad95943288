//! A fake CoinGecko `/api/v3/simple/price` on loopback with scripted prices: tests move a price and
//! watch the bot react. It can also answer 429 or 500 to stand for a provider that rate limits or is
//! down. Plain std (a thread per connection): it serves a handful of requests per test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// (coin id, currency) → the JSON number text served.
    prices: Mutex<HashMap<(String, String), String>>,
    /// 0: answer normally; else answer this HTTP status.
    fail_with: AtomicU16,
    requests: AtomicU64,
    /// The most coin ids one request asked for.
    max_ids: AtomicU64,
    /// Milliseconds to wait before answering (a slow provider).
    delay_ms: AtomicU64,
    stop: AtomicBool,
}

pub struct FakePrices {
    pub url: String,
    state: Arc<State>,
}

impl FakePrices {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake price server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self { url, state }
    }

    /// Sets the price of `coin` in `currency`, as the JSON number text CoinGecko would send.
    pub fn set(&self, coin: &str, currency: &str, price: &str) {
        self.state
            .prices
            .lock()
            .unwrap()
            .insert((coin.to_owned(), currency.to_owned()), price.to_owned());
    }

    /// Answers every request with this HTTP status (0: normal answers again).
    pub fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Answers every request `delay` late (a slow provider).
    pub fn delay(&self, delay: std::time::Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// The most coin ids one request has asked for so far.
    pub fn max_ids_per_request(&self) -> u64 {
        self.state.max_ids.load(Ordering::Relaxed)
    }
}

impl Drop for FakePrices {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(mut stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match state.fail_with.load(Ordering::Relaxed) {
        0 if target.starts_with("/api/v3/simple/price?") => (200, prices_body(target, state)),
        0 => (404, r#"{"error":"not found"}"#.to_owned()),
        429 => (
            429,
            r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit"}}"#
                .to_owned(),
        ),
        code => (code, "<html>down</html>".to_owned()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn prices_body(target: &str, state: &State) -> String {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| v.replace("%2C", ",").to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (ids, currencies) = (param("ids"), param("vs_currencies"));
    let asked = ids.split(',').filter(|s| !s.is_empty()).count() as u64;
    state.max_ids.fetch_max(asked, Ordering::Relaxed);
    let prices = state.prices.lock().unwrap();
    let mut coins = Vec::new();
    for id in ids.split(',').filter(|s| !s.is_empty()) {
        let quotes: Vec<String> = currencies
            .split(',')
            .filter_map(|c| {
                prices
                    .get(&(id.to_owned(), c.to_owned()))
                    .map(|p| format!("\"{c}\":{p}"))
            })
            .collect();
        if !quotes.is_empty() {
            coins.push(format!("\"{id}\":{{{}}}", quotes.join(",")));
        }
    }
    format!("{{{}}}", coins.join(","))
}
