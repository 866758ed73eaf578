//! The SQL layer shared by both databases lives in the store crate
//! ([`rollgate_store::sql`]); this module names it for the read models.

pub(crate) use rollgate_store::sql::{Conn, Row, Sql, Tx, Ty, Val};
pub(crate) use rollgate_store::with_conn;
