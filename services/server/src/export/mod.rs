//! The audit export format and its offline verifier, with no HTTP in them: the server's
//! `/v1/audit/export` ([`crate::routes::audit`]) and the CLI's `rollgate audit export`
//! write the same bytes with [`write_events`], and [`verify::verify_export`] checks a file
//! without any database.
//!
//! An export holds every stored envelope field of each event, in position order: NDJSON
//! (one JSON object per line) or CSV (a header row, payload and metadata as JSON text).

use std::sync::Arc;

use futures::Stream;
use rollgate_store::chain::format_time;
use rollgate_store::{EventStore, Head, RecordedEvent, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod verify;

pub use verify::verify_export;

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

// ---------------------------------------------------------------------------------------
// Writing exports
// ---------------------------------------------------------------------------------------

/// One exported line, borrowed from a recorded event (members in [`EXPORT_COLUMNS`] order).
#[derive(Serialize)]
pub(crate) struct ExportLine<'a> {
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
pub(crate) fn csv_fields(e: &RecordedEvent) -> [String; 11] {
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
    /// The page after `after`, read while the previous page was being encoded.
    next: Option<Result<Vec<RecordedEvent>, StoreError>>,
}

/// The export as a stream of chunks (one per page of [`EXPORT_PAGE`] events): constant
/// memory whatever the size of the log.
pub fn export_stream(
    store: Arc<dyn EventStore>,
    format: ExportFormat,
    range: ExportRange,
) -> impl Stream<Item = Result<Vec<u8>, StoreError>> + 'static {
    let state = ExportState {
        store,
        format,
        after: range.from.saturating_sub(1),
        to: range.to,
        header_pending: format == ExportFormat::Csv,
        next: None,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if s.header_pending {
            s.header_pending = false;
            return Some((Ok(csv_header()), Some(s)));
        }
        if s.after >= s.to {
            return None;
        }
        let read = match s.next.take() {
            Some(read) => read,
            None => {
                let want = EXPORT_PAGE.min((s.to - s.after) as usize);
                s.store.read_all(s.after, want).await
            }
        };
        match read {
            Err(e) => Some((Err(e), None)),
            Ok(page) => {
                let page: Vec<RecordedEvent> = page
                    .into_iter()
                    .take_while(|e| e.position <= s.to)
                    .collect();
                let last = page.last()?.position;
                s.after = last;
                // Encoding this page (on a blocking thread) overlaps with reading and
                // decoding the next one here.
                let format = s.format;
                let encoding = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::with_capacity(page.len() * 512);
                    write_events(format, &page, &mut out);
                    out
                });
                let reading = async {
                    if s.after < s.to {
                        let want = EXPORT_PAGE.min((s.to - s.after) as usize);
                        s.store.read_all(s.after, want).await.map(Some)
                    } else {
                        Ok(None)
                    }
                };
                let (encoded, next) = tokio::join!(encoding, reading);
                let out = match encoded {
                    Ok(out) => out,
                    Err(e) => {
                        let e = StoreError::Database(format!("export encoding task: {e}"));
                        return Some((Err(e), None));
                    }
                };
                // A failed read of the next page is answered after this chunk, as before.
                s.next = next.transpose();
                Some((Ok(out), Some(s)))
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
