//! Signing secrets: generated here (`whsec_` + base64 of 32 random bytes, shown once), kept
//! in the log only sealed with AES-256-GCM under a key from configuration.
//!
//! The key file holds 32 bytes: raw, 64 hex digits or base64 (surrounding whitespace is
//! ignored). The sealed form names the key by a fingerprint (`key_id`), and the additional
//! authenticated data binds a sealed secret to its webhook, so a sealed secret copied into
//! another webhook's stream does not open.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use rollgate_domain::webhook::SealedSecret;
use sha2::{Digest, Sha256};

/// The cipher named in sealed secrets.
pub const ALG: &str = "A256GCM";

/// Prefix of Standard Webhooks symmetric secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a generated signing secret (the specification allows 24 to 64).
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secrets key: {0}")]
    Key(String),
    #[error("sealed secret cannot be opened: {0}")]
    Open(String),
    #[error("not a whsec_ secret: {0}")]
    Format(String),
}

/// The key that seals signing secrets.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: Aes256Gcm,
    key_id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::Key(format!(
                "needs 32 bytes, got {}",
                bytes.len()
            )));
        }
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|e| SecretError::Key(e.to_string()))?;
        let digest = Sha256::digest(bytes);
        Ok(Self {
            cipher,
            key_id: hex::encode(&digest[..8]),
        })
    }

    /// A key from text or bytes as found in a key file or variable: 64 hex digits, base64 of
    /// 32 bytes, or 32 raw bytes.
    pub fn parse(content: &[u8]) -> Result<Self, SecretError> {
        if let Ok(text) = std::str::from_utf8(content) {
            let t = text.trim();
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                let bytes = hex::decode(t).map_err(|e| SecretError::Key(e.to_string()))?;
                return Self::from_bytes(&bytes);
            }
            if let Ok(bytes) = B64.decode(t) {
                if bytes.len() == 32 {
                    return Self::from_bytes(&bytes);
                }
            }
        }
        if content.len() == 32 {
            return Self::from_bytes(content);
        }
        Err(SecretError::Key(
            "expected 32 bytes: raw, 64 hex digits or base64".to_owned(),
        ))
    }

    /// Reads the key file named by `--secrets-key-file`.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let content = std::fs::read(path)
            .map_err(|e| SecretError::Key(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&content)
    }

    /// A fresh random key (development and tests).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(&bytes).expect("32 bytes")
    }

    /// The fingerprint recorded beside sealed secrets.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `secret` (the text shown to the user), bound to `context` (the webhook's stream).
    pub fn seal(&self, secret: &str, context: &str) -> SealedSecret {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message");
        SealedSecret {
            alg: ALG.to_owned(),
            key_id: self.key_id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        }
    }

    /// Opens a sealed secret; answers the secret text.
    pub fn open(&self, sealed: &SealedSecret, context: &str) -> Result<String, SecretError> {
        if sealed.alg != ALG {
            return Err(SecretError::Open(format!(
                "unknown cipher {:?}",
                sealed.alg
            )));
        }
        if sealed.key_id != self.key_id {
            return Err(SecretError::Open(format!(
                "sealed under key {}, configured key is {}",
                sealed.key_id, self.key_id
            )));
        }
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|e| SecretError::Open(e.to_string()))?;
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| SecretError::Open("bad nonce".to_owned()))?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|e| SecretError::Open(e.to_string()))?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open("authentication failed".to_owned()))?;
        String::from_utf8(plain).map_err(|e| SecretError::Open(e.to_string()))
    }
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_signing_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The HMAC key of a `whsec_` secret: the base64-decoded bytes after the prefix.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| SecretError::Format("missing whsec_ prefix".to_owned()))?;
    let bytes = B64
        .decode(encoded)
        .map_err(|e| SecretError::Format(e.to_string()))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(SecretError::Format(format!(
            "{} bytes; Standard Webhooks asks for 24 to 64",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_standard_shape() {
        let a = generate_signing_secret();
        let b = generate_signing_secret();
        assert!(a.starts_with("whsec_"));
        assert_ne!(a, b);
        assert_eq!(signing_key(&a).unwrap().len(), 32);
        assert!(signing_key("abc").is_err());
        assert!(signing_key("whsec_AAAA").is_err());
    }

    #[test]
    fn sealing_round_trips_and_binds_key_and_context() {
        let key = SecretsKey::generate();
        let secret = generate_signing_secret();
        let sealed = key.seal(&secret, "webhook-1");
        assert!(!sealed.ciphertext.contains(&secret[6..]));
        assert_eq!(key.open(&sealed, "webhook-1").unwrap(), secret);
        assert!(key.open(&sealed, "webhook-2").is_err());
        let other = SecretsKey::generate();
        assert!(other.open(&sealed, "webhook-1").is_err());
        let mut tampered = sealed.clone();
        tampered.key_id = other.key_id().to_owned();
        assert!(other.open(&tampered, "webhook-1").is_err());
    }

    #[test]
    fn key_files_accept_hex_base64_and_raw() {
        let raw = [7u8; 32];
        let a = SecretsKey::parse(&raw).unwrap();
        let b = SecretsKey::parse(format!("{}\n", hex::encode(raw)).as_bytes()).unwrap();
        let c = SecretsKey::parse(B64.encode(raw).as_bytes()).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.key_id(), c.key_id());
        assert!(SecretsKey::parse(b"too short").is_err());
    }
}
