//! The rollgate server: the HTTP API over the event store, and the `rollgate` command line.
//!
//! - [`app`]: building the server, and the route table.
//! - [`state`]: `AppState`, what every handler can reach.
//! - [`routes`]: the handlers, by resource.
//! - [`http`]: the HTTP edge (problems, extractors, bodies, queries, idempotency, metrics).
//! - [`command`]: running a command (the only writer to the log) and the state cache.
//! - [`events`]: stream names and stored-event decoding.
//! - [`views`]: the API's response bodies.
//! - [`export`]: the audit export format and its offline verifier (no HTTP in it).
//! - [`cli`], [`config`]: the `rollgate` command line and its flags.

pub mod app;
pub mod cli;
pub mod command;
pub mod config;
pub mod evaluator;
pub mod events;
pub mod export;
pub mod http;
pub mod live;
pub mod routes;
pub mod state;
pub mod views;

pub use app::Application;
pub use state::AppState;
