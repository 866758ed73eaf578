//! The whole-log audit endpoints and the offline verifier shared with the CLI.
//!
//! - `GET /v1/audit/export?format=ndjson|csv[&from_position=N][&to_position=M]`: every
//!   stored envelope field of each event, streamed page by page in constant memory.
//! - `GET /v1/audit/verify[?position=N&hash=H]`: recomputes the hash chain of the database.
//! - `GET /v1/audit/head`: the head (position and chain hash) to keep for later checks.
//!
//! All three read the whole log across teams (a team-scoped export would have holes and
//! break the chain), so they answer only callers whose teams claim is `*` and who hold the
//! `auditor` or `governance_admin` role; anyone else gets a 403 `forbidden` problem with
//! rule `permission`.
//!
//! [`verify_export`] checks an export file offline, without any database: it parses each
//! line back into a [`RecordedEvent`] and feeds the store's [`ChainVerifier`]. Lines are
//! checked byte for byte against the form the exporter writes, so a changed byte anywhere in
//! a line is reported with that line's position, even when it leaves the values equal.

use std::io::BufRead;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use futures::Stream;
use rollgate_domain::{Role, TeamScope};
use rollgate_store::chain::{format_time, GENESIS_HASH};
use rollgate_store::verify::ChainVerifier;
use rollgate_store::{EventStore, Head, RecordedEvent, StoreError, VerifyReport};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::Caller;
use crate::problem::Problem;
use crate::AppState;

/// Events read from the store per page (and written per chunk) while exporting.
pub const EXPORT_PAGE: usize = 1000;

/// The columns of a CSV export, in order; also the NDJSON members, in order.
pub const EXPORT_COLUMNS: [&str; 11] = [
    "position",
    "stream",
    "version",
    "id",
    "type",
    "schema_version",
    "payload",
    "metadata",
    "recorded_at",
    "prev_hash",
    "hash",
];

/// The two export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A header row, then one row per event; payload and metadata as JSON text (`text/csv`).
    Csv,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }
}

/// Whole-log reads: teams `*` and the auditor or governance_admin role.
pub fn require_whole_log_reader(caller: &Caller) -> Result<(), Problem> {
    let all_teams = matches!(caller.actor.teams, TeamScope::All);
    let role = caller
        .actor
        .has_any_role(&[Role::Auditor, Role::GovernanceAdmin]);
    if all_teams && role {
        return Ok(());
    }
    let detail = if !role {
        "the whole-log audit endpoints need the auditor or governance_admin role"
    } else {
        "the whole-log audit endpoints cover every team: they need the teams claim `*` \
         (an export limited to some teams would break the hash chain)"
    };
    Err(Problem::new(
        actix_web::http::StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        detail,
    )
    .with_rule("permission"))
}

// ---------------------------------------------------------------------------------------
// Writing exports
// ---------------------------------------------------------------------------------------

/// One exported line, borrowed from a recorded event (members in [`EXPORT_COLUMNS`] order).
#[derive(Serialize)]
struct ExportLine<'a> {
    position: u64,
    stream: &'a str,
    version: u64,
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    payload: &'a Value,
    metadata: &'a Value,
    recorded_at: String,
    prev_hash: &'a str,
    hash: &'a str,
}

impl<'a> From<&'a RecordedEvent> for ExportLine<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        ExportLine {
            position: e.position,
            stream: &e.stream,
            version: e.version,
            id: e.id.to_string(),
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at: format_time(&e.recorded_at),
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        }
    }
}

/// The CSV fields of an event, as text, in [`EXPORT_COLUMNS`] order.
fn csv_fields(e: &RecordedEvent) -> [String; 11] {
    [
        e.position.to_string(),
        e.stream.clone(),
        e.version.to_string(),
        e.id.to_string(),
        e.event_type.clone(),
        e.schema_version.to_string(),
        serde_json::to_string(&e.payload).unwrap_or_default(),
        serde_json::to_string(&e.metadata).unwrap_or_default(),
        format_time(&e.recorded_at),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

/// The CSV header row.
pub fn csv_header() -> Vec<u8> {
    let mut w = csv_writer();
    let _ = w.write_record(EXPORT_COLUMNS);
    w.into_inner().unwrap_or_default()
}

/// Appends the lines (NDJSON) or rows (CSV) of `events` to `out`.
pub fn write_events(format: ExportFormat, events: &[RecordedEvent], out: &mut Vec<u8>) {
    match format {
        ExportFormat::Ndjson => {
            for e in events {
                // Serializing plain JSON values into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, &ExportLine::from(e));
                out.push(b'\n');
            }
        }
        ExportFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(std::mem::take(out));
            for e in events {
                let _ = w.write_record(csv_fields(e));
            }
            *out = w.into_inner().unwrap_or_default();
        }
    }
}

/// Which part of the log to export: positions `from..=to`.
#[derive(Clone, Copy, Debug)]
pub struct ExportRange {
    pub from: u64,
    pub to: u64,
}

impl ExportRange {
    /// The range for optional bounds, given the head when the export starts: the whole log
    /// by default, and never past the head (so an export ends even while writes go on).
    pub fn new(from: Option<u64>, to: Option<u64>, head: u64) -> Result<Self, String> {
        let from = from.unwrap_or(1);
        if from == 0 {
            return Err("from_position: positions start at 1".to_owned());
        }
        let to = to.unwrap_or(head).min(head);
        Ok(ExportRange { from, to })
    }
}

struct ExportState {
    store: Arc<dyn EventStore>,
    format: ExportFormat,
    after: u64,
    to: u64,
    header_pending: bool,
}

/// The export as a stream of chunks (one per page of [`EXPORT_PAGE`] events): constant
/// memory whatever the size of the log.
pub fn export_stream(
    store: Arc<dyn EventStore>,
    format: ExportFormat,
    range: ExportRange,
) -> impl Stream<Item = Result<Bytes, StoreError>> + 'static {
    let state = ExportState {
        store,
        format,
        after: range.from.saturating_sub(1),
        to: range.to,
        header_pending: format == ExportFormat::Csv,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if s.header_pending {
            s.header_pending = false;
            return Some((Ok(Bytes::from(csv_header())), Some(s)));
        }
        if s.after >= s.to {
            return None;
        }
        let want = EXPORT_PAGE.min((s.to - s.after) as usize);
        match s.store.read_all(s.after, want).await {
            Err(e) => Some((Err(e), None)),
            Ok(page) => {
                let page: Vec<RecordedEvent> = page
                    .into_iter()
                    .take_while(|e| e.position <= s.to)
                    .collect();
                let last = page.last()?.position;
                let mut out = Vec::with_capacity(page.len() * 512);
                write_events(s.format, &page, &mut out);
                s.after = last;
                Some((Ok(Bytes::from(out)), Some(s)))
            }
        }
    })
}

/// Writes the export of `range` to `out` page by page (the CLI's export, straight from the
/// store); answers the head of the export (its last event), if it holds any event.
pub async fn export_to(
    store: &dyn EventStore,
    format: ExportFormat,
    range: ExportRange,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Option<Head>> {
    if format == ExportFormat::Csv {
        out.write_all(&csv_header())?;
    }
    let mut after = range.from.saturating_sub(1);
    let mut last = None;
    let mut chunk = Vec::new();
    while after < range.to {
        let want = EXPORT_PAGE.min((range.to - after) as usize);
        let page = store.read_all(after, want).await?;
        let page: Vec<RecordedEvent> = page
            .into_iter()
            .take_while(|e| e.position <= range.to)
            .collect();
        let Some(tail) = page.last() else { break };
        after = tail.position;
        last = Some(Head {
            position: tail.position,
            hash: tail.hash.clone(),
        });
        chunk.clear();
        write_events(format, &page, &mut chunk);
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(last)
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub format: Option<String>,
    pub from_position: Option<u64>,
    pub to_position: Option<u64>,
}

/// `GET /v1/audit/export`.
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let format = match query.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("csv") => ExportFormat::Csv,
        Some(other) => {
            return Err(Problem::invalid_field(
                "format",
                format!("{other:?} is not an export format (ndjson, csv)"),
            ))
        }
    };
    let head = state.store.head().await?;
    let range = ExportRange::new(query.from_position, query.to_position, head.position)
        .map_err(|m| Problem::invalid_field("from_position", m))?;
    let filename = format!(
        "rollgate-audit-{}-{}.{}",
        range.from,
        range.to,
        format.extension()
    );
    let body =
        futures::StreamExt::map(export_stream(state.store.clone(), format, range), |chunk| {
            chunk.map_err(|e| {
                tracing::error!(error = %e, "audit export failed mid-stream");
                actix_web::error::ErrorInternalServerError("audit export failed")
            })
        });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    pub position: Option<u64>,
    pub hash: Option<String>,
}

/// `GET /v1/audit/verify`: 200 with the report, whether the chain is intact or not.
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let exported = match (query.position, &query.hash) {
        (None, None) => None,
        (Some(position), Some(hash)) => {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Problem::invalid_field(
                    "hash",
                    "must be a SHA-256 chain hash (64 hex digits)",
                ));
            }
            Some(Head {
                position,
                hash: hash.clone(),
            })
        }
        (Some(_), None) => {
            return Err(Problem::invalid_field(
                "hash",
                "an exported head needs both position and hash",
            ))
        }
        (None, Some(_)) => {
            return Err(Problem::invalid_field(
                "position",
                "an exported head needs both position and hash",
            ))
        }
    };
    let report = rollgate_store::verify(&*state.store, exported.as_ref()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/audit/head`.
pub async fn head(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let head = state.store.head().await?;
    Ok(HttpResponse::Ok().json(head))
}

// ---------------------------------------------------------------------------------------
// Offline verification
// ---------------------------------------------------------------------------------------

/// One line as read back (the same members as [`ExportLine`], nothing else).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParsedLine {
    position: u64,
    stream: String,
    version: u64,
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    payload: Value,
    metadata: Value,
    recorded_at: String,
    prev_hash: String,
    hash: String,
}

/// Why a line could not be taken back, and which position it names (when it names one).
struct LineError {
    position: Option<u64>,
    reason: String,
}

impl LineError {
    fn new(position: Option<u64>, reason: impl Into<String>) -> Self {
        LineError {
            position,
            reason: reason.into(),
        }
    }
}

fn parse_id(text: &str, position: u64) -> Result<Uuid, LineError> {
    let id = Uuid::parse_str(text)
        .map_err(|_| LineError::new(Some(position), format!("id {text:?} is not a UUID")))?;
    if id.to_string() != text {
        return Err(LineError::new(
            Some(position),
            format!("id {text:?} is not in its exported form"),
        ));
    }
    Ok(id)
}

fn parse_time(text: &str, position: u64) -> Result<DateTime<Utc>, LineError> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| {
            LineError::new(
                Some(position),
                format!("recorded_at {text:?} is not an RFC 3339 time"),
            )
        })?
        .with_timezone(&Utc);
    if format_time(&t) != text {
        return Err(LineError::new(
            Some(position),
            format!("recorded_at {text:?} is not in its exported form"),
        ));
    }
    Ok(t)
}

/// A best guess at the position a damaged NDJSON line names.
fn ndjson_position_hint(line: &str) -> Option<u64> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => m.get("position").and_then(Value::as_u64),
        _ => None,
    }
}

fn parse_ndjson_line(line: &str) -> Result<RecordedEvent, LineError> {
    let parsed: ParsedLine = serde_json::from_str(line).map_err(|e| {
        LineError::new(
            ndjson_position_hint(line),
            format!("line is not an exported event: {e}"),
        )
    })?;
    let position = parsed.position;
    let event = RecordedEvent {
        position,
        id: parse_id(&parsed.id, position)?,
        recorded_at: parse_time(&parsed.recorded_at, position)?,
        stream: parsed.stream,
        version: parsed.version,
        event_type: parsed.event_type,
        schema_version: parsed.schema_version,
        payload: parsed.payload,
        metadata: parsed.metadata,
        prev_hash: parsed.prev_hash,
        hash: parsed.hash,
    };
    // Byte for byte: a change that leaves the values equal (`3.0` → `3e0`, key order,
    // spacing, an escaped character) is a change to the file all the same.
    let again = serde_json::to_string(&ExportLine::from(&event)).unwrap_or_default();
    if again != line {
        return Err(LineError::new(
            Some(position),
            "line differs from the exported form of its own values",
        ));
    }
    Ok(event)
}

fn parse_csv_record(fields: &[String]) -> Result<RecordedEvent, LineError> {
    let hint = fields.first().and_then(|p| p.parse::<u64>().ok());
    if fields.len() != EXPORT_COLUMNS.len() {
        return Err(LineError::new(
            hint,
            format!(
                "row has {} fields, expected {}",
                fields.len(),
                EXPORT_COLUMNS.len()
            ),
        ));
    }
    let number = |i: usize| -> Result<u64, LineError> {
        fields[i].parse::<u64>().map_err(|_| {
            LineError::new(
                hint,
                format!("{} {:?} is not a number", EXPORT_COLUMNS[i], fields[i]),
            )
        })
    };
    let position = number(0)?;
    let json = |i: usize| -> Result<Value, LineError> {
        serde_json::from_str(&fields[i]).map_err(|e| {
            LineError::new(
                Some(position),
                format!("{} is not JSON: {e}", EXPORT_COLUMNS[i]),
            )
        })
    };
    let event = RecordedEvent {
        position,
        stream: fields[1].clone(),
        version: number(2)?,
        id: parse_id(&fields[3], position)?,
        event_type: fields[4].clone(),
        schema_version: u32::try_from(number(5)?).map_err(|_| {
            LineError::new(Some(position), "schema_version is out of range".to_owned())
        })?,
        payload: json(6)?,
        metadata: json(7)?,
        recorded_at: parse_time(&fields[8], position)?,
        prev_hash: fields[9].clone(),
        hash: fields[10].clone(),
    };
    let again = csv_fields(&event);
    if let Some(i) = (0..again.len()).find(|&i| again[i] != fields[i]) {
        return Err(LineError::new(
            Some(position),
            format!(
                "{} differs from the exported form of its own value",
                EXPORT_COLUMNS[i]
            ),
        ));
    }
    Ok(event)
}

fn bad(position: u64, reason: impl Into<String>) -> VerifyReport {
    VerifyReport::Bad {
        ok: false,
        first_bad_position: position,
        reason: reason.into(),
    }
}

/// Feeds parsed events to the chain verifier, checking an exported head on the way.
struct ExportChecker<'a> {
    exported: Option<&'a Head>,
    verifier: Option<ChainVerifier>,
    /// The last position fed successfully.
    last: u64,
}

impl<'a> ExportChecker<'a> {
    fn new(exported: Option<&'a Head>) -> Self {
        ExportChecker {
            exported,
            verifier: None,
            last: 0,
        }
    }

    /// The position the next line should hold.
    fn expected(&self) -> u64 {
        self.last + 1
    }

    /// The position to name for a line that cannot be taken back: the one expected there,
    /// or, on the first line (a partial export may start anywhere), the one it claims.
    fn damaged(&self, claimed: Option<u64>) -> u64 {
        match (self.verifier.is_some(), claimed) {
            (false, Some(p)) if p > 0 => p,
            _ => self.expected(),
        }
    }

    /// Checks the next event; `Err` is the final verdict.
    fn feed(&mut self, e: &RecordedEvent) -> Result<(), VerifyReport> {
        if self.verifier.is_none() {
            self.verifier = Some(self.start(e)?);
        }
        let verifier = self.verifier.as_mut().expect("set above");
        if !verifier.feed(e) {
            let failed = self.verifier.take().expect("set above");
            return Err(failed.finish(None, None));
        }
        self.last = e.position;
        if let Some(x) = self.exported {
            if e.position == x.position && e.hash != x.hash {
                return Err(bad(
                    e.position,
                    "hash differs from the exported head: the log was rewritten",
                ));
            }
        }
        Ok(())
    }

    /// Where the chain starts: at genesis for an export from position 1, or at the exported
    /// head for a partial export that continues it.
    fn start(&self, first: &RecordedEvent) -> Result<ChainVerifier, VerifyReport> {
        if let Some(x) = self.exported {
            if x.position == 0 && x.hash != GENESIS_HASH {
                return Err(bad(
                    1,
                    "the exported head at position 0 must carry the genesis hash",
                ));
            }
            if first.position > 1 && x.position + 1 == first.position {
                return Ok(ChainVerifier::continuing(x));
            }
        }
        if first.position <= 1 {
            return Ok(ChainVerifier::default());
        }
        Err(bad(
            1,
            format!(
                "the export starts at position {}: positions 1 to {} are missing (a partial \
                 export verifies only against the head exported at position {})",
                first.position,
                first.position - 1,
                first.position - 1
            ),
        ))
    }

    fn finish(self) -> VerifyReport {
        let verifier = self.verifier.unwrap_or_default();
        if let Some(x) = self.exported {
            if x.position == 0 && x.hash != GENESIS_HASH {
                return bad(
                    1,
                    "the exported head at position 0 must carry the genesis hash",
                );
            }
        }
        verifier.finish(None, self.exported)
    }
}

/// Verifies an export (NDJSON or CSV) offline: parses every line back into an event and
/// recomputes the hash chain, without any database. With `exported_head` (a head kept from
/// `GET /v1/audit/head` or an earlier export), also proves that the export still holds that
/// head unchanged, so truncation and rewriting are detected; a partial export (from
/// position k > 1) verifies only against the head at position k − 1, which anchors it.
///
/// A line that no longer parses names the position it carries, or the position it should
/// carry; a read error names the position expected next.
pub fn verify_export(
    reader: impl BufRead,
    format: ExportFormat,
    exported_head: Option<&Head>,
) -> VerifyReport {
    let mut checker = ExportChecker::new(exported_head);
    match format {
        ExportFormat::Ndjson => {
            for line in reader.lines() {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        return bad(
                            checker.expected(),
                            format!("the export cannot be read: {e}"),
                        )
                    }
                };
                let line = line.strip_suffix('\r').unwrap_or(&line);
                let event = match parse_ndjson_line(line) {
                    Ok(e) => e,
                    Err(e) => return bad(checker.damaged(e.position), e.reason),
                };
                if let Err(report) = checker.feed(&event) {
                    return report;
                }
            }
        }
        ExportFormat::Csv => {
            let mut rows = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(reader);
            let mut record = csv::StringRecord::new();
            let mut header_seen = false;
            loop {
                match rows.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => {
                        return bad(
                            checker.expected(),
                            format!("the export is not readable CSV: {e}"),
                        )
                    }
                }
                let fields: Vec<String> = record.iter().map(str::to_owned).collect();
                if !header_seen {
                    header_seen = true;
                    if fields != EXPORT_COLUMNS {
                        return bad(
                            checker.expected(),
                            format!("the CSV header must be {}", EXPORT_COLUMNS.join(",")),
                        );
                    }
                    continue;
                }
                let event = match parse_csv_record(&fields) {
                    Ok(e) => e,
                    Err(e) => return bad(checker.damaged(e.position), e.reason),
                };
                if let Err(report) = checker.feed(&event) {
                    return report;
                }
            }
            if !header_seen {
                return bad(1, "the CSV export is empty: it has no header row");
            }
        }
    }
    checker.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_store::chain::chain_hash;
    use serde_json::json;

    fn chain(n: u64) -> Vec<RecordedEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T09:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        (1..=n)
            .map(|p| {
                let mut e = RecordedEvent {
                    position: p,
                    stream: format!("rollout-{}", p % 3),
                    version: p.div_ceil(3),
                    id: Uuid::from_u128(p as u128),
                    event_type: "MetricsRecorded".into(),
                    schema_version: 1,
                    payload: json!({"value": 0.003 * p as f64, "note": "a \"quoted\", comma\nline"}),
                    metadata: json!({"team": "web", "actor": {"id": "alice", "roles": ["sre"]}}),
                    recorded_at: t0 + chrono::Duration::seconds(p as i64),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = chain_hash(&prev, &(&e).into());
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn export(format: ExportFormat, events: &[RecordedEvent]) -> Vec<u8> {
        let mut out = if format == ExportFormat::Csv {
            csv_header()
        } else {
            Vec::new()
        };
        write_events(format, events, &mut out);
        out
    }

    fn check(format: ExportFormat, bytes: &[u8], head: Option<&Head>) -> VerifyReport {
        verify_export(bytes, format, head)
    }

    fn bad_at(report: &VerifyReport) -> u64 {
        match report {
            VerifyReport::Bad {
                first_bad_position, ..
            } => *first_bad_position,
            ok => panic!("expected a failure, got {ok:?}"),
        }
    }

    #[test]
    fn both_formats_round_trip() {
        let events = chain(7);
        for format in [ExportFormat::Ndjson, ExportFormat::Csv] {
            let report = check(format, &export(format, &events), None);
            assert_eq!(
                report,
                VerifyReport::Ok {
                    ok: true,
                    verified_through: 7,
                    head_hash: events[6].hash.clone()
                },
                "{format:?}"
            );
        }
    }

    #[test]
    fn empty_exports() {
        assert!(check(ExportFormat::Ndjson, b"", None).is_ok());
        assert!(check(ExportFormat::Csv, &csv_header(), None).is_ok());
        assert_eq!(bad_at(&check(ExportFormat::Csv, b"", None)), 1);
        let head = Head {
            position: 1,
            hash: "ab".repeat(32),
        };
        assert_eq!(bad_at(&check(ExportFormat::Ndjson, b"", Some(&head))), 1);
    }

    /// Every single-byte change of every line is caught and names that line's position.
    #[test]
    fn every_changed_byte_names_its_position() {
        let events = chain(3);
        for format in [ExportFormat::Ndjson, ExportFormat::Csv] {
            let bytes = export(format, &events);
            let header_len = if format == ExportFormat::Csv {
                csv_header().len()
            } else {
                0
            };
            let mut line_start = header_len;
            for (i, line) in bytes[header_len..]
                .split_inclusive(|b| *b == b'\n')
                .enumerate()
            {
                let position = i as u64 + 1;
                // The last byte is the newline; changing it merges lines, covered below.
                for offset in 0..line.len() - 1 {
                    for replacement in [b'0', b'x', b' ', b'"'] {
                        let mut changed = bytes.clone();
                        if changed[line_start + offset] == replacement {
                            continue;
                        }
                        changed[line_start + offset] = replacement;
                        let report = check(format, &changed, None);
                        let at = bad_at(&report);
                        assert!(
                            at == position,
                            "{format:?}: byte {offset} of line {position} -> {:?}: {report:?}",
                            replacement as char
                        );
                    }
                }
                line_start += line.len();
            }
        }
    }

    #[test]
    fn a_changed_payload_digit_names_the_position() {
        let events = chain(5);
        let text = String::from_utf8(export(ExportFormat::Ndjson, &events)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let changed = lines[3].replacen("0.012", "0.013", 1);
        assert_ne!(changed, lines[3]);
        let mut tampered = lines.clone();
        tampered[3] = &changed;
        let report = check(ExportFormat::Ndjson, tampered.join("\n").as_bytes(), None);
        assert_eq!(bad_at(&report), 4, "{report:?}");
    }

    #[test]
    fn truncation_and_rewrite_against_an_exported_head() {
        let events = chain(6);
        let head = Head {
            position: 6,
            hash: events[5].hash.clone(),
        };
        let truncated = export(ExportFormat::Ndjson, &events[..4]);
        assert_eq!(
            bad_at(&check(ExportFormat::Ndjson, &truncated, Some(&head))),
            5
        );
        let full = export(ExportFormat::Ndjson, &events);
        assert!(check(ExportFormat::Ndjson, &full, Some(&head)).is_ok());
        let other = Head {
            position: 3,
            hash: "cd".repeat(32),
        };
        assert_eq!(bad_at(&check(ExportFormat::Ndjson, &full, Some(&other))), 3);
    }

    #[test]
    fn partial_exports_continue_from_their_head() {
        let events = chain(8);
        let tail = export(ExportFormat::Csv, &events[5..]);
        assert_eq!(bad_at(&check(ExportFormat::Csv, &tail, None)), 1);
        let anchor = Head {
            position: 5,
            hash: events[4].hash.clone(),
        };
        let report = check(ExportFormat::Csv, &tail, Some(&anchor));
        assert!(report.is_ok(), "{report:?}");
        let wrong = Head {
            position: 5,
            hash: "ef".repeat(32),
        };
        assert_eq!(bad_at(&check(ExportFormat::Csv, &tail, Some(&wrong))), 6);
    }

    #[test]
    fn missing_and_reordered_lines() {
        let events = chain(5);
        let text = String::from_utf8(export(ExportFormat::Ndjson, &events)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(2);
        let report = check(ExportFormat::Ndjson, lines.join("\n").as_bytes(), None);
        assert_eq!(bad_at(&report), 3, "{report:?}");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(1, 2);
        let report = check(ExportFormat::Ndjson, lines.join("\n").as_bytes(), None);
        assert_eq!(bad_at(&report), 2, "{report:?}");
    }
}
