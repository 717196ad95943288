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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
    if state.liveness.is_alive(state.window) {
        let body = serde_json::json!({"status": "ok", "state": state.status.status_line()});
        (StatusCode::OK, axum::Json(body))
    } else {
        let body = serde_json::json!({
            "status": "unhealthy",
            "reason": format!("the update loop made no progress for more than {} s", state.window.as_secs()),
        });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
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

/// Serves [`router`] plus `extra` (the webhook route, in webhook mode) until `cancel`; requests in
/// progress then finish.
pub async fn serve(
    listener: std::net::TcpListener,
    state: HttpState,
    extra: Option<Router>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = match extra {
        Some(extra) => router(state).merge(extra),
        None => router(state),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
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
