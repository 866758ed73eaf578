//! The rollgate server: the HTTP API over the event store, and the `rollgate` command line.

pub mod app;
pub mod config;
pub mod health;
pub mod observe;
pub mod problem;

pub use app::{AppState, Application};
