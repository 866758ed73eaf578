//! The application's database schema.
//!
//! The migrations live in `migrations/postgres` and `migrations/sqlite` at the top of the
//! repository and are compiled into the binary (nothing is read or fetched at run time).
//! A migration is never edited once it has landed; changes are new migrations.

use rollgate_store::{DatabasePool, StoreError};
use sqlx::migrate::Migrator;

pub static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");
pub static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Applies every pending migration.
pub async fn migrate(pool: &DatabasePool) -> Result<(), StoreError> {
    let result = match pool {
        DatabasePool::Postgres(p) => POSTGRES.run(p).await,
        DatabasePool::Sqlite(p) => SQLITE.run(p).await,
    };
    result.map_err(|e| StoreError::Database(format!("migration failed: {e}")))
}
