//! The application's database schema.
//!
//! The migrations live in `migrations/postgres` and `migrations/sqlite` at the top of the
//! repository and are compiled into the binary (nothing is read or fetched at run time).
//! A migration is never edited once it has landed; changes are new migrations.
//!
//! `rollgate migrate` applies them, on PostgreSQL ideally as the role that owns the schema.
//! `rollgate serve` applies pending ones too (so the quick start needs no extra step), but
//! when the schema is current it changes nothing and needs no right beyond reading the
//! migration table: a serving role without DDL rights works (see docs/OPERATIONS.md).

use std::collections::HashMap;

use rollgate_store::{DatabasePool, StoreError};
use sqlx::migrate::Migrator;

pub static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");
pub static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");

fn migrator(pool: &DatabasePool) -> &'static Migrator {
    match pool {
        DatabasePool::Postgres(_) => &POSTGRES,
        DatabasePool::Sqlite(_) => &SQLITE,
    }
}

/// Applies every pending migration.
pub async fn migrate(pool: &DatabasePool) -> Result<(), StoreError> {
    let result = match pool {
        DatabasePool::Postgres(p) => POSTGRES.run(p).await,
        DatabasePool::Sqlite(p) => SQLITE.run(p).await,
    };
    result.map_err(|e| StoreError::Database(format!("migration failed: {e}")))
}

/// The versions of the binary's migrations not yet applied to the database, in order.
/// An applied migration whose checksum differs from the binary's is an error: the schema
/// was made by other migrations than the ones this binary carries.
pub async fn pending(pool: &DatabasePool) -> Result<Vec<i64>, StoreError> {
    const APPLIED: &str = "SELECT version, checksum FROM _sqlx_migrations WHERE success";
    let applied: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> = match pool {
        DatabasePool::Postgres(p) => sqlx::query_as(APPLIED).fetch_all(p).await,
        DatabasePool::Sqlite(p) => sqlx::query_as(APPLIED).fetch_all(p).await,
    };
    let applied: HashMap<i64, Vec<u8>> = match applied {
        Ok(rows) => rows.into_iter().collect(),
        // A database no migration has run on yet.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("42P01") || e.message().contains("no such table") =>
        {
            HashMap::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mut pending = Vec::new();
    for m in migrator(pool)
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.get(&m.version) {
            None => pending.push(m.version),
            Some(checksum) if checksum.as_slice() != &*m.checksum => {
                return Err(StoreError::Config(format!(
                    "migration {} ({}) applied to this database differs from the one this \
                     binary carries",
                    m.version, m.description
                )))
            }
            Some(_) => {}
        }
    }
    Ok(pending)
}

/// What `rollgate serve` does at start: nothing when the schema is current, else applies
/// the pending migrations, and when that fails says how to apply them with the owner.
pub async fn ensure_current(pool: &DatabasePool) -> Result<(), StoreError> {
    let pending = pending(pool).await?;
    if pending.is_empty() {
        return Ok(());
    }
    migrate(pool).await.map_err(|e| {
        StoreError::Config(format!(
            "the database schema is behind ({} migration(s) pending) and they could not be \
             applied with this connection ({e}); run `rollgate migrate` with the schema \
             owner's database URL",
            pending.len()
        ))
    })
}
