//! Building and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use rollgate_auth::Verifier;
use rollgate_store::{Clock, EventStore, StoreOptions};

use crate::config::{DatabaseArgs, ServeArgs};
use crate::problem::Problem;
use crate::{health, observe, policies, rollouts};

/// What every handler can reach.
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub verifier: Verifier,
    pub clock: Arc<dyn Clock>,
    pub max_body_bytes: usize,
    pub read_wait: Duration,
}

/// Opens the store behind `args`, applying pending migrations first.
pub async fn open_store(
    args: &DatabaseArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let options = StoreOptions {
        max_event_bytes: args.max_event_bytes,
        max_connections: args.db_max_connections,
        clock,
        ..Default::default()
    };
    let url = args.database_url.as_str();
    let store: Arc<dyn EventStore> = match rollgate_store::BackendKind::of_url(url)? {
        rollgate_store::BackendKind::Postgres => {
            let pool = rollgate_store::postgres_pool(
                url,
                options.max_connections,
                &options.application_name,
            )
            .await?;
            rollgate_schema::migrate(&rollgate_store::DatabasePool::Postgres(pool.clone())).await?;
            Arc::new(rollgate_store::PgStore::with_pool(pool, options).await?)
        }
        rollgate_store::BackendKind::Sqlite => {
            let pool = rollgate_store::sqlite_pool(url, options.max_connections).await?;
            rollgate_schema::migrate(&rollgate_store::DatabasePool::Sqlite(pool.clone())).await?;
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
        let store = open_store(&args.database, clock.clone()).await?;
        let verifier = Verifier::new(args.auth.auth_config(), args.auth.key_source())
            .context("cannot set up token verification")?;
        let state = web::Data::new(AppState {
            store,
            verifier,
            clock,
            max_body_bytes: args.max_body_bytes,
            read_wait: Duration::from_millis(args.read_wait_ms),
        });
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
        let server = serve(state.clone(), listener, metrics_listener)?;
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

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn serve(
    state: web::Data<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
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
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| Problem::invalid_field("query", e.to_string()).into()),
            )
            .configure(|cfg| routes(cfg, metrics_on_main))
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
                .route("/metrics", web::get().to(observe::metrics))
        })
        .workers(1)
        .listen(ml)?
        .run();
        tokio::spawn(metrics);
    }
    server = server.shutdown_timeout(10);
    Ok(server.run())
}

/// Every route the server answers. The route-spec test compares this set with
/// `api-spec/openapi.yaml`.
pub fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
    if with_metrics {
        cfg.route("/metrics", web::get().to(observe::metrics));
    }
    let r = "/v1/rollouts/{id}";
    cfg.route("/v1/rollouts", web::post().to(rollouts::create))
        .route(r, web::get().to(rollouts::get))
        .route(&format!("{r}/plan"), web::put().to(rollouts::revise_plan))
        .route(&format!("{r}/events"), web::get().to(rollouts::events))
        .route(
            &format!("{r}/readiness/{{item}}/sign-off"),
            web::post().to(rollouts::sign_off),
        )
        .route(&format!("{r}/start"), web::post().to(rollouts::start))
        .route(
            &format!("{r}/advance-requests"),
            web::post().to(rollouts::request_advance),
        )
        .route(
            &format!("{r}/advance-requests/{{rid}}/approvals"),
            web::post().to(rollouts::decide_request),
        )
        .route(
            &format!("{r}/advance-requests/{{rid}}/withdraw"),
            web::post().to(rollouts::withdraw),
        )
        .route(&format!("{r}/advance"), web::post().to(rollouts::advance))
        .route(&format!("{r}/pause"), web::post().to(rollouts::pause))
        .route(&format!("{r}/resume"), web::post().to(rollouts::resume))
        .route(&format!("{r}/rollback"), web::post().to(rollouts::rollback))
        .route(&format!("{r}/complete"), web::post().to(rollouts::complete))
        .route(&format!("{r}/abort"), web::post().to(rollouts::abort))
        .route(&format!("{r}/metrics"), web::post().to(rollouts::metrics))
        .route(
            &format!("{r}/deviations"),
            web::post().to(rollouts::request_deviation),
        )
        .route(
            "/v1/deviations/{did}/decision",
            web::post().to(rollouts::decide_deviation),
        )
        .route(
            &format!("{r}/decisions"),
            web::post().to(rollouts::record_decision),
        )
        .route(&format!("{r}/notes"), web::post().to(rollouts::add_note))
        .route(
            &format!("{r}/timeline/annotations"),
            web::post().to(rollouts::annotate),
        )
        .route("/v1/policies/{team}", web::put().to(policies::publish))
        .route(
            "/v1/policies/{team}/freezes",
            web::post().to(policies::declare_freeze),
        )
        .route(
            "/v1/policies/{team}/freezes/{fid}",
            web::delete().to(policies::lift_freeze),
        );
}
