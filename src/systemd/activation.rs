//! Socket activation: the HTTP listener systemd passes (`cryptobot.socket`, `FileDescriptorName=http`),
//! received with libsystemd; without one, the configured `listen` address is bound; without either,
//! no HTTP server runs.
//!
//! A socket that systemd holds stays open while the service restarts, so clients (a Prometheus scrape,
//! a health check, later Telegram's webhook) are queued by the kernel instead of refused. An fd set that
//! is not exactly one TCP listener named `http` is a configuration error (exit 78).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd};

use libsystemd::activation::{self, IsType};

use crate::exit::{Failure, Result};

/// Where the HTTP listener came from.
#[derive(Debug)]
pub enum Origin {
    /// Passed by systemd.
    Activated,
    /// Bound by us from `listen`.
    Bound(SocketAddr),
}

/// Takes the listener systemd passed, if any. Call it while the process is still single-threaded: it
/// removes the `LISTEN_*` variables from the environment.
pub fn activated_listener() -> Result<Option<TcpListener>> {
    let fds = activation::receive_descriptors_with_names(true).map_err(|e| {
        Failure::config(format!(
            "socket activation: {e}; check the LISTEN_FDS/LISTEN_FDNAMES the service manager passed"
        ))
    })?;
    if fds.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = fds.iter().map(|(_, name)| name.clone()).collect();
    let [(fd, name)] = <[_; 1]>::try_from(fds).map_err(|_| unexpected(&names))?;
    if name != "http" || !fd.is_inet() {
        return Err(unexpected(&names));
    }
    // SAFETY: systemd passed this descriptor to us alone (LISTEN_PID is ours, checked by libsystemd),
    // it is an inet socket, and ownership moves into the TcpListener here, exactly once.
    let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
    if listener.local_addr().is_err() {
        return Err(unexpected(&names));
    }
    Ok(Some(listener))
}

/// The activated listener, else `listen` bound now (after the instance lock, so a second instance is
/// refused by the lock, not by a busy port), else none.
pub fn http_listener(
    activated: Option<TcpListener>,
    listen: Option<SocketAddr>,
) -> Result<Option<(TcpListener, Origin)>> {
    if let Some(listener) = activated {
        return Ok(Some((listener, Origin::Activated)));
    }
    let Some(addr) = listen else { return Ok(None) };
    let listener = TcpListener::bind(addr).map_err(|e| {
        Failure::config(format!(
            "listen {addr}: cannot bind ({e}); choose a free address:port in listen / CRYPTOBOT_LISTEN, or use cryptobot.socket"
        ))
    })?;
    Ok(Some((listener, Origin::Bound(addr))))
}

fn unexpected(names: &[String]) -> Failure {
    Failure::config(format!(
        "socket activation passed {} socket(s) named {names:?}; expected exactly one TCP listener named \"http\" (FileDescriptorName=http in cryptobot.socket)",
        names.len()
    ))
}
