//! The tamper-evident hash chain.
//!
//! `hash(n) = SHA-256(prev_hash ‖ canonical(envelope(n)))`, where the envelope holds every
//! stored value of the event and `canonical` is RFC 8785 (JSON Canonicalization Scheme), so
//! the hash does not depend on how a database lays out whitespace or key order.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::RecordedEvent;

/// `prev_hash` of position 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The one textual form of recorded times: RFC 3339, UTC, microseconds.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The fields that the chain covers.
pub struct EnvelopeRef<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    pub id: &'a Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: &'a DateTime<Utc>,
}

impl<'a> From<&'a RecordedEvent> for EnvelopeRef<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        Self {
            position: e.position,
            stream: &e.stream,
            version: e.version,
            id: &e.id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at: &e.recorded_at,
        }
    }
}

/// RFC 8785 canonical bytes of an envelope, written member by member in the canonical key
/// order (no intermediate JSON tree; verification runs this for every stored event).
pub fn canonical_bytes(e: &EnvelopeRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(e, &mut out);
    out
}

fn write_canonical(e: &EnvelopeRef<'_>, out: &mut Vec<u8>) {
    fn value<T: serde::Serialize>(v: &T, out: &mut Vec<u8>) {
        serde_json_canonicalizer::to_writer(v, out).expect("a JSON value always canonicalizes");
    }
    // Members sorted by key, as RFC 8785 orders them (all keys are ASCII).
    out.extend_from_slice(b"{\"id\":");
    value(&e.id.to_string(), out);
    out.extend_from_slice(b",\"metadata\":");
    value(e.metadata, out);
    out.extend_from_slice(b",\"payload\":");
    value(e.payload, out);
    out.extend_from_slice(b",\"position\":");
    value(&e.position, out);
    out.extend_from_slice(b",\"recorded_at\":");
    value(&format_time(e.recorded_at), out);
    out.extend_from_slice(b",\"schema_version\":");
    value(&e.schema_version, out);
    out.extend_from_slice(b",\"stream\":");
    value(&e.stream, out);
    out.extend_from_slice(b",\"type\":");
    value(&e.event_type, out);
    out.extend_from_slice(b",\"version\":");
    value(&e.version, out);
    out.push(b'}');
}

/// The chain hash of an event given the previous hash (hex).
pub fn chain_hash(prev_hash: &str, e: &EnvelopeRef<'_>) -> String {
    let mut hasher = Sha256::new();
    match hex::decode(prev_hash) {
        Ok(bytes) => hasher.update(bytes),
        // A malformed stored prev_hash still hashes deterministically (and verification
        // will already have flagged it).
        Err(_) => hasher.update(prev_hash.as_bytes()),
    }
    hasher.update(canonical_bytes(e));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The reference: the whole envelope as one JSON value, canonicalized.
    fn reference(e: &EnvelopeRef<'_>) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(&json!({
            "position": e.position,
            "stream": e.stream,
            "version": e.version,
            "id": e.id.to_string(),
            "type": e.event_type,
            "schema_version": e.schema_version,
            "payload": e.payload,
            "metadata": e.metadata,
            "recorded_at": format_time(e.recorded_at),
        }))
        .unwrap()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn streaming_canonical_form_equals_the_reference(
            position in 1u64..1 << 52,
            version in 1u64..1 << 52,
            stream in ".{1,20}",
            event_type in "[A-Za-z]{1,20}",
            schema_version in 1u32..10,
            payload in json_value(),
            metadata in json_value(),
            micros in 0i64..4_000_000_000_000_000,
        ) {
            let id = Uuid::from_u128(position as u128 * 7919);
            let recorded_at = DateTime::from_timestamp_micros(micros).unwrap();
            let e = EnvelopeRef {
                position, stream: &stream, version, id: &id, event_type: &event_type,
                schema_version, payload: &payload, metadata: &metadata, recorded_at: &recorded_at,
            };
            prop_assert_eq!(canonical_bytes(&e), reference(&e));
        }
    }

    fn sample() -> RecordedEvent {
        RecordedEvent {
            position: 1,
            stream: "rollout-1".into(),
            version: 1,
            id: Uuid::nil(),
            event_type: "RolloutCreated".into(),
            schema_version: 1,
            payload: json!({"b": 1, "a": [1.5, "x"]}),
            metadata: json!({"actor": {"id": "alice"}}),
            recorded_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = sample();
        let mut b = sample();
        b.payload = serde_json::from_str(r#"{ "a" : [1.5,"x"],  "b":1 }"#).unwrap();
        assert_eq!(
            chain_hash(GENESIS_HASH, &(&a).into()),
            chain_hash(GENESIS_HASH, &(&b).into())
        );
    }

    #[test]
    fn every_field_is_covered() {
        let base = chain_hash(GENESIS_HASH, &(&sample()).into());
        type Mutation = Box<dyn Fn(&mut RecordedEvent)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|e| e.position = 2),
            Box::new(|e| e.stream = "rollout-2".into()),
            Box::new(|e| e.version = 2),
            Box::new(|e| e.id = Uuid::from_u128(1)),
            Box::new(|e| e.event_type = "Other".into()),
            Box::new(|e| e.schema_version = 2),
            Box::new(|e| e.payload = json!({"b": 2, "a": [1.5, "x"]})),
            Box::new(|e| e.metadata = json!({"actor": {"id": "bob"}})),
            Box::new(|e| e.recorded_at += chrono::Duration::microseconds(1)),
        ];
        for m in mutations {
            let mut e = sample();
            m(&mut e);
            assert_ne!(base, chain_hash(GENESIS_HASH, &(&e).into()));
        }
        assert_ne!(base, chain_hash(&"11".repeat(32), &(&sample()).into()));
    }
}
