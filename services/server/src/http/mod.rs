//! The HTTP edge: everything between a request and a command or a read.
//!
//! - [`problem`]: the one error type (RFC 9457), every problem type named once.
//! - [`caller`]: the authenticated caller (an extractor).
//! - [`extract`]: write extractors (`RolloutWrite`, `PolicyWrite`, ...) that do idempotency,
//!   If-Match, decide, append and the reply.
//! - [`body`], [`query`]: request bodies and query strings parsed at the edge.
//! - [`idempotency`]: the `Idempotency-Key` header.
//! - [`consistency`]: read-your-writes (`min_position`).
//! - [`observe`], [`metrics`]: request ids, logs, Prometheus.

pub mod body;
pub mod caller;
pub mod consistency;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod observe;
pub mod problem;
pub mod query;
