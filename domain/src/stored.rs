//! How events become stored rows and back: type name, schema version, payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A stored event that cannot be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("{event_type}: unsupported schema version {schema_version}")]
    UnsupportedSchemaVersion {
        event_type: String,
        schema_version: u32,
    },
    #[error("{event_type}: invalid payload: {message}")]
    Payload { event_type: String, message: String },
}

/// The variant's fields of an enum serialized as `{"type": .., "payload": {..}}`.
pub(crate) fn payload_of<T: Serialize>(event: &T) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut m)) => m
            .remove("payload")
            .unwrap_or_else(|| Value::Object(Default::default())),
        _ => Value::Null,
    }
}

/// Reads a payload of the current schema version back into the enum.
pub(crate) fn decode<T: DeserializeOwned>(
    event_type: &str,
    payload: Value,
) -> Result<T, DecodeError> {
    let mut envelope = serde_json::Map::new();
    envelope.insert("type".to_owned(), Value::String(event_type.to_owned()));
    envelope.insert("payload".to_owned(), payload);
    serde_json::from_value(Value::Object(envelope)).map_err(|e| DecodeError::Payload {
        event_type: event_type.to_owned(),
        message: e.to_string(),
    })
}
