//! The rollgate server: the HTTP API over the event store, and the `rollgate` command line.

pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod execute;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod observe;
pub mod policies;
pub mod problem;
pub mod rollouts;

pub use app::{AppState, Application};
