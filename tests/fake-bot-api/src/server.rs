//! The server thread: its own current-thread tokio runtime, the accept loop, and one task per
//! connection served with hyper directly rather than `axum::serve`, so that a `Reset` fault can
//! drop its connection without writing any response. Stopping drops the runtime, which drops
//! every connection task: hung requests and long polls end and their sockets close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tower_service::Service;

/// Put into every request's extensions: lets a handler kill the connection it arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    /// Closes the connection with a TCP RST, no HTTP response written (the handler calling this
    /// is dropped with it).
    pub(crate) fn reset(&self) {
        self.0.notify_one();
    }
}

/// The running server; dropping it stops the thread and waits for it.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` now (so errors come back here) and serves `router` on a new thread.
    pub(crate) fn start(addr: SocketAddr, router: Router) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fake-bot-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, router, stopped).await,
                        Err(error) => eprintln!("fake-bot-api: cannot use the listener: {error}"),
                    }
                });
                drop(runtime);
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, router.clone()));
                }
                // Out of file descriptors and the like: give the system a moment, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket, to set SO_LINGER=0 on a reset once hyper owns the stream.
    let Ok((stream, spare)) = split_handle(stream) else {
        return;
    };
    let kill = ConnectionKill(Arc::new(Notify::new()));
    let service = {
        let kill = kill.clone();
        service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(kill.clone());
            let mut router = router.clone();
            async move { router.call(request.map(Body::new)).await }
        })
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = kill.0.notified() => {
            // Dropping `connection` (when this arm ends) closes hyper's handle; closing the last
            // handle of a zero-linger socket sends a RST instead of a FIN.
            if let Ok(spare) = TcpStream::from_std(spare) {
                let _ = spare.set_zero_linger();
            }
        }
    }
}

fn split_handle(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let stream = stream.into_std()?;
    let spare = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, spare))
}
