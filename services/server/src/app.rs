//! Building and running the HTTP server, and the route table: every (method, path) the
//! API answers, in one place. A new route is one line in [`route_table!`] below (and its
//! operation in `api-spec/openapi.yaml`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpResponse, HttpServer, Resource};
use anyhow::Context;
use rollgate_auth::Verifier;
use rollgate_store::{AppendObserver, Clock, EventStore, StoreOptions};

use crate::command::cache::StateCache;
use crate::config::{DatabaseArgs, ServeArgs};
use crate::http::idempotency;
use crate::http::metrics::Metrics;
use crate::http::observe;
use crate::http::problem::Problem;
use crate::routes::{
    audit, bindings, deviations, flagger, flags, gates, health, integrations, lists, policies,
    rollout_commands as commands, rollout_reads as reads, stream, webhooks,
};
use crate::state::AppState;

/// Opens the store behind `args`, applying pending migrations first.
pub async fn open_store(
    args: &DatabaseArgs,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn AppendObserver>>,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let options = StoreOptions {
        max_event_bytes: args.max_event_bytes,
        max_connections: args.db_max_connections,
        acquire_timeout: Duration::from_millis(args.db_acquire_timeout_ms),
        clock,
        observer,
        ..Default::default()
    };
    let url = args.database_url.as_str();
    let store: Arc<dyn EventStore> = match rollgate_store::BackendKind::of_url(url)? {
        rollgate_store::BackendKind::Postgres => {
            let pool = rollgate_store::postgres_pool(url, &options).await?;
            rollgate_schema::ensure_current(&rollgate_store::DatabasePool::Postgres(pool.clone()))
                .await?;
            Arc::new(rollgate_store::PgStore::with_pool(pool, options).await?)
        }
        rollgate_store::BackendKind::Sqlite => {
            let pool = rollgate_store::sqlite_pool(url, options.max_connections).await?;
            rollgate_schema::ensure_current(&rollgate_store::DatabasePool::Sqlite(pool.clone()))
                .await?;
            // Give SQLite's planner statistics for the read-model indexes (bounded work; on
            // PostgreSQL autovacuum does this).
            sqlx::query("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002")
                .execute(&pool)
                .await?;
            Arc::new(rollgate_store::SqliteStore::with_pool(pool, options).await?)
        }
    };
    Ok(store)
}

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    state: web::Data<AppState>,
    server: Server,
}

impl Application {
    /// Opens the store, loads the keys, binds the listener.
    pub async fn build(args: &ServeArgs, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let verifier = Verifier::connect(
            args.auth.auth_config(),
            args.auth.key_source(),
            args.auth.verify_options(),
        )
        .await
        .context("cannot set up token verification")?;
        let metrics = Arc::new(Metrics::new());
        let store = open_store(
            &args.database,
            clock.clone(),
            Some(metrics.clone() as Arc<dyn AppendObserver>),
        )
        .await?;
        // The read models follow the log in the background from their checkpoints.
        let projector = rollgate_projections::Projector::new(store.clone()).spawn();
        let prometheus = match args.prometheus.config().context("Prometheus connection")? {
            Some(config) => Some(
                rollgate_prometheus::Prometheus::new(config).context("Prometheus connection")?,
            ),
            None => None,
        };
        let instance_id = format!("instance-{}", uuid::Uuid::new_v4());
        let delivery =
            rollgate_delivery::Delivery::start(store.clone(), &args.delivery, &instance_id)
                .map_err(anyhow::Error::msg)
                .context("cannot set up webhooks, GitHub or Slack")?;
        let integrations = crate::state::Integrations {
            webhooks: delivery.webhooks.clone(),
            github_webhook_secret: delivery.github_webhook_secret.clone(),
            slack_signing_secret: delivery.slack_signing_secret.clone(),
        };
        let live = crate::live::LiveLog::start(
            store.clone(),
            crate::live::StreamLimits {
                total: args.max_event_streams,
                per_subject: args.max_event_streams_per_subject,
            },
        );
        let cache = StateCache::with_registry(10_000, metrics.registry());
        let state = web::Data::new(AppState {
            live,
            store,
            verifier,
            clock,
            max_body_bytes: args.max_body_bytes,
            read_wait: Duration::from_millis(args.read_wait_ms),
            metrics,
            projector,
            cache,
            prometheus,
            evaluator: Default::default(),
            delivery: tokio::sync::Mutex::new(Some(delivery)),
            integrations,
        });
        idempotency::spawn_purge(state.clone());
        if let Some(client) = state.prometheus.clone() {
            let handle = crate::evaluator::spawn(state.clone(), client)?;
            let _ = state.evaluator.set(handle);
        }
        let listener = TcpListener::bind(&args.listen)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = match &args.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr} for metrics"))?,
            ),
            None => None,
        };
        let console = rollgate_console::ConsoleConfig::new(
            args.auth.oidc_issuer.as_deref(),
            args.auth.oidc_client_id.as_deref(),
        )
        .context("cannot set up the web console's sign-in")?;
        let server = serve(state.clone(), listener, metrics_listener, console)?;
        Ok(Self {
            port,
            state,
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until the server stops, then stops the projector after its current batch
    /// (bounded: a batch is one transaction, so cutting it off loses nothing).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(evaluator) = self.state.evaluator.get() {
            evaluator.stop();
        }
        if let Some(delivery) = self.state.delivery.lock().await.take() {
            if tokio::time::timeout(Duration::from_secs(10), delivery.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("delivery still busy at shutdown; its leases expire on their own");
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.state.projector.stop())
            .await
            .is_err()
        {
            tracing::warn!("projector still busy at shutdown; its open batch is rolled back");
        }
        result
    }
}

fn serve(
    state: web::Data<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    console: rollgate_console::ConsoleConfig,
) -> anyhow::Result<Server> {
    let metrics_on_main = metrics_listener.is_none();
    let main_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(main_state.clone())
            .wrap(middleware::from_fn(observe::request_span))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| Problem::not_found(e.to_string()).into()),
            )
            .configure(|cfg| routes(cfg, metrics_on_main))
            .configure(|cfg| rollgate_console::configure_with(cfg, &console))
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(Problem::not_found("no such resource"))
            }))
    })
    .listen(listener)?;
    if let Some(ml) = metrics_listener {
        let metrics_state = state.clone();
        let metrics = HttpServer::new(move || {
            App::new()
                .app_data(metrics_state.clone())
                .service(resource("/metrics").route(web::get().to(health::metrics)))
        })
        .workers(1)
        .listen(ml)?
        .run();
        tokio::spawn(metrics);
    }
    server = server.shutdown_timeout(10);
    Ok(server.run())
}

/// A path's resource: methods it does not declare answer 405 with `Allow`.
fn resource(path: &'static str) -> Resource {
    let allow = ROUTES
        .iter()
        .chain(&[("get", "/metrics")])
        .filter(|(_, p)| *p == path)
        .map(|(m, _)| m.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(", ");
    web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(Problem::method_not_allowed(allow)) }
    }))
}

/// Declares the route table once: `ROUTES` (method, path) for the spec test, and
/// `register` for the server (one resource per path).
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every (method, path) the API answers; `api-spec/openapi.yaml` must list the same set.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn register(cfg: &mut web::ServiceConfig) {
            let mut resources: Vec<(&'static str, Resource)> = Vec::new();
            $(
                let at = match resources.iter().position(|(p, _)| *p == $path) {
                    Some(i) => i,
                    None => {
                        resources.push(($path, resource($path)));
                        resources.len() - 1
                    }
                };
                let (p, r) = resources.remove(at);
                resources.insert(at, (p, r.route(web::$method().to($handler))));
            )*
            for (_, r) in resources {
                cfg.service(r);
            }
        }
    };
}

route_table! {
    get "/healthz" => health::healthz,
    get "/readyz" => health::readyz,
    get "/openapi.yaml" => health::openapi,
    post "/v1/rollouts" => commands::create,
    get "/v1/rollouts" => lists::list_rollouts,
    get "/v1/rollouts/{id}" => reads::get,
    put "/v1/rollouts/{id}/plan" => commands::revise_plan,
    get "/v1/rollouts/{id}/events" => reads::events,
    get "/v1/rollouts/{id}/timeline" => reads::timeline,
    get "/v1/rollouts/{id}/replay" => reads::replay,
    get "/v1/rollouts/{id}/postmortem" => reads::postmortem,
    get "/v1/approvals/inbox" => lists::inbox,
    get "/v1/decisions" => lists::decisions,
    get "/v1/audit" => lists::audit,
    post "/v1/rollouts/{id}/readiness/{item}/sign-off" => commands::sign_off,
    post "/v1/rollouts/{id}/start" => commands::start,
    post "/v1/rollouts/{id}/advance-requests" => commands::request_advance,
    post "/v1/rollouts/{id}/advance-requests/{rid}/approvals" => commands::decide_request,
    post "/v1/rollouts/{id}/advance-requests/{rid}/withdraw" => commands::withdraw,
    post "/v1/rollouts/{id}/advance" => commands::advance,
    post "/v1/rollouts/{id}/pause" => commands::pause,
    post "/v1/rollouts/{id}/resume" => commands::resume,
    post "/v1/rollouts/{id}/rollback" => commands::rollback,
    post "/v1/rollouts/{id}/complete" => commands::complete,
    post "/v1/rollouts/{id}/abort" => commands::abort,
    post "/v1/rollouts/{id}/metrics" => commands::metrics,
    post "/v1/rollouts/{id}/deviations" => commands::request_deviation,
    post "/v1/deviations/{did}/decision" => deviations::decide,
    post "/v1/rollouts/{id}/decisions" => commands::record_decision,
    post "/v1/rollouts/{id}/notes" => commands::add_note,
    post "/v1/rollouts/{id}/timeline/annotations" => commands::annotate,
    put "/v1/policies/{team}" => policies::publish,
    post "/v1/policies/{team}/freezes" => policies::declare_freeze,
    delete "/v1/policies/{team}/freezes/{fid}" => policies::lift_freeze,
    get "/v1/audit/export" => audit::export,
    get "/v1/audit/verify" => audit::verify,
    get "/v1/audit/head" => audit::head,
    get "/v1/events/stream" => stream::events,
    get "/v1/rollouts/{id}/gate" => gates::rollout_gate,
    post "/v1/bindings" => bindings::create_binding,
    get "/v1/bindings/{bid}" => bindings::get_binding,
    post "/v1/bindings/{bid}/rotate-secret" => bindings::rotate_secret,
    post "/v1/bindings/{bid}/revoke" => bindings::revoke,
    get "/v1/bindings/{bid}/answers" => bindings::answers,
    post "/v1/integrations/flagger" => flagger::flagger,
    get "/v1/integrations/argo/{bid}/gate" => gates::argo,
    get "/v1/flags/flagd.json" => flags::flagd,
    post "/v1/webhooks" => webhooks::create,
    get "/v1/webhooks" => webhooks::list,
    get "/v1/webhooks/{id}" => webhooks::get,
    delete "/v1/webhooks/{id}" => webhooks::remove,
    post "/v1/webhooks/{id}/pause" => webhooks::pause,
    post "/v1/webhooks/{id}/resume" => webhooks::resume,
    post "/v1/webhooks/{id}/rotate-secret" => webhooks::rotate_secret,
    post "/v1/webhooks/{id}/redeliver" => webhooks::redeliver,
    get "/v1/webhooks/{id}/attempts" => webhooks::attempts,
    post "/v1/integrations/github/webhook" => integrations::github_webhook,
    post "/v1/integrations/slack/interactions" => integrations::slack_interactions,
    put "/v1/integrations/slack/users/{slack_user_id}" => integrations::link_slack_user,
}

/// Every route the server answers. `/metrics` is here unless it has an address of its own.
pub fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    register(cfg);
    if with_metrics {
        cfg.service(resource("/metrics").route(web::get().to(health::metrics)));
    }
}
