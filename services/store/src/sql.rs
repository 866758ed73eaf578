//! One SQL layer for both databases: statements are written once (with `$n` placeholders,
//! which both PostgreSQL and SQLite accept), arguments and columns are typed values. Used
//! by the read models, the server's idempotency records and look-ups beside the log.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use crate::DatabasePool;

/// A typed (possibly null) statement argument or column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    I(Option<i64>),
    F(Option<f64>),
    T(Option<String>),
    Ts(Option<DateTime<Utc>>),
    /// An id: a `uuid` on PostgreSQL, its hyphenated text on SQLite.
    U(Option<uuid::Uuid>),
}

impl Val {
    pub fn int(v: i64) -> Self {
        Val::I(Some(v))
    }
    pub fn text(v: impl Into<String>) -> Self {
        Val::T(Some(v.into()))
    }
    pub fn opt_text(v: Option<impl Into<String>>) -> Self {
        Val::T(v.map(Into::into))
    }
    pub fn time(v: DateTime<Utc>) -> Self {
        Val::Ts(Some(v))
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::I(v) => *v,
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::F(v) => *v,
            _ => None,
        }
    }
    pub fn into_text(self) -> Option<String> {
        match self {
            Val::T(v) => v,
            _ => None,
        }
    }
    pub fn as_time(&self) -> Option<DateTime<Utc>> {
        match self {
            Val::Ts(v) => *v,
            _ => None,
        }
    }
}

/// The type of a selected column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    I,
    F,
    T,
    Ts,
}

/// One selected row, columns in select order.
pub type Row = Vec<Val>;

/// A connection of either backend (a pooled connection or an open transaction).
pub enum Conn<'c> {
    Pg(&'c mut sqlx::PgConnection),
    Sqlite(&'c mut sqlx::SqliteConnection),
}

macro_rules! bind_all {
    ($query:expr, $args:expr, $pg:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Val::I(v) => q.bind(*v),
                Val::F(v) => q.bind(*v),
                Val::T(v) => q.bind(v.as_deref()),
                Val::Ts(v) => q.bind(*v),
                Val::U(v) if $pg => q.bind(*v),
                Val::U(v) => q.bind(v.map(|u| u.to_string())),
            };
        }
        q
    }};
}

macro_rules! decode_row {
    ($row:expr, $tys:expr) => {{
        let row = $row;
        let mut out = Vec::with_capacity($tys.len());
        for (i, ty) in $tys.iter().enumerate() {
            out.push(match ty {
                Ty::I => Val::I(row.try_get::<Option<i64>, _>(i)?),
                Ty::F => Val::F(row.try_get::<Option<f64>, _>(i)?),
                Ty::T => Val::T(row.try_get::<Option<String>, _>(i)?),
                Ty::Ts => Val::Ts(row.try_get::<Option<DateTime<Utc>>, _>(i)?),
            });
        }
        out
    }};
}

impl Conn<'_> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// Runs a statement; answers the number of rows it affected.
    pub async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Pg(c) => bind_all!(sqlx::query(sql), args, true)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            Conn::Sqlite(c) => bind_all!(sqlx::query(sql), args, false)
                .execute(&mut **c)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query and decodes every row with `tys`.
    pub async fn fetch(
        &mut self,
        sql: &str,
        args: &[Val],
        tys: &[Ty],
    ) -> Result<Vec<Row>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Conn::Pg(c) => {
                for row in bind_all!(sqlx::query(sql), args, true)
                    .fetch_all(&mut **c)
                    .await?
                {
                    out.push(decode_row!(&row, tys));
                }
            }
            Conn::Sqlite(c) => {
                for row in bind_all!(sqlx::query(sql), args, false)
                    .fetch_all(&mut **c)
                    .await?
                {
                    out.push(decode_row!(&row, tys));
                }
            }
        }
        Ok(out)
    }

    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Val],
        tys: &[Ty],
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch(sql, args, tys).await?.into_iter().next())
    }
}

/// Runs `f` on a pooled connection.
#[macro_export]
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {{
        match $pool {
            $crate::DatabasePool::Postgres(p) => {
                let mut c = p.acquire().await?;
                let mut $conn = $crate::sql::Conn::Pg(&mut *c);
                $body
            }
            $crate::DatabasePool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                let mut $conn = $crate::sql::Conn::Sqlite(&mut *c);
                $body
            }
        }
    }};
}
pub use crate::with_conn;

/// An open write transaction on either backend. SQLite transactions begin with
/// `BEGIN IMMEDIATE`, taking the database's write lock up front.
pub enum Tx {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Tx {
    pub async fn begin(pool: &DatabasePool) -> Result<Tx, sqlx::Error> {
        Ok(match pool {
            DatabasePool::Postgres(p) => Tx::Pg(p.begin().await?),
            DatabasePool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Pg(t) => Conn::Pg(&mut *t),
            Tx::Sqlite(t) => Conn::Sqlite(&mut *t),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Pg(t) => t.commit().await?,
            Tx::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// A statement under construction: text plus its numbered arguments.
#[derive(Default)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Val>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `v`.
    pub fn arg(&mut self, v: Val) -> &mut Self {
        self.args.push(v);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    /// Appends `(p1, p2, ...)` bound to `vals`.
    pub fn list(&mut self, vals: impl IntoIterator<Item = Val>) -> &mut Self {
        self.text.push('(');
        for (i, v) in vals.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.arg(v);
        }
        self.text.push(')');
        self
    }
}

impl DatabasePool {
    /// Runs a statement on a pooled connection; answers the rows it affected.
    pub async fn exec(&self, sql: &str, args: &[Val]) -> Result<u64, sqlx::Error> {
        crate::with_conn!(self, |conn| conn.exec(sql, args).await)
    }

    /// Runs a query on a pooled connection and decodes every row with `tys`.
    pub async fn fetch(
        &self,
        sql: &str,
        args: &[Val],
        tys: &[Ty],
    ) -> Result<Vec<Row>, sqlx::Error> {
        crate::with_conn!(self, |conn| conn.fetch(sql, args, tys).await)
    }

    /// The first row of a query, if any.
    pub async fn fetch_optional(
        &self,
        sql: &str,
        args: &[Val],
        tys: &[Ty],
    ) -> Result<Option<Row>, sqlx::Error> {
        crate::with_conn!(self, |conn| conn.fetch_optional(sql, args, tys).await)
    }
}

/// Statements both backends run as written (`$n` placeholders work on both); the backends
/// differ only in how they bind and decode.
pub(crate) mod statements {
    /// Every column of a stored event, in the order the backends decode them.
    macro_rules! select_event {
        () => {
            "SELECT position, stream, version, id, event_type, schema_version, payload, \
             metadata, recorded_at, prev_hash, hash FROM events"
        };
    }

    pub const SELECT_EVENT: &str = select_event!();
    pub const READ_STREAM: &str = concat!(
        select_event!(),
        " WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
    );
    pub const READ_ALL: &str = concat!(
        select_event!(),
        " WHERE position > $1 ORDER BY position LIMIT $2"
    );
    /// `$3` is the teams as text[].
    pub const READ_ALL_OF_TEAMS_PG: &str = concat!(
        select_event!(),
        " WHERE position > $1 AND metadata->>'team' = ANY($3) ORDER BY position LIMIT $2"
    );
    /// `$3` is the teams as a JSON array of strings.
    pub const READ_ALL_OF_TEAMS_SQLITE: &str = concat!(
        select_event!(),
        " WHERE position > $1 AND json_extract(metadata, '$.team') IN \
         (SELECT value FROM json_each($3)) ORDER BY position LIMIT $2"
    );
    pub const STREAM_VERSION: &str = "SELECT MAX(version) FROM events WHERE stream = $1";
    pub const HEAD: &str = "SELECT position, hash FROM event_head WHERE id = 1";
}
