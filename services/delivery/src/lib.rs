//! Talking to the outside world, with the event log as the outbox.
//!
//! Nothing rollgate sends is written anywhere but the log first: the delivery engine follows
//! the global log from a durable checkpoint per target and delivers what it finds, at least
//! once and in order, so nothing is lost when a process dies between commit and delivery and
//! nothing is sent that the log does not hold.
//!
//! - [`args`]: flags and environment variables; [`Delivery::start`] starts what is configured.
//! - [`engine`]: the delivery engine (checkpoints, leases, retries, backoff, 410, failing).
//! - [`cloudevent`]: CloudEvents 1.0 structured JSON bodies, with the stage's informed parties.
//! - [`signature`]: Standard Webhooks signatures out; GitHub and Slack signature checks in.
//! - [`secrets`]: `whsec_` signing secrets, sealed with AES-256-GCM under the configured key.
//! - [`url_policy`]: which addresses may be called (no metadata or link-local; switches for
//!   private ranges and loopback), also enforced when names resolve.
//! - [`github`]: GitHub deployment protection rules (verification, App auth, callbacks).
//! - [`slack`]: Slack approvals (identity links, signed interactions, Block Kit messages).
//! - [`slack_notifier`]: Slack notifications and in-place message updates, through the outbox.
//! - [`service`]: managing webhooks (`/v1/webhooks`) for the HTTP handlers.
//! - [`db`]: the delivery tables of migration 0007.

pub mod args;
pub mod cloudevent;
pub mod db;
pub mod engine;
pub mod github;
pub mod github_reporter;
pub mod secrets;
pub mod service;
pub mod signature;
pub mod slack;
pub mod slack_notifier;
pub mod url_policy;

pub use args::{Delivery, DeliveryArgs};
pub use engine::{DeliveryEngine, EngineError, EngineHandle, EngineOptions};
pub use secrets::SecretsKey;
pub use service::{
    AdminCommand, AdminError, RegisterRequest, WebhookAdmin, WebhookView, WithSecret,
};
pub use url_policy::{UrlPolicy, UrlRefusal};
