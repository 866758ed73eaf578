//! Read-your-writes: a write answers with its global position, and a read given that
//! position as `min_position` waits (at most `--read-wait-ms`) until what it reads reflects
//! it, answering 503 with `Retry-After` when it does not in time. A position beyond the
//! log's head can never be met by waiting, so it is a 422 at once.

use crate::http::problem::Problem;
use crate::http::query::Count;
use crate::state::AppState;

/// Seconds a client is told to wait when the reads lag behind `min_position`.
pub const LAG_RETRY_AFTER_SECONDS: u64 = 1;

/// The position asked for, refused when no event has it yet.
async fn wanted(state: &AppState, min_position: Option<&Count>) -> Result<Option<u64>, Problem> {
    let Some(wanted) = min_position.map(|c| c.0).filter(|p| *p > 0) else {
        return Ok(None);
    };
    if wanted > state.store.head().await?.position {
        return Err(Problem::invalid_field(
            "min_position",
            "is beyond the head of the log: no write has answered this position",
        ));
    }
    Ok(Some(wanted))
}

fn lagging(what: &str, wanted: u64, at: u64) -> Problem {
    tracing::info!(wanted, at, "{what} behind min_position after the read wait");
    Problem::unavailable(
        format!("the {what} have not caught up with min_position yet; retry"),
        LAG_RETRY_AFTER_SECONDS,
    )
}

/// For reads answered from the log itself (a rollout's stream): the head is read from the
/// database, so a position at or below it is already readable.
pub async fn wait_for_log(state: &AppState, min_position: Option<&Count>) -> Result<(), Problem> {
    wanted(state, min_position).await.map(|_| ())
}

/// For reads answered from the read models.
pub async fn wait_for_projection(
    state: &AppState,
    min_position: Option<&Count>,
) -> Result<(), Problem> {
    let Some(wanted) = wanted(state, min_position).await? else {
        return Ok(());
    };
    if state.projector.position() >= wanted
        || state.projector.wait_for(wanted, state.read_wait).await
    {
        return Ok(());
    }
    Err(lagging("read models", wanted, state.projector.position()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_answer_names_no_position() {
        let p = lagging("read models", 123_456, 123_400);
        assert_eq!(p.status, 503);
        assert!(!p.detail.contains("123"), "{}", p.detail);
        assert_eq!(p.retry_after, Some(LAG_RETRY_AFTER_SECONDS));
    }
}
