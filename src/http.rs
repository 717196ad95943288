//! The HTTP side: `GET /healthz` and `GET /metrics`, on the socket systemd passes or the `listen`
//! address (see `systemd::activation`); in webhook mode also Telegram's route (`crate::webhook`).
//!
//! `/healthz` is cheap and makes no Telegram call: 200 when the update loop is live (the same
//! `Liveness` the watchdog reads) and this process holds its instance lock (it cannot serve otherwise:
//! the listener is opened after the lock); 503 with a JSON reason when the loop made no progress.
//!
//! With the PostgreSQL lease, a standby serves `/healthz` and `/metrics` too ([`StandbyServer`]: its
//! loop is the lease acquisition, its role "standby"); anything else, Telegram's webhook route included,
//! gets 503 until it leads, when the leader's server takes over the same listener.
//!
//! The listener is public in webhook mode, so what a client can hold is bounded ([`Limits`]): at most
//! `max_connections` connections are served at once (the rest wait in the kernel's backlog, costing
//! no file descriptor), a request head must arrive within `header_read_timeout` (which also closes
//! a kept-alive connection that sends no next request), and a response the client does not read is
//! cut after `send_timeout`. A stop lets requests in progress finish; dropping the server closes
//! every connection at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::live_status::LiveStatus;
use crate::systemd::watchdog::Liveness;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub liveness: Arc<Liveness>,
    pub status: Arc<LiveStatus>,
    /// The loop is live while it beat within this window (or is inside a declared operation).
    pub window: Duration,
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match state.liveness.check(state.window) {
        Ok(()) => {
            let body = serde_json::json!({"status": "ok", "state": state.status.status_line()});
            (StatusCode::OK, axum::Json(body))
        }
        Err(stall) => {
            let body = serde_json::json!({"status": "unhealthy", "reason": stall.to_string()});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.status.metrics.encode(),
    )
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What one listener lets its clients hold. The URL is public in webhook mode: anyone can open
/// connections, send half a request head or stall, so every way to hold a connection is bounded in
/// number or time (the request body, which only the webhook reads, is bounded by `crate::webhook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Further connections wait in the listener's backlog, in the
    /// kernel: they cost this process no file descriptor and no memory, and are served in their
    /// order of arrival as soon as a connection ends (which the timeouts below guarantee). Closing
    /// them at once instead would turn away Telegram or the proxy as readily as an attacker, and
    /// cost an accept and a close per attempt while the attacker keeps the cap full.
    pub max_connections: usize,
    /// How long a request head (request line and headers) may take to arrive, from the moment the
    /// server waits for one: on a new connection, and on a kept-alive one between two requests. So
    /// it also closes an idle connection that never sends its next request.
    pub header_read_timeout: Duration,
    /// How long a response may wait for the client to take any more of it (nginx's `send_timeout`):
    /// a client that pipelines requests and never reads the answers would otherwise hold its
    /// connection for ever, hyper having no write timeout.
    pub send_timeout: Duration,
}

impl Default for Limits {
    /// The production values. 256 connections leave most of the unit's `LimitNOFILE=4096` to
    /// Telegram, the price API, the database and journald; Telegram itself uses one (the webhook is
    /// set with `max_connections = 1`), Prometheus and a proxy a few more.
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// The most a connection buffers of a request head or of a response (hyper's default is ~400 KiB).
/// Telegram's heads are well under 1 KiB; a head over this is refused (431). Bounds the memory
/// `max_connections` stalled clients can pin to 64 KiB each.
const CONNECTION_BUFFER: usize = 64 * 1024;

/// An accept that failed for want of resources (EMFILE, ENOBUFS, …) is retried after this, doubled
/// on each failure in a row up to [`ACCEPT_BACKOFF_MAX`], so a shortage is not a busy loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves [`router`] plus `extra` (the webhook route, in webhook mode) under [`Limits::default`]
/// until `cancel`; requests in progress then finish.
pub async fn serve(
    listener: std::net::TcpListener,
    state: HttpState,
    extra: Option<Router>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = match extra {
        Some(extra) => router(state).merge(extra),
        None => router(state),
    };
    serve_with_limits(listener, app, Limits::default(), cancel).await
}

/// Serves `app` on `listener` within `limits` until `cancel`: then no connection is accepted any
/// more, idle connections close, and requests in progress finish (each within its own bounds).
/// Dropping the returned future (aborting its task) closes every connection at once.
///
/// hyper serves each connection (HTTP/1.1, header read timeout on tokio's timer); this loop is
/// hand-written because axum's `serve` has neither a connection cap nor a header timeout, and
/// hyper-util's `auto` server has no accept loop: what is left is the cap (a semaphore, as in
/// mini-redis) and the backoff on accept errors.
pub async fn serve_with_limits(
    listener: std::net::TcpListener,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Owns every connection's task: dropping this future aborts them all (`StandbyServer::stop`).
    let mut connections: JoinSet<()> = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            // Reap the tasks of closed connections, so the set holds the open ones only.
            Some(_) = connections.join_next() => continue,
            accepted = accept_within_cap(&listener, &slots) => accepted,
        };
        match accepted {
            Ok((stream, slot)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                connections.spawn(serve_connection(
                    stream,
                    app.clone(),
                    limits,
                    cancel.clone(),
                    slot,
                ));
            }
            // This client gave up before it was accepted: nothing is wrong with the listener.
            Err(e) if is_this_connections_error(&e) => {}
            Err(e) => {
                tracing::warn!(
                    "cannot accept an HTTP connection: {e}; trying again in {} ms",
                    backoff.as_millis()
                );
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Waits for a free slot, then for a connection. While every slot is taken nothing is accepted:
/// new connections wait in the kernel's backlog (see [`Limits::max_connections`]).
async fn accept_within_cap(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(tokio::net::TcpStream, OwnedSemaphorePermit)> {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, _peer) = listener.accept().await?;
    Ok((stream, slot))
}

fn is_this_connections_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One connection, until the client or a limit closes it, or `cancel` (then the request in
/// progress finishes and the connection closes). `_slot` is given back when it ends.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    cancel: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(CONNECTION_BUFFER)
        .serve_connection(
            TokioIo::new(SendBounded::new(stream, limits.send_timeout)),
            TowerToHyperService::new(app),
        );
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // A timeout, a reset or a malformed head: the client's doing, worth no more than debug.
    if let Err(e) = ended {
        tracing::debug!("HTTP connection closed: {e}");
    }
}

/// How long a standby's server may take to finish its requests once the lease is ours.
const STANDBY_DRAIN: Duration = Duration::from_secs(2);

/// A standby's server (see [`StandbyServer::start`]).
pub struct StandbyServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl StandbyServer {
    /// Serves [`router`] on a duplicate of `listener` (the leader serves the original later), every
    /// other path 503, until [`StandbyServer::stop`] or `cancel`.
    pub fn start(
        listener: &std::net::TcpListener,
        state: HttpState,
        cancel: &CancellationToken,
    ) -> std::io::Result<Self> {
        let duplicate = listener.try_clone()?;
        let not_leading = Router::new().fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "this instance is a standby: another host holds the lease\n",
            )
        });
        let stop = cancel.child_token();
        let task = tokio::spawn(serve(duplicate, state, Some(not_leading), stop.clone()));
        Ok(Self { stop, task })
    }

    /// Ends the server before the leader's starts: the requests in progress may finish for
    /// [`STANDBY_DRAIN`], then it is aborted (a client that stalls mid-request must not hold up the
    /// leader). Connections that arrive meanwhile wait in the listener's backlog.
    pub async fn stop(mut self) {
        self.stop.cancel();
        match tokio::time::timeout(STANDBY_DRAIN, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("the standby's HTTP server: {e}"),
            Ok(Err(e)) => tracing::warn!("the standby's HTTP server: {e}"),
            Err(_) => self.task.abort(),
        }
    }
}

/// A connection whose writes fail once one has waited [`Limits::send_timeout`] for the client to
/// make room; any progress starts the wait anew. Written here because hyper has no write timeout
/// and the crate that has one (tokio-io-timeout) is not in our dependency tree: forty lines are
/// less to review than a new crate to vet for licence, advisories and `debian/copyright`.
struct SendBounded {
    stream: tokio::net::TcpStream,
    bound: Duration,
    /// Running while a write waits for the client; `None` after every write that went through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SendBounded {
    fn new(stream: tokio::net::TcpStream, bound: Duration) -> Self {
        Self {
            stream,
            bound,
            stalled: None,
        }
    }

    /// After a write came back pending: pending still, or an error once the bound has passed.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let bound = self.bound;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(bound)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client took none of the response for {} ms",
                    bound.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn written(
        &mut self,
        result: Poll<std::io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match result {
            Poll::Pending => self.poll_stalled(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for SendBounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendBounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    // A TCP stream's flush and shutdown never wait for the client.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! The limits against hostile clients, on an in-process server with short timeouts. The same
    //! limits at their production values, on the real binary: `tests/hostile_clients.rs`.

    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const HEAD_TIMEOUT: Duration = Duration::from_millis(400);
    /// The longest any awaited event may take beyond its own timeout on a busy test machine.
    const SLACK: Duration = Duration::from_secs(5);

    /// A server on 127.0.0.1:0 with `limits`; `/ok` answers at once, `/slow` when `release` is
    /// notified. Stopped (and its connections closed) when dropped.
    struct TestServer {
        addr: std::net::SocketAddr,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
        release: Arc<tokio::sync::Notify>,
    }

    impl TestServer {
        fn start(limits: Limits) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let release = Arc::new(tokio::sync::Notify::new());
            let app = {
                let release = Arc::clone(&release);
                Router::new()
                    .route("/ok", get(|| async { "ok\n" }))
                    .route(
                        "/slow",
                        get(move || async move {
                            release.notified().await;
                            "slow\n"
                        }),
                    )
                    .route("/big", get(|| async { vec![b'x'; 256 * 1024] }))
            };
            let cancel = CancellationToken::new();
            let task = tokio::spawn(serve_with_limits(listener, app, limits, cancel.clone()));
            Self {
                addr,
                cancel,
                task,
                release,
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            header_read_timeout: HEAD_TIMEOUT,
            send_timeout: HEAD_TIMEOUT,
        }
    }

    /// Reads until the server closes the connection (end of file or reset), within `bound`.
    async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return received,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "the server did not close the connection within {bound:?}; received {:?}",
                    String::from_utf8_lossy(&received)
                ),
            }
        }
    }

    async fn connect(server: &TestServer) -> TcpStream {
        TcpStream::connect(server.addr)
            .await
            .expect("connect to the test server")
    }

    const GET_OK: &[u8] = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n";

    /// Sends `GET /ok` and reads its whole answer (keeping the connection); the status line.
    async fn get_ok(stream: &mut TcpStream, bound: Duration) -> String {
        stream.write_all(GET_OK).await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            while !received.ends_with(b"ok\n") {
                let n = stream.read(&mut buf).await.expect("read the answer");
                assert!(n > 0, "closed before the answer: {received:?}");
                received.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(bound, read)
            .await
            .unwrap_or_else(|_| panic!("GET /ok was not answered within {bound:?}"));
        let text = String::from_utf8_lossy(&received);
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_half_sent_head_is_closed_after_the_header_timeout() {
        let server = TestServer::start(limits(8));
        let mut client = connect(&server).await;
        client
            .write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let received = read_until_closed(&mut client, HEAD_TIMEOUT + SLACK).await;
        assert!(
            started.elapsed() >= HEAD_TIMEOUT / 2,
            "closed after {:?}, before the header timeout: {received:?}",
            started.elapsed()
        );
        assert!(
            !received.starts_with(b"HTTP/1.1 200"),
            "a half-sent head was answered: {:?}",
            String::from_utf8_lossy(&received)
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connection_without_a_next_request_is_closed_after_the_header_timeout() {
        let server = TestServer::start(limits(8));
        let mut client = connect(&server).await;
        assert_eq!(get_ok(&mut client, SLACK).await, "HTTP/1.1 200 OK");
        // The same connection serves a second request: it is kept alive...
        assert_eq!(get_ok(&mut client, SLACK).await, "HTTP/1.1 200 OK");
        // ...but not for ever when no third comes.
        let started = Instant::now();
        read_until_closed(&mut client, HEAD_TIMEOUT + SLACK).await;
        assert!(
            started.elapsed() >= HEAD_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_in_the_backlog_until_one_ends() {
        let server = TestServer::start(limits(2));
        // Two clients that send nothing take both slots, until the header timeout cuts them.
        let _idle = [connect(&server).await, connect(&server).await];
        let started = Instant::now();
        let mut third = connect(&server).await;
        assert_eq!(
            get_ok(&mut third, HEAD_TIMEOUT + SLACK).await,
            "HTTP/1.1 200 OK"
        );
        assert!(
            started.elapsed() >= HEAD_TIMEOUT / 2,
            "the third connection was served after {:?}, while two held the cap of 2",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_client_that_never_reads_its_responses_is_cut_after_the_send_timeout() {
        let server = TestServer::start(limits(1));
        // Pipelined requests for 256 KiB each, never read: the server's writes stall on the full
        // socket buffers, holding the only slot until the send timeout.
        let mut stalled = connect(&server).await;
        let requests = b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
        let _ = tokio::time::timeout(SLACK, stalled.write_all(&requests)).await;
        let mut next = connect(&server).await;
        assert_eq!(
            get_ok(&mut next, HEAD_TIMEOUT + SLACK).await,
            "HTTP/1.1 200 OK",
            "a client that does not read held the only slot"
        );
        let received = read_until_closed(&mut stalled, SLACK).await;
        assert!(
            received.len() < 1000 * 256 * 1024,
            "every response reached the stalled client: it was not cut"
        );
    }

    #[tokio::test]
    async fn on_cancel_idle_connections_close_and_the_request_in_progress_finishes() {
        let server = TestServer::start(Limits {
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        });
        let mut idle = connect(&server).await;
        let mut busy = connect(&server).await;
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // The idle connection has taken a slot: its first request is answered.
        assert_eq!(get_ok(&mut idle, SLACK).await, "HTTP/1.1 200 OK");
        server.cancel.cancel();
        read_until_closed(&mut idle, SLACK).await;
        server.release.notify_one();
        let answer = read_until_closed(&mut busy, SLACK).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"slow\n"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        let mut server = server;
        tokio::time::timeout(SLACK, &mut server.task)
            .await
            .expect("the server did not end after its last request")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn aborting_the_server_closes_its_connections_at_once() {
        let mut server = TestServer::start(Limits {
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        });
        let mut busy = connect(&server).await;
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut half_sent = connect(&server).await;
        half_sent.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        // Both are being served once a complete request on a third connection was.
        let mut probe = connect(&server).await;
        assert_eq!(get_ok(&mut probe, SLACK).await, "HTTP/1.1 200 OK");
        server.task.abort();
        let _ = (&mut server.task).await;
        for (what, stream) in [("in progress", &mut busy), ("half sent", &mut half_sent)] {
            let received = read_until_closed(stream, SLACK).await;
            assert!(
                received.is_empty(),
                "{what}: {:?}",
                String::from_utf8_lossy(&received)
            );
        }
    }
}
