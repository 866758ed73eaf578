//! Fresh, migrated databases for tests, so tests run in parallel without sharing state.
//!
//! PostgreSQL: each [`TestDb::postgres`] creates its own database on the server named by
//! `ROLLGATE_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and drops
//! it afterwards. An unreachable server fails the test with a clear message: tests never
//! skip silently.

pub mod tools;

use std::str::FromStr;
use std::sync::Arc;

use rollgate_store::{
    BackendKind, DatabasePool, EventStore, PgStore, SqliteStore, StoreError, StoreOptions,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

pub use rollgate_store::BackendKind as Backend;

/// Runs each named `async fn(BackendKind)` as one test per backend, in modules `postgres`
/// and `sqlite`: `both_backends!(a, b)`, or `both_backends!(workers = 4; a, b)` for a
/// runtime with more worker threads (2 by default). Test crates need `tokio`.
#[macro_export]
macro_rules! both_backends {
    (@mod $module:ident $kind:ident $workers:tt; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn $name() {
                    super::$name($crate::Backend::$kind).await;
                }
            )*
        }
    };
    (workers = $workers:tt; $($name:ident),* $(,)?) => {
        $crate::both_backends!(@mod postgres Postgres $workers; $($name),*);
        $crate::both_backends!(@mod sqlite Sqlite $workers; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::both_backends!(workers = 2; $($name),*);
    };
}

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server tests use (`ROLLGATE_TEST_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("ROLLGATE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database that exists for one test.
pub struct TestDb {
    pub kind: BackendKind,
    /// The URL to hand to the store or the server.
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(kind: BackendKind) -> TestDb {
        match kind {
            BackendKind::Postgres => Self::postgres().await,
            BackendKind::Sqlite => Self::sqlite(),
        }
    }

    /// A new, empty PostgreSQL database (not migrated).
    pub async fn postgres() -> TestDb {
        let admin = admin_url();
        let name = format!("rollgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin_connection(&admin).await;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = conn.close().await;
        let url = PgConnectOptions::from_str(&admin)
            .expect("admin URL parses")
            .database(&name)
            .to_url_lossy()
            .to_string();
        TestDb {
            kind: BackendKind::Postgres,
            url,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// A new SQLite file in a temporary directory (not migrated).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("rollgate.db").display());
        TestDb {
            kind: BackendKind::Sqlite,
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// The directory holding the SQLite file, if this is SQLite.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// A migrated store on this database.
    pub async fn store(&self, options: StoreOptions) -> Arc<dyn EventStore> {
        self.try_store(options).await.expect("open test store")
    }

    pub async fn try_store(
        &self,
        options: StoreOptions,
    ) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(match self.kind {
            BackendKind::Postgres => {
                let pool = rollgate_store::postgres_pool(&self.url, &options).await?;
                rollgate_schema::migrate(&DatabasePool::Postgres(pool.clone())).await?;
                Arc::new(PgStore::with_pool(pool, options).await?)
            }
            BackendKind::Sqlite => {
                let pool = rollgate_store::sqlite_pool(&self.url, options.max_connections).await?;
                rollgate_schema::migrate(&DatabasePool::Sqlite(pool.clone())).await?;
                Arc::new(SqliteStore::with_pool(pool, options).await?)
            }
        })
    }
}

async fn admin_connection(admin: &str) -> sqlx::PgConnection {
    match sqlx::PgConnection::connect(admin).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is unreachable at {admin}: {e}\n\
             The test suite needs a PostgreSQL server. Start it, or point \
             ROLLGATE_TEST_DATABASE_URL at one."
        ),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = admin_url();
        // Dropping needs async I/O; do it on a thread of its own so this works inside or
        // outside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = c
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
