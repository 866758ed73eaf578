//! The write side: running a command against its stream ([`execute`]; binding commands in
//! [`bindings`]), the ids it mints ([`ids`]) and the folded states it starts from
//! ([`cache`]). Nothing here knows HTTP beyond answering a
//! [`crate::http::problem::Problem`].

pub mod bindings;
pub mod cache;
pub mod execute;
pub mod ids;

pub use execute::{Issuer, RequestMeta, Written};
pub use ids::Ids;
