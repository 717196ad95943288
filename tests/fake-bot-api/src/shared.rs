//! [`Shared`]: the one mutex around [`State`], plus the two ways to wait for it to change — a
//! [`Condvar`] for the synchronous handle's bounded waits and a tokio `watch` channel for the
//! async handlers (long polls, webhook delivery).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::state::State;

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    changes: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            changes: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the server down with it: the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the state without telling anyone (for reads, and for checks that change
    /// nothing: a waiter that notified itself would spin).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    /// Runs `f` on the state and wakes every waiter.
    pub(crate) fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = {
            let mut state = self.lock();
            let result = f(&mut state);
            state.generation += 1;
            result
        };
        self.notify();
        result
    }

    /// Runs `f` on the state and wakes every waiter if `f` answered something (that is, changed
    /// the state); for checks that mostly change nothing.
    pub(crate) fn mutate_if<R>(&self, f: impl FnOnce(&mut State) -> Option<R>) -> Option<R> {
        let result = {
            let mut state = self.lock();
            let result = f(&mut state);
            if result.is_some() {
                state.generation += 1;
            }
            result
        };
        if result.is_some() {
            self.notify();
        }
        result
    }

    fn notify(&self) {
        self.changed.notify_all();
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// A receiver that sees every change made after this call (async waiters).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current state generation, and what `f` reads at that generation.
    pub(crate) fn snapshot<R>(&self, f: impl FnOnce(&mut State) -> R) -> (u64, R) {
        let mut state = self.lock();
        let result = f(&mut state);
        (state.generation, result)
    }

    /// Blocks until the state changes after generation `seen`, or until `deadline`.
    pub(crate) fn wait_for_change(&self, seen: u64, deadline: Instant) {
        let mut state = self.lock();
        while state.generation == seen {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}
