//! The rollgate server: the HTTP API over the event store, and the `rollgate` command line.

pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod execute;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod observe;
pub mod policies;
pub mod problem;
pub mod reads;
pub mod rollouts;
pub mod stream;

pub use app::{AppState, Application};
