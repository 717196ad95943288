//! `sd_notify(3)` messages: READY, STATUS, STOPPING, WATCHDOG (the `sd-notify` crate's states).
//!
//! A no-op when `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`). Send errors are
//! logged at debug level and otherwise ignored: a lost STATUS line must never stop the bot.
//!
//! Guarantee: sending never blocks. `sd_notify::notify` does a blocking `send(2)`, and this runs on the
//! bot's only runtime thread: when the socket's reader stops reading (PID 1 stalled, a test harness
//! that reads only READY), the 11th queued datagram would freeze every timer, deadline and watchdog
//! decision. So the datagram is sent here, by hand, with `MSG_DONTWAIT`; a full queue drops it.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager, when there is one.
#[derive(Clone, Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    pub fn disabled() -> Self {
        Self { enabled: false }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        match send_nonblocking(&socket, message.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::debug!(
                    "sd_notify: the notify socket's queue is full; dropped {message:?}"
                );
            }
            Err(e) => tracing::debug!("sd_notify failed: {e}"),
        }
    }

    /// The service is up: the lock is held and Telegram accepted the token.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// The watchdog timeout systemd expects us to beat, if enabled: `WATCHDOG_USEC`, when
    /// `WATCHDOG_PID` is unset or names this process (the semantics of `sd_watchdog_enabled(3)`;
    /// the sd-notify crate insists on `WATCHDOG_PID`, which a test harness cannot know before spawn).
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.parse() == Ok(std::process::id()),
            Err(_) => true,
        };
        (self.enabled && for_us && usec > 0).then(|| Duration::from_micros(usec))
    }
}

/// One datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), without blocking.
/// A fresh socket each time, as `sd_notify(3)` does, so a re-executed manager is still reached.
fn send_nonblocking(socket_path: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;

    let address = match socket_path.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket_path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.connect_addr(&address)?;
    let sent = socket.send(message)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "incomplete datagram",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that never reads: the sender must get `WouldBlock` once the queue is full, not hang.
    #[test]
    fn a_full_notify_socket_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let reader = UnixDatagram::bind(&path).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let sender_path = path.clone();
        std::thread::spawn(move || {
            let results: Vec<io::Result<()>> = (0..200)
                .map(|_| send_nonblocking(sender_path.as_os_str(), b"WATCHDOG=1\n"))
                .collect();
            done.send(results).unwrap();
        });
        let results = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("200 sends to an unread notify socket did not finish in 10 s: a send blocks");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        let full = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock))
            .count();
        assert!(full > 0, "the queue never filled: {results:?}");
        let mut buf = [0u8; 64];
        let n = reader.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }

    #[test]
    fn an_abstract_socket_name_is_reached() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cryptobot-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let reader = UnixDatagram::bind_addr(&addr).unwrap();
        send_nonblocking(std::ffi::OsStr::new(&format!("@{name}")), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = reader.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
