//! Slack approvals: Block Kit messages with Approve / Reject buttons, and the interactions
//! endpoint (`POST /v1/integrations/slack/interactions`).
//!
//! A click is taken only when the request is signed by Slack (`X-Slack-Signature`, `v0`,
//! five-minute window) and the Slack user is linked to a rollgate identity; the approval is
//! then an ordinary rollout command of that identity, so every rule applies (a Slack click
//! never skips R1–R12), and it is recorded with `via: "slack"` in its metadata. A refusal is
//! answered as an ephemeral message naming the rule.
//!
//! Links (stream `slack-user-{slack user id}`) are recorded by a governance admin of the
//! team: `SlackUserLinked { slack_user_id, actor_id, roles, team }`, `SlackUserUnlinked`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rollgate_domain::rollout::RolloutCommand;
use rollgate_domain::{
    Actor, ActorId, DomainError, RequestId, Role, RolloutId, Rule, Team, TeamScope,
};
use rollgate_store::{
    read_whole_stream, AppendOutcome, EventData, EventStore, ExpectedVersion, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::signature::{slack_signature_check, SlackRefusal};

pub const LINK_STREAM_PREFIX: &str = "slack-user-";
pub const LINKED_EVENT: &str = "SlackUserLinked";
pub const UNLINKED_EVENT: &str = "SlackUserUnlinked";
pub const APPROVE_ACTION: &str = "rollgate_approve";
pub const REJECT_ACTION: &str = "rollgate_reject";
/// Slack refuses requests older than five minutes; so does rollgate.
pub const SIGNATURE_WINDOW_SECONDS: i64 = 300;

/// A Slack user acting as a rollgate identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackLink {
    pub slack_user_id: String,
    pub actor_id: ActorId,
    pub roles: BTreeSet<Role>,
    pub team: Team,
    pub linked_by: ActorId,
    pub at: DateTime<Utc>,
}

impl SlackLink {
    /// The identity a click acts as: the linked id, roles and team at link time.
    pub fn actor(&self) -> Actor {
        Actor::new(
            self.actor_id.clone(),
            self.roles.iter().copied(),
            TeamScope::Teams(BTreeSet::from([self.team.clone()])),
        )
    }
}

fn valid_slack_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Records a link (a governance admin of `team` only; R10, R11, permission).
pub async fn link_user(
    store: &dyn EventStore,
    admin: &Actor,
    link: SlackLink,
    metadata: Value,
) -> Result<AppendOutcome, LinkError> {
    if admin.is_read_only() {
        return Err(LinkError::Refused(DomainError::ReadOnly {
            actor: admin.id.clone(),
        }));
    }
    if !admin.may_access(&link.team) {
        return Err(LinkError::Refused(DomainError::TeamNotAllowed {
            actor: admin.id.clone(),
            team: link.team.clone(),
        }));
    }
    if !admin.has_role(Role::GovernanceAdmin) {
        return Err(LinkError::Refused(DomainError::Permission {
            actor: admin.id.clone(),
            action: "link a Slack user".into(),
            needed: vec![Role::GovernanceAdmin],
        }));
    }
    if !valid_slack_id(&link.slack_user_id) {
        return Err(LinkError::Refused(DomainError::invalid(
            "slack_user_id",
            "must be a Slack user id (letters and digits)",
        )));
    }
    let stream = format!("{LINK_STREAM_PREFIX}{}", link.slack_user_id);
    let version = store.stream_version(&stream).await?;
    let data = EventData {
        id: Uuid::new_v4(),
        event_type: LINKED_EVENT.into(),
        schema_version: 1,
        payload: serde_json::to_value(&link).expect("serializes"),
        metadata,
    };
    Ok(store
        .append(&stream, ExpectedVersion::Exact(version), vec![data])
        .await?)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Refused(DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current link of a Slack user, if any.
pub async fn link_of(
    store: &dyn EventStore,
    slack_user_id: &str,
) -> Result<Option<SlackLink>, StoreError> {
    if !valid_slack_id(slack_user_id) {
        return Ok(None);
    }
    let mut link = None;
    for e in read_whole_stream(store, &format!("{LINK_STREAM_PREFIX}{slack_user_id}")).await? {
        match e.event_type.as_str() {
            LINKED_EVENT => link = serde_json::from_value(e.payload).ok(),
            UNLINKED_EVENT => link = None,
            _ => {}
        }
    }
    Ok(link)
}

/// What a button carries in its `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonValue {
    pub rollout_id: Uuid,
    pub request_id: Uuid,
}

/// A verified click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Click {
    pub slack_user_id: String,
    pub approve: bool,
    pub value: ButtonValue,
    pub response_url: Option<String>,
}

/// Why an interaction is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InteractionRefusal {
    /// 401: forged, missing or stale signature.
    #[error("Slack signature refused: {0:?}")]
    Signature(SlackRefusal),
    /// 400: signed but not a rollgate button click.
    #[error("not a rollgate interaction: {0}")]
    Invalid(String),
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Verifies (signature first, nothing read before) and reads a `block_actions` interaction.
pub fn parse_interaction(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Click, InteractionRefusal> {
    slack_signature_check(
        signing_secret,
        timestamp,
        signature,
        body,
        now.timestamp(),
        SIGNATURE_WINDOW_SECONDS,
    )
    .map_err(InteractionRefusal::Signature)?;
    let payload = form_field(body, "payload")
        .ok_or_else(|| InteractionRefusal::Invalid("no payload field".into()))?;
    let v: Value = serde_json::from_str(&payload)
        .map_err(|e| InteractionRefusal::Invalid(format!("payload: {e}")))?;
    if v["type"] != "block_actions" {
        return Err(InteractionRefusal::Invalid(format!("type {}", v["type"])));
    }
    let action = &v["actions"][0];
    let approve = match action["action_id"].as_str() {
        Some(APPROVE_ACTION) => true,
        Some(REJECT_ACTION) => false,
        other => return Err(InteractionRefusal::Invalid(format!("action {other:?}"))),
    };
    let value: ButtonValue = action["value"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| InteractionRefusal::Invalid("button value".into()))?;
    Ok(Click {
        slack_user_id: v["user"]["id"].as_str().unwrap_or_default().to_owned(),
        approve,
        value,
        response_url: v["response_url"].as_str().map(str::to_owned),
    })
}

/// Runs a rollout command as an actor through the server's one write path (which applies
/// every rule and writes the R12 metadata); `extra_metadata` (here `{"via": "slack"}`) is
/// merged into the events' metadata.
#[async_trait::async_trait]
pub trait RolloutCommands: Send + Sync {
    async fn execute(
        &self,
        actor: &Actor,
        rollout: RolloutId,
        command: RolloutCommand,
        extra_metadata: Value,
    ) -> Result<String, CommandRefusal>;
}

/// A refused command, as the write path reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandRefusal {
    Domain(DomainError),
    Other(String),
}

/// The answer to Slack (HTTP 200 in every case but a bad signature): an ephemeral text for
/// the clicking user, and the text that replaces the message through `response_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InteractionAnswer {
    pub ephemeral: Option<String>,
    pub rule: Option<Rule>,
    pub replace_message: Option<String>,
}

impl InteractionAnswer {
    /// The JSON body answered to Slack.
    pub fn body(&self) -> Value {
        match &self.ephemeral {
            Some(text) => {
                json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
            }
            None => json!({}),
        }
    }
}

/// Handles a verified click: the linked identity, then the rollout command with every rule.
pub async fn handle_click(
    store: &dyn EventStore,
    commands: &dyn RolloutCommands,
    click: &Click,
) -> Result<InteractionAnswer, StoreError> {
    let Some(link) = link_of(store, &click.slack_user_id).await? else {
        return Ok(InteractionAnswer {
            ephemeral: Some(
                "Your Slack account is not linked to a rollgate identity; ask a governance admin of your team to link it. Nothing was recorded.".into(),
            ),
            rule: None,
            replace_message: None,
        });
    };
    let actor = link.actor();
    let request_id = RequestId::new(click.value.request_id);
    let command = if click.approve {
        RolloutCommand::Approve {
            request_id,
            comment: Some("approved in Slack".into()),
        }
    } else {
        RolloutCommand::Reject {
            request_id,
            comment: "rejected in Slack".into(),
        }
    };
    match commands
        .execute(
            &actor,
            RolloutId::new(click.value.rollout_id),
            command,
            json!({
                "via": "slack",
                "slack_user_id": click.slack_user_id,
                // The clicked message is replaced through the outbox (`slack_notifier`).
                "slack_response_url": click.response_url,
            }),
        )
        .await
    {
        Ok(progress) => Ok(InteractionAnswer {
            ephemeral: None,
            rule: None,
            replace_message: Some(format!(
                "{} by {}; {progress}",
                if click.approve {
                    "approved"
                } else {
                    "rejected"
                },
                actor.id
            )),
        }),
        Err(CommandRefusal::Domain(e)) => Ok(InteractionAnswer {
            rule: e.rule(),
            ephemeral: Some(format!("Refused: {e}")),
            replace_message: None,
        }),
        Err(CommandRefusal::Other(why)) => Ok(InteractionAnswer {
            ephemeral: Some(format!("Refused: {why}")),
            rule: None,
            replace_message: None,
        }),
    }
}

/// The Block Kit message of an approval request (sent to the incoming webhook).
pub fn approval_request_message(
    rollout_id: Uuid,
    request_id: Uuid,
    title: &str,
    stage: &str,
    exposure: f64,
    progress: &str,
) -> Value {
    let value = serde_json::to_string(&ButtonValue {
        rollout_id,
        request_id,
    })
    .expect("serializes");
    json!({
        "text": format!("Approval requested: {title} → {stage} ({exposure}%)"),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn",
              "text": format!("*{title}*\nAdvance to *{stage}* ({exposure}% exposure)\n{progress}") } },
            { "type": "actions", "block_id": "rollgate_decision", "elements": [
                { "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                  "text": { "type": "plain_text", "text": "Approve" }, "value": value },
                { "type": "button", "action_id": REJECT_ACTION, "style": "danger",
                  "text": { "type": "plain_text", "text": "Reject" }, "value": value }
            ] }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_interaction_parses_once_signed() {
        let payload = include_str!("../../../tests/fixtures/slack/block-actions-interaction.json");
        let body = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
        );
        let now = Utc::now();
        let ts = now.timestamp().to_string();
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        m.update(format!("v0:{ts}:{body}").as_bytes());
        let sig = format!("v0={}", hex::encode(m.finalize().into_bytes()));
        let click = parse_interaction(secret, Some(&ts), Some(&sig), body.as_bytes(), now).unwrap();
        assert_eq!(click.slack_user_id, "U0CA5");
        assert!(click.approve);
        assert_eq!(click.value.request_id, Uuid::from_u128(2));
        let stale = now + chrono::Duration::seconds(301);
        assert_eq!(
            parse_interaction(secret, Some(&ts), Some(&sig), body.as_bytes(), stale),
            Err(InteractionRefusal::Signature(SlackRefusal::Stale))
        );
        assert_eq!(
            parse_interaction(b"forged", Some(&ts), Some(&sig), body.as_bytes(), now),
            Err(InteractionRefusal::Signature(SlackRefusal::BadSignature))
        );
    }

    #[test]
    fn approval_messages_carry_both_buttons() {
        let m = approval_request_message(
            Uuid::nil(),
            Uuid::nil(),
            "One-click",
            "beta",
            10.0,
            "0 of 2",
        );
        let buttons = m["blocks"][1]["elements"].as_array().unwrap();
        assert_eq!(buttons[0]["action_id"], APPROVE_ACTION);
        assert_eq!(buttons[1]["action_id"], REJECT_ACTION);
    }
}
