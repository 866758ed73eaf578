//! Offline verification of an export file: each line is parsed back into a
//! [`RecordedEvent`] and fed to the store's [`ChainVerifier`]. Lines are checked byte for
//! byte against the form the exporter writes, so a changed byte anywhere in a line is
//! reported with that line's position, even when it leaves the values equal.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use rollgate_store::chain::{format_time, GENESIS_HASH};
use rollgate_store::verify::ChainVerifier;
use rollgate_store::{Head, RecordedEvent, VerifyReport};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{csv_fields, ExportFormat, ExportLine, EXPORT_COLUMNS};

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
mod tests;
