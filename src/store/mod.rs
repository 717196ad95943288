//! State that outlives the process: the last handled update per bot (G4), later alerts and chat
//! settings.
//!
//! The embedded default is SQLite in the state directory (`state.db`, created on first start, WAL
//! journal). The schema is created and upgraded by versioned migrations embedded in the binary, so a
//! package upgrade needs no manual step.

pub mod sqlite;

pub use sqlite::{AlertRow, NewAlert, OutboxMessage, Store};
