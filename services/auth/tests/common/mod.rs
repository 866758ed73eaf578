//! Helpers shared by the integration tests: key files, token signing, temporary
//! directories and a tracing subscriber that counts warnings.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde_json::{json, Value};

/// A fixed "current time" for the tests (unix seconds).
pub const NOW: i64 = 1_750_000_000;

pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

pub fn key_bytes(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).expect("test key file")
}

pub fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_bytes("rsa-private.pem")).unwrap()
}

pub fn rsa2_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_bytes("rsa2-private.pem")).unwrap()
}

pub fn ec_signer() -> EncodingKey {
    EncodingKey::from_ec_pem(&key_bytes("ec-private.pem")).unwrap()
}

pub fn ed_signer() -> EncodingKey {
    EncodingKey::from_ed_pem(&key_bytes("ed25519-private.pem")).unwrap()
}

/// Valid claims for the default configuration at `NOW`.
pub fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "rollgate",
        "aud": "rollgate",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "roles": ["approver", "sre"],
        "teams": ["web"],
    })
}

/// `claims()` with some fields replaced (a `null` value removes the field).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let object = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing a test token")
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand from a header, claims and a raw signature segment.
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

/// A directory under the system temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("rollgate-auth-test-{name}"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts the WARN events emitted while it is the current subscriber.
pub struct WarnCounter(pub Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` and returns its result with the number of warnings it logged.
pub fn count_warnings<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let count = Arc::new(AtomicUsize::new(0));
    let result = tracing::subscriber::with_default(WarnCounter(count.clone()), f);
    (result, count.load(Ordering::SeqCst))
}
