//! What every handler can reach. A new shared component is one more field here, set in
//! [`crate::app::Application::build`].

use std::sync::Arc;
use std::time::Duration;

use rollgate_auth::Verifier;
use rollgate_store::{Clock, EventStore};

use crate::command::cache::StateCache;
use crate::http::metrics::Metrics;

pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub verifier: Verifier,
    pub clock: Arc<dyn Clock>,
    pub max_body_bytes: usize,
    pub read_wait: Duration,
    pub metrics: Arc<Metrics>,
    /// The projector keeping the read models current; reads wait on it (`min_position`).
    pub projector: rollgate_projections::ProjectorHandle,
    /// Folded stream states, so commands read only new events.
    pub cache: StateCache,
    /// The Prometheus that query criteria are validated and evaluated against, if configured.
    pub prometheus: Option<rollgate_prometheus::Prometheus>,
    /// The evaluator loop of this instance (set when a Prometheus is configured).
    pub evaluator: std::sync::OnceLock<rollgate_prometheus::EvaluatorHandle>,
    /// The log's live tail, shared by every event stream, and the stream limits.
    pub live: Arc<crate::live::LiveLog>,
    /// Webhooks, GitHub and Slack (`rollgate_delivery`); taken at shutdown.
    pub delivery: tokio::sync::Mutex<Option<rollgate_delivery::Delivery>>,
    /// The webhook admin, GitHub App and secrets, when configured (read by the handlers).
    pub integrations: Integrations,
}

/// What the integration handlers need from [`rollgate_delivery::Delivery`].
#[derive(Clone, Default)]
pub struct Integrations {
    pub webhooks: Option<rollgate_delivery::service::WebhookAdmin>,
    pub github_webhook_secret: Option<Vec<u8>>,
    pub slack_signing_secret: Option<Vec<u8>>,
}
