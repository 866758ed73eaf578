//! The handlers, by resource. Each is short: the extractors of [`crate::http`] do the
//! rest. The route table is in [`crate::app`].

pub mod audit;
pub mod bindings;
pub mod deviations;
pub mod flagger;
pub mod flags;
pub mod gates;
pub mod health;
pub mod integrations;
pub mod lists;
pub mod policies;
pub mod rollout_commands;
pub mod rollout_reads;
pub mod stream;
pub mod webhooks;
