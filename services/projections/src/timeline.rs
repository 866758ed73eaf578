//! Per-rollout views built from the stream's events (not from tables): the timeline with
//! T+offsets, a step-by-step replay of the state, and the post-mortem report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rollgate_domain::guardrail::ReadingSource;
use rollgate_domain::{evolve, CriterionKind, RolloutEvent, RolloutState, Verdict};
use rollgate_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::envelope::{Body, Decoded};
use crate::query::AuditActor;

/// What a timeline entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Event,
    Breach,
    Annotation,
    /// An evaluation by rollgate's evaluator that changed a criterion's verdict; evaluations
    /// that change none are left out of the timeline.
    Verdict,
}

/// One line of a rollout's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub position: u64,
    /// When it happened (the decision time carried by the event).
    pub at: DateTime<Utc>,
    /// Seconds since the rollout started (`RolloutStarted`), or since its creation if it
    /// never started; negative before the start.
    pub offset_seconds: i64,
    pub event_type: String,
    pub actor: AuditActor,
    pub summary: String,
    pub kind: TimelineKind,
}

/// The state after one event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayStep {
    pub position: u64,
    pub version: u64,
    pub event_type: String,
    pub at: Option<DateTime<Utc>>,
    pub summary: String,
    /// A summary of the rollout's state after the event (null before creation).
    pub state: Value,
}

fn decoded(events: &[RecordedEvent]) -> Vec<(Decoded<'_>, Option<RolloutEvent>)> {
    events
        .iter()
        .map(|e| {
            let d = Decoded::new(e);
            let r = match &d.body {
                Body::Rollout(r) => Some(r.as_ref().clone()),
                _ => None,
            };
            (d, r)
        })
        .collect()
}

/// The moment offsets count from: the start, else the creation, else the first event.
fn origin(events: &[(Decoded<'_>, Option<RolloutEvent>)]) -> Option<DateTime<Utc>> {
    let find = |pred: fn(&RolloutEvent) -> bool| {
        events
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .find(|r| pred(r))
            .map(RolloutEvent::at)
    };
    find(|r| matches!(r, RolloutEvent::RolloutStarted { .. }))
        .or_else(|| find(|r| matches!(r, RolloutEvent::RolloutCreated { .. })))
        .or_else(|| events.first().map(|(d, _)| d.event.recorded_at))
}

fn when(d: &Decoded<'_>, r: Option<&RolloutEvent>) -> DateTime<Utc> {
    r.map_or(d.event.recorded_at, RolloutEvent::at)
}

fn actor(d: &Decoded<'_>) -> AuditActor {
    AuditActor {
        id: d.actor.id.clone(),
        roles: d.actor.roles.clone(),
    }
}

/// The verdict of each query criterion of the current stage, by (kind, index).
fn query_verdicts(state: &RolloutState) -> BTreeMap<(bool, usize), Verdict> {
    state.rollout().map_or_else(BTreeMap::new, |r| {
        r.criteria_status()
            .into_iter()
            .filter(|c| c.criterion.queries.is_some())
            .map(|c| {
                (
                    (c.kind == CriterionKind::Rollback, c.index),
                    c.evaluation.verdict,
                )
            })
            .collect()
    })
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// What an evaluation by rollgate's evaluator changed: one clause per criterion whose
/// verdict changed, with the query and the values (`None` when it changed none).
fn verdict_changes(
    before: &BTreeMap<(bool, usize), Verdict>,
    after: &RolloutState,
) -> Option<String> {
    let r = after.rollout()?;
    let changes: Vec<String> = r
        .criteria_status()
        .into_iter()
        .filter(|c| c.criterion.queries.is_some())
        .filter_map(|c| {
            let was = before
                .get(&(c.kind == CriterionKind::Rollback, c.index))
                .copied()
                .unwrap_or(Verdict::Inconclusive);
            let e = &c.evaluation;
            if was == e.verdict {
                return None;
            }
            let query = r
                .readings
                .evaluation(&c.criterion.metric)
                .map_or("", |m| m.latest.query.as_str());
            let kind = match c.kind {
                CriterionKind::Success => "success",
                CriterionKind::Rollback => "rollback",
            };
            Some(format!(
                "{kind} criterion {}: {} -> {}; query `{query}`",
                e.describe(),
                verdict_name(was),
                verdict_name(e.verdict),
            ))
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// The timeline of one rollout stream, in stream order. An evaluation recorded by rollgate's
/// evaluator (`source: prometheus`) appears only when it changed a query criterion's verdict
/// (`kind: verdict`, with the query and the values); the others are in the event list.
pub fn timeline(events: &[RecordedEvent]) -> Vec<TimelineEntry> {
    let events = decoded(events);
    let Some(start) = origin(&events) else {
        return Vec::new();
    };
    let mut state = RolloutState::default();
    events
        .iter()
        .filter_map(|(d, r)| {
            let before = query_verdicts(&state);
            if let Some(r) = r {
                state = evolve(std::mem::take(&mut state), r);
            }
            let (summary, kind) = match r {
                Some(RolloutEvent::ReadingsRecorded {
                    source: ReadingSource::Prometheus,
                    ..
                }) => (verdict_changes(&before, &state)?, TimelineKind::Verdict),
                Some(RolloutEvent::GuardrailBreached { .. }) => (d.summary(), TimelineKind::Breach),
                Some(RolloutEvent::Annotated { .. }) => (d.summary(), TimelineKind::Annotation),
                _ => (d.summary(), TimelineKind::Event),
            };
            let at = when(d, r.as_ref());
            Some(TimelineEntry {
                position: d.event.position,
                at,
                offset_seconds: (at - start).num_seconds(),
                event_type: d.event.event_type.clone(),
                actor: actor(d),
                summary,
                kind,
            })
        })
        .collect()
}

/// A compact view of the state: what a reader of a replay wants to see change.
fn snapshot(state: &RolloutState) -> Value {
    let Some(r) = state.rollout() else {
        return Value::Null;
    };
    let open = r.open_request().map(|q| {
        json!({
            "request_id": q.id,
            "from_stage": q.from_stage,
            "to_stage": q.to_stage,
            "requested_by": q.requested_by,
            "approvals": q.all_approvals().iter().map(|a| json!({
                "approver": a.approver,
                "roles": a.roles,
                "plan_revision": a.plan_revision,
                "expires_at": a.expires_at,
            })).collect::<Vec<_>>(),
        })
    });
    let deviations: serde_json::Map<String, Value> = r
        .deviations
        .values()
        .map(|d| (d.id.to_string(), json!(d.status.as_str())))
        .collect();
    json!({
        "id": r.id,
        "feature_key": r.feature_key,
        "title": r.title,
        "team": r.team,
        "status": r.status.as_str(),
        "stage_index": r.position,
        "stage_name": r.current_stage().map(|s| s.name.clone()),
        "exposure": r.exposure().get(),
        "plan_revision": r.plan_revision,
        "stage_entered_at": r.stage_entered_at,
        "readings_at_stage": r.readings.len(),
        "readiness_signed": r.readiness_signed.keys().collect::<Vec<_>>(),
        "open_request": open,
        "deviations": deviations,
        "decisions": r.decision_ids.len(),
        "annotations": r.annotation_ids.len(),
        "version": r.version,
        "updated_at": r.updated_at,
    })
}

/// The state after each event of a rollout stream (via the domain's `evolve`).
pub fn replay(events: &[RecordedEvent]) -> Vec<ReplayStep> {
    let mut state = RolloutState::default();
    decoded(events)
        .into_iter()
        .map(|(d, r)| {
            if let Some(r) = &r {
                state = evolve(std::mem::take(&mut state), r);
            }
            ReplayStep {
                position: d.event.position,
                version: d.event.version,
                event_type: d.event.event_type.clone(),
                at: r.as_ref().map(RolloutEvent::at),
                summary: d.summary(),
                state: snapshot(&state),
            }
        })
        .collect()
}

/// `T+1:06:40` (hours unbounded), `T-0:00:10` before the start.
pub fn format_offset(seconds: i64) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    format!("T{sign}{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

fn format_duration(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h ");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m ");
    }
    let _ = write!(out, "{sec}s");
    if seconds < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Escapes text for one Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn by(d: &Decoded<'_>) -> String {
    d.actor.id.clone().unwrap_or_else(|| "unknown".to_owned())
}

/// The post-mortem report of one rollout stream, in Markdown: summary, timeline,
/// decisions, deviations, guardrail breaches, time from the first breach to the rollback,
/// and annotations.
pub fn postmortem_markdown(events: &[RecordedEvent]) -> String {
    let decoded = decoded(events);
    let mut state = RolloutState::default();
    for r in decoded.iter().filter_map(|(_, r)| r.as_ref()) {
        state = evolve(state, r);
    }
    let start = origin(&decoded);
    let offset = |at: DateTime<Utc>| start.map_or(0, |s| (at - s).num_seconds());
    let mut md = String::new();

    match state.rollout() {
        Some(r) => {
            let _ = writeln!(md, "# Post-mortem: {} (`{}`)\n", r.title, r.feature_key);
            let _ = writeln!(md, "## Summary\n");
            let _ = writeln!(md, "- Rollout: `{}`", r.id);
            let _ = writeln!(md, "- Team: {}", r.team);
            let _ = writeln!(
                md,
                "- Created: {} by {}",
                r.created_at.to_rfc3339(),
                r.created_by
            );
            let _ = writeln!(
                md,
                "- Final status: {} at {} ({}% exposure), plan revision {}",
                r.status,
                r.current_stage()
                    .map_or_else(|| "0 %".to_owned(), |s| format!("stage {}", s.name)),
                r.exposure().get(),
                r.plan_revision
            );
        }
        None => {
            let _ = writeln!(md, "# Post-mortem\n\n## Summary\n");
        }
    }
    if let Some(s) = start {
        let _ = writeln!(md, "- T+0 (start): {}", s.to_rfc3339());
    }
    let _ = writeln!(md, "- Events: {}", decoded.len());

    // Breach → rollback.
    let breaches: Vec<_> = decoded
        .iter()
        .filter(|(_, r)| matches!(r, Some(RolloutEvent::GuardrailBreached { .. })))
        .collect();
    let first_breach = breaches
        .first()
        .and_then(|(_, r)| r.as_ref().map(|r| r.at()));
    let rollback_after = first_breach.and_then(|b| {
        decoded.iter().find_map(|(_, r)| match r {
            Some(e @ RolloutEvent::RolledBack { at, .. }) if *at >= b => Some(e.at()),
            _ => None,
        })
    });
    match (first_breach, rollback_after) {
        (Some(b), Some(rb)) => {
            let _ = writeln!(
                md,
                "- Time from first breach ({}) to rollback ({}): {} ({} s)",
                format_offset(offset(b)),
                format_offset(offset(rb)),
                format_duration((rb - b).num_seconds()),
                (rb - b).num_seconds()
            );
        }
        (Some(b), None) => {
            let _ = writeln!(
                md,
                "- First breach at {}; no rollback followed",
                format_offset(offset(b))
            );
        }
        _ => {
            let _ = writeln!(md, "- No guardrail breach");
        }
    }

    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| offset | position | event | actor | summary |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for entry in timeline(events) {
        let marker = match entry.kind {
            TimelineKind::Breach => " **breach**",
            TimelineKind::Annotation => " *annotation*",
            TimelineKind::Verdict => " *verdict*",
            TimelineKind::Event => "",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {}{} | {} | {} |",
            format_offset(entry.offset_seconds),
            entry.position,
            entry.event_type,
            marker,
            cell(entry.actor.id.as_deref().unwrap_or("")),
            cell(&entry.summary)
        );
    }

    let _ = writeln!(md, "\n## Decisions\n");
    let mut any = false;
    for (d, r) in &decoded {
        let Some(r) = r else { continue };
        let pv = d
            .policy_version
            .map_or_else(String::new, |v| format!(", policy v{v}"));
        let line = match r {
            RolloutEvent::DecisionRecorded {
                title,
                rationale,
                alternatives,
                outcome,
                at,
                ..
            } => {
                let mut s = format!(
                    "- {} **{}** by {}{}: {}. Outcome: {}.",
                    format_offset(offset(*at)),
                    title,
                    by(d),
                    pv,
                    rationale,
                    outcome
                );
                if !alternatives.is_empty() {
                    let _ = write!(s, " Alternatives considered: {}.", alternatives.join("; "));
                }
                s
            }
            RolloutEvent::AdvanceApproved { at, .. }
            | RolloutEvent::AdvanceRejected { at, .. }
            | RolloutEvent::RolledBack { at, .. }
            | RolloutEvent::RolloutAborted { at, .. } => format!(
                "- {} {} ({}{})",
                format_offset(offset(*at)),
                r.summary(),
                d.event.event_type,
                pv
            ),
            RolloutEvent::Advanced {
                inconclusive_override: Some(why),
                at,
                ..
            } => format!(
                "- {} advance overriding inconclusive criteria by {}{}: {}",
                format_offset(offset(*at)),
                by(d),
                pv,
                why
            ),
            _ => continue,
        };
        any = true;
        let _ = writeln!(md, "{line}");
    }
    if !any {
        let _ = writeln!(md, "None recorded.");
    }

    let _ = writeln!(md, "\n## Deviations\n");
    let mut any = false;
    for (d, r) in &decoded {
        let line = match r {
            Some(
                e @ (RolloutEvent::DeviationRequested { .. }
                | RolloutEvent::DeviationGranted { .. }
                | RolloutEvent::DeviationDenied { .. }),
            ) => format!("- {} {}", format_offset(offset(e.at())), e.summary()),
            Some(RolloutEvent::Advanced {
                deviations_used,
                waived,
                at,
                ..
            }) if !deviations_used.is_empty() => format!(
                "- {} advance used deviation(s) {} waiving {} condition(s)",
                format_offset(offset(*at)),
                deviations_used
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                waived.len()
            ),
            _ => continue,
        };
        let _ = d;
        any = true;
        let _ = writeln!(md, "{line}");
    }
    if !any {
        let _ = writeln!(md, "None.");
    }

    let _ = writeln!(md, "\n## Guardrail breaches\n");
    if breaches.is_empty() {
        let _ = writeln!(md, "None.");
    }
    for (_, r) in &breaches {
        if let Some(
            e @ RolloutEvent::GuardrailBreached {
                criterion,
                reading,
                action,
                ..
            },
        ) = r
        {
            let _ = writeln!(
                md,
                "- {} {}: value {} over {} samples (min {}), observed {}; action: {}",
                format_offset(offset(e.at())),
                criterion,
                reading.value,
                reading.samples,
                criterion.min_samples,
                reading.observed_at.to_rfc3339(),
                serde_json::to_value(action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
        }
    }

    let _ = writeln!(md, "\n## Annotations\n");
    let mut any = false;
    for (d, r) in &decoded {
        if let Some(RolloutEvent::Annotated {
            about, text, at, ..
        }) = r
        {
            any = true;
            let about = about
                .as_ref()
                .map_or_else(String::new, |a| format!(" (about {a})"));
            let _ = writeln!(
                md,
                "- {} {}{}: {}",
                format_offset(offset(*at)),
                by(d),
                about,
                text
            );
        }
    }
    if !any {
        let _ = writeln!(md, "None.");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_durations_read_well() {
        assert_eq!(format_offset(0), "T+0:00:00");
        assert_eq!(format_offset(4000), "T+1:06:40");
        assert_eq!(format_offset(-10), "T-0:00:10");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(3661), "1h 1m 1s");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
