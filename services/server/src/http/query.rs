//! Query strings parsed at the edge into typed structs (parse, don't validate): each
//! parameter type below refuses a bad value with a 422 naming the parameter, so handlers
//! only see values that make sense.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::command::cache::AsOf;
use crate::http::problem::Problem;

/// A query string parsed into `T`; an unknown, repeated, missing or invalid parameter is
/// a 422 naming it.
pub struct Query<T>(pub T);

impl<T> std::ops::Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse(req.query_string()).map(Query))
    }
}

/// Parses a query string, naming the offending parameter.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let named = ["unknown field `", "duplicate field `", "missing field `"]
            .iter()
            .find_map(|prefix| {
                let rest = &message[message.find(prefix)? + prefix.len()..];
                Some(rest[..rest.find('`')?].to_owned())
            });
        let field = match named {
            Some(f) => f,
            None if path != "." && !path.is_empty() => path,
            None => "query".to_owned(),
        };
        let message = if message.starts_with("unknown field") {
            format!("unknown query parameter; {message}")
        } else {
            message
        };
        Problem::invalid_field(field, message)
    })
}

/// Declares a query parameter type parsed from its text by `$parse`.
macro_rules! param {
    ($(#[$doc:meta])* $name:ident($inner:ty), |$s:ident| $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize, PartialEq)]
        #[serde(try_from = "String")]
        pub struct $name(pub $inner);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from($s: String) -> Result<Self, String> {
                $parse.map($name)
            }
        }
    };
}

param!(
    /// A page size: 1 to 1000.
    Limit(u32),
    |s| s
        .parse::<u32>()
        .ok()
        .filter(|l| (1..=1000).contains(l))
        .ok_or_else(|| "must be between 1 and 1000".to_owned())
);

param!(
    /// A global log position (`min_position`, stage numbers): an integer of at least 0.
    Count(u64),
    |s| s
        .parse::<u64>()
        .map_err(|_| "must be an integer of at least 0".to_owned())
);

param!(
    /// An RFC 3339 time.
    Time(DateTime<Utc>),
    |s| DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 time".to_owned())
);

param!(
    /// A UUID.
    Id(uuid::Uuid),
    |s| uuid::Uuid::parse_str(&s).map_err(|_| "must be a UUID".to_owned())
);

param!(
    /// A team name.
    TeamName(String),
    |s| rollgate_domain::Team::parse(&s)
        .map(|t| t.as_str().to_owned())
        .map_err(|e| e.to_string())
);

param!(
    /// A free-text filter: 1 to 256 characters, no NUL (PostgreSQL text cannot hold one).
    Text(String),
    |s| if s.is_empty() || s.len() > 256 {
        Err("must be 1 to 256 characters".to_owned())
    } else if s.contains('\0') {
        Err("must not contain NUL characters".to_owned())
    } else {
        Ok(s)
    }
);

param!(
    /// A page cursor over a stream: the position (or version) of the last item answered.
    StreamCursor(u64),
    |s| s
        .parse::<u64>()
        .map_err(|_| "not a cursor from this endpoint".to_owned())
);

param!(
    /// `as_of`: a global position or an RFC 3339 time.
    AsOfParam(AsOf),
    |s| match s.parse::<u64>() {
        Ok(p) => Ok(AsOf::Position(p)),
        Err(_) => DateTime::parse_from_rfc3339(&s)
            .map(|t| AsOf::Time(t.with_timezone(&Utc)))
            .map_err(|_| "must be a global position or an RFC 3339 time".to_owned()),
    }
);

/// Declares a parameter that takes one of a fixed set of words.
macro_rules! one_of {
    ($(#[$doc:meta])* $name:ident, $allowed:expr) => {
        param!(
            $(#[$doc])* $name(String),
            |s| if $allowed.contains(&s.as_str()) {
                Ok(s)
            } else {
                Err(format!("must be one of {}", $allowed.join(", ")))
            }
        );
    };
}

/// Rollout statuses, as the read models and the rollout view spell them.
pub const STATUSES: [&str; 7] = [
    "draft",
    "ready",
    "running",
    "paused",
    "rolled_back",
    "completed",
    "aborted",
];

/// Decision-log kinds.
pub const KINDS: [&str; 12] = {
    use rollgate_projections::models::kind::*;
    [
        APPROVAL,
        REJECTION,
        ADVANCE_OVERRIDE,
        DEVIATION_REQUESTED,
        DEVIATION_GRANTED,
        DEVIATION_DENIED,
        ROLLBACK,
        ABORT,
        DECISION,
        FREEZE_DECLARED,
        FREEZE_LIFTED,
        POLICY_PUBLISHED,
    ]
};

one_of!(
    /// A rollout status filter.
    Status,
    STATUSES
);

one_of!(
    /// A decision-log kind filter.
    Kind,
    KINDS
);

/// Paging and read-your-writes, shared by every list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<Limit>,
    pub min_position: Option<Count>,
}

/// The page size asked for, or the default of 100.
pub fn limit(l: &Option<Limit>) -> u32 {
    l.as_ref().map_or(100, |l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        limit: Option<Limit>,
        min_position: Option<Count>,
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let q: Q = parse("limit=5&min_position=7").unwrap();
        assert_eq!((q.limit, q.min_position), (Some(Limit(5)), Some(Count(7))));
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("min_position=-1", "min_position"),
            ("min_position=1.5", "min_position"),
            ("min_position=", "min_position"),
            ("nope=1", "nope"),
            ("limit=1&limit=2", "limit"),
        ] {
            let p = parse::<Q>(query).unwrap_err();
            assert_eq!(p.errors[0].field, field, "{query}: {}", p.detail);
        }
    }
}
