//! GitHub deployment protection rules and Slack approvals (`rollgate_delivery::{github,
//! slack}`).
//!
//! - `POST /v1/integrations/github/webhook`: signature first (401, nothing recorded), other
//!   events 202 ignored, a malformed signed body 400; a `deployment_protection_rule` /
//!   `requested` delivery is bound to the rollout of the active binding naming its repository
//!   and environment and recorded once per `X-GitHub-Delivery` (202). The decision is posted
//!   later by the reporter, through the outbox.
//! - `POST /v1/integrations/slack/interactions`: Slack's signature (401 when forged or older
//!   than five minutes), then the click as the linked identity through the one write path,
//!   with every rule (`via: slack` in the metadata); refusals are ephemeral messages (200).
//! - `PUT /v1/integrations/slack/users/{slack_user_id}`: a governance admin links a Slack user
//!   to a rollgate identity of the team.

use std::collections::BTreeSet;

use actix_web::{web, HttpRequest, HttpResponse};
use rollgate_delivery::github::{self, GitHubHeaders, GitHubRefusal, Recorded};
use rollgate_delivery::slack::{
    self, CommandRefusal, InteractionRefusal, RolloutCommands, SlackLink,
};
use rollgate_domain::rollout::RolloutCommand;
use rollgate_domain::{Actor, ActorId, Role, RolloutId, Team};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::command::execute::{Issuer, RequestMeta};
use crate::command::ids::Ids;
use crate::http::body;
use crate::http::consistency::LAG_RETRY_AFTER_SECONDS;
use crate::http::extract::Write;
use crate::http::problem::Problem;
use crate::routes::webhooks::metadata;
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

fn header_of(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The rollout and team of the active binding naming `repository` and `environment`, from
/// the `github_bindings` read model (an index) once it reflects the log as it is now, so a
/// binding made just before the webhook is seen; 503 (GitHub lets the delivery be sent
/// again) when the projection lags past the read wait.
async fn github_binding(
    state: &AppState,
    repository: &str,
    environment: &str,
) -> Result<Option<(RolloutId, Team)>, Problem> {
    let head = state.store.head().await?.position;
    if state.projector.position() < head && !state.projector.wait_for(head, state.read_wait).await {
        tracing::info!(
            head,
            at = state.projector.position(),
            "GitHub binding look-up: read models behind the log after the read wait"
        );
        return Err(Problem::unavailable(
            "the read models have not caught up with the log yet; retry",
            LAG_RETRY_AFTER_SECONDS,
        ));
    }
    let found =
        rollgate_projections::github_binding(&state.store.pool(), repository, environment).await?;
    let Some((rollout, team)) = found else {
        return Ok(None);
    };
    let corrupt = |what: &str, value: &str| {
        tracing::error!("github_bindings holds an unreadable {what}: {value:?}");
        Problem::internal()
    };
    let rollout_id = RolloutId::parse(&rollout).map_err(|_| corrupt("rollout id", &rollout))?;
    let team = Team::parse(&team).map_err(|_| corrupt("team", &team))?;
    Ok(Some((rollout_id, team)))
}

/// `POST /v1/integrations/github/webhook`.
pub async fn github_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Answer {
    let Some(secret) = state.integrations.github_webhook_secret.clone() else {
        return Err(Problem::unavailable(
            "GitHub is not configured on this server (--github-app-id)",
            60,
        ));
    };
    let raw = body::read_limited(&req, &mut payload.into_inner()).await?;
    let headers = GitHubHeaders {
        event: header_of(&req, "x-github-event"),
        delivery: header_of(&req, "x-github-delivery"),
        signature: header_of(&req, "x-hub-signature-256"),
    };
    let request = match github::parse_request(&secret, &headers, &raw) {
        Ok(r) => r,
        Err(GitHubRefusal::BadSignature) => {
            return Err(Problem::unauthenticated(
                "the X-Hub-Signature-256 signature does not match",
            ))
        }
        Err(GitHubRefusal::Ignored(what)) => {
            return Ok(HttpResponse::Accepted().json(json!({ "status": "ignored", "event": what })))
        }
        Err(GitHubRefusal::Invalid(why)) => return Err(Problem::bad_request(why)),
    };
    let bound = github_binding(&state, &request.repository, &request.environment).await?;
    let recorded = github::record_request(
        &*state.store,
        &request,
        bound.as_ref().map(|(r, _)| r.as_uuid()),
        bound.as_ref().map(|(_, t)| t.as_str()),
        state.clock.now(),
    )
    .await?;
    let (status, position) = match recorded {
        Recorded::New(o) => ("recorded", Some(o.last_position)),
        Recorded::Duplicate => ("duplicate", None),
    };
    Ok(HttpResponse::Accepted().json(json!({
        "status": status,
        "delivery_id": request.delivery_id,
        "rollout_id": bound.as_ref().map(|(r, _)| r.to_string()),
        "position": position,
    })))
}

/// Slack clicks through the server's one write path.
struct Executor<'a> {
    state: &'a AppState,
    meta: RequestMeta,
}

#[async_trait::async_trait]
impl RolloutCommands for Executor<'_> {
    async fn execute(
        &self,
        actor: &Actor,
        rollout: RolloutId,
        command: RolloutCommand,
        extra_metadata: Value,
    ) -> Result<String, CommandRefusal> {
        let ids = Ids::Random;
        let issuer = Issuer {
            state: self.state,
            actor,
            meta: &self.meta,
            ids: &ids,
        };
        match issuer
            .rollout_with(&rollout, None, command, &extra_metadata)
            .await
        {
            Ok(w) => Ok(format!("recorded ({})", w.event_types.join(", "))),
            Err(p) => {
                let rule = p
                    .rule
                    .clone()
                    .map(|r| format!(" [{r}]"))
                    .unwrap_or_default();
                Err(CommandRefusal::Other(format!("{}{rule}", p.detail)))
            }
        }
    }
}

/// `POST /v1/integrations/slack/interactions` (form-encoded `payload`, Slack-signed).
pub async fn slack_interactions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Answer {
    let Some(secret) = state.integrations.slack_signing_secret.clone() else {
        return Err(Problem::unavailable(
            "Slack is not configured on this server (--slack-signing-secret-file)",
            60,
        ));
    };
    let raw = body::read_limited(&req, &mut payload.into_inner()).await?;
    let click = match slack::parse_interaction(
        &secret,
        header_of(&req, "x-slack-request-timestamp").as_deref(),
        header_of(&req, "x-slack-signature").as_deref(),
        &raw,
        state.clock.now(),
    ) {
        Ok(c) => c,
        Err(InteractionRefusal::Signature(why)) => {
            return Err(Problem::unauthenticated(format!(
                "Slack signature refused: {why:?}"
            )))
        }
        Err(InteractionRefusal::Invalid(why)) => return Err(Problem::bad_request(why)),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let executor = Executor {
        state: &state,
        meta: RequestMeta {
            correlation_id: request_id.clone(),
            request_id,
            client_request_id: None,
            causation_id: None,
        },
    };
    // Slack waits three seconds for the answer.
    let answer = tokio::time::timeout(
        std::time::Duration::from_millis(2500),
        slack::handle_click(&*state.store, &executor, &click),
    )
    .await
    .map_err(|_| Problem::unavailable("the approval took too long; try again", 1))??;
    let mut body = answer.body();
    if let Some(rule) = answer.rule {
        body["rule"] = json!(format!("{rule:?}"));
    }
    if let Some(text) = &answer.replace_message {
        body["text"] = json!(text);
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    actor_id: String,
    roles: BTreeSet<Role>,
    team: String,
}

/// `PUT /v1/integrations/slack/users/{slack_user_id}` `{"actor_id","roles","team"}`.
pub async fn link_slack_user(w: Write) -> Answer {
    let body: LinkBody = w.body()?;
    let actor_id = ActorId::parse(&body.actor_id)
        .map_err(|e| Problem::invalid_field("actor_id", e.to_string()))?;
    let team =
        Team::parse(&body.team).map_err(|e| Problem::invalid_field("team", e.to_string()))?;
    if body.roles.is_empty() {
        return Err(Problem::invalid_field("roles", "at least one role"));
    }
    let link = SlackLink {
        slack_user_id: w.path("slack_user_id").to_owned(),
        actor_id,
        roles: body.roles,
        team: team.clone(),
        linked_by: w.caller.actor.id.clone(),
        at: w.state.clock.now(),
    };
    let md = metadata(&w.req, &w.caller.actor, Some(team.as_str()));
    let outcome = slack::link_user(&*w.state.store, &w.caller.actor, link.clone(), md)
        .await
        .map_err(|e| match e {
            slack::LinkError::Refused(d) => Problem::from(d),
            slack::LinkError::Store(s) => Problem::from(s),
        })?;
    let mut view = serde_json::to_value(&link).map_err(|_| Problem::internal())?;
    view["position"] = json!(outcome.last_position);
    Ok(HttpResponse::Ok().json(view))
}
