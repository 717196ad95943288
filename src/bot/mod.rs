//! The bot itself: what it answers. [`commands`] parses a message into a command and produces the reply;
//! it does no I/O, so every command is tested without a network.

pub mod commands;

pub use commands::{Command, Context, Reply, handle_update};
