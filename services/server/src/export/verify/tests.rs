//! The offline verifier against exports made by the exporter, and tampered copies.

use super::*;
use crate::export::{csv_header, write_events};
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
