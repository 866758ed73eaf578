//! The development key pair and token minting (`rollgate token`).
//!
//! In development rollgate signs and verifies with an Ed25519 key pair kept in one
//! directory (`.rollgate/` under the working directory by convention). The pair is created
//! on first use; the private key file is readable by its owner only. Keys are never written
//! anywhere but that directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde_json::{Map, Value};

use crate::AuthError;

/// File name of the development private key (PKCS#8 v1 PEM as in RFC 8410, mode 0600).
pub const DEV_PRIVATE_KEY_FILE: &str = "dev-ed25519.pem";
/// File name of the development public key (SubjectPublicKeyInfo PEM).
pub const DEV_PUBLIC_KEY_FILE: &str = "dev-ed25519.pub.pem";

/// Claims that minting sets itself and that a roles or teams claim name must not replace.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The development Ed25519 key pair.
#[derive(Clone)]
pub struct DevKeys {
    dir: PathBuf,
    signing_key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for DevKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKeys")
            .field("dir", &self.dir)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a minted development token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// The subject (actor id).
    pub sub: String,
    /// Roles, written as a JSON array.
    pub roles: Vec<String>,
    /// Teams, written as a JSON array (`*` = all teams).
    pub teams: Vec<String>,
    /// Lifetime in seconds (see [`parse_ttl`]); must be positive.
    pub ttl_seconds: u64,
    /// Issue time, unix seconds: `iat` and `nbf` are `now`, `exp` is `now + ttl_seconds`.
    pub now: i64,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

impl DevKeys {
    /// Loads the key pair from `dir`, creating the directory (mode 0700) and the pair
    /// (private key mode 0600) when they do not exist. The public key file is rewritten
    /// if it is missing or does not match the private key. A private key file readable by
    /// anyone but its owner is refused. Logs one warning that development keys are in use.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<DevKeys, AuthError> {
        let dir = dir.as_ref();
        ensure_private_dir(dir)?;
        let private_path = dir.join(DEV_PRIVATE_KEY_FILE);
        let (signing_key, created) = match read_private_key(&private_path)? {
            Some(key) => (key, false),
            None => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                if write_private_key(dir, &private_path, &key)? {
                    (key, true)
                } else {
                    // Another process created it first: use theirs.
                    let key = read_private_key(&private_path)?.ok_or_else(|| {
                        AuthError::key_file(&private_path, "disappeared while being created")
                    })?;
                    (key, false)
                }
            }
        };
        sync_public_key(dir, &signing_key.verifying_key())?;
        let kid = public_jwk(&signing_key.verifying_key(), None).thumbprint(ThumbprintHash::SHA256);
        tracing::warn!(
            dir = %dir.display(),
            kid = %kid,
            created,
            "development signing keys are in use: tokens are signed by a local key pair; \
             configure a PEM or JWKS key source in production"
        );
        Ok(DevKeys {
            dir: dir.to_path_buf(),
            signing_key,
            kid,
        })
    }

    /// The key id written into minted tokens: the RFC 7638 SHA-256 thumbprint of the
    /// public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The directory holding the pair.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The public key as a JWK (with `kid`, `alg` and `use`), e.g. to publish a JWKS.
    pub fn public_jwk(&self) -> Jwk {
        public_jwk(&self.verifying_key(), Some(self.kid.clone()))
    }

    /// Signs arbitrary claims with the development key (EdDSA), with this key's `kid` in
    /// the header or the given one. Nothing is checked: this is for tests and tools that
    /// need a token saying exactly what they want, including things a verifier refuses.
    pub fn sign_claims(&self, kid: Option<&str>, claims: &Value) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.unwrap_or(&self.kid).to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()?)
            .map_err(|_| AuthError::Config("the token could not be signed".to_owned()))
    }

    fn encoding_key(&self) -> Result<EncodingKey, AuthError> {
        let der = self
            .signing_key
            .to_pkcs8_der()
            .map_err(|_| AuthError::Config("the development key cannot be encoded".to_owned()))?;
        Ok(EncodingKey::from_ed_der(der.as_bytes()))
    }

    /// Mints an EdDSA JWT with `kid`, `iss`, `aud`, `sub`, `iat`, `nbf`, `exp`, and the
    /// roles and teams under the default claim names `roles` and `teams`.
    pub fn mint(&self, request: MintRequest) -> Result<String, AuthError> {
        self.mint_with_claim_names(request, "roles", "teams")
    }

    /// Like [`DevKeys::mint`], with the roles and teams written under the given claim
    /// names (use the verifier's `roles_claim` and `teams_claim`).
    pub fn mint_with_claim_names(
        &self,
        request: MintRequest,
        roles_claim: &str,
        teams_claim: &str,
    ) -> Result<String, AuthError> {
        for (what, value) in [
            ("sub", &request.sub),
            ("issuer", &request.issuer),
            ("audience", &request.audience),
        ] {
            if value.trim().is_empty() {
                return Err(AuthError::Config(format!(
                    "cannot mint a token with an empty {what}"
                )));
            }
        }
        for claim in [roles_claim, teams_claim] {
            if claim.is_empty() || REGISTERED_CLAIMS.contains(&claim) {
                return Err(AuthError::Config(format!(
                    "`{claim}` cannot be used as the roles or teams claim"
                )));
            }
        }
        if roles_claim == teams_claim {
            return Err(AuthError::Config(
                "the roles and teams claims must have different names".to_owned(),
            ));
        }
        if request.ttl_seconds == 0 {
            return Err(AuthError::Config(
                "the token lifetime must be positive".to_owned(),
            ));
        }
        let exp = i64::try_from(request.ttl_seconds)
            .ok()
            .and_then(|ttl| request.now.checked_add(ttl))
            .ok_or_else(|| AuthError::Config("the token lifetime is too long".to_owned()))?;

        let mut claims = Map::new();
        claims.insert("iss".to_owned(), Value::from(request.issuer));
        claims.insert("sub".to_owned(), Value::from(request.sub));
        claims.insert("aud".to_owned(), Value::from(request.audience));
        claims.insert("iat".to_owned(), Value::from(request.now));
        claims.insert("nbf".to_owned(), Value::from(request.now));
        claims.insert("exp".to_owned(), Value::from(exp));
        claims.insert(roles_claim.to_owned(), Value::from(request.roles));
        claims.insert(teams_claim.to_owned(), Value::from(request.teams));

        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding_key()?)
            .map_err(|_| AuthError::Config("the token could not be signed".to_owned()))
    }
}

/// Reads a lifetime such as `90s`, `15m`, `1h` or `2d` (a bare number is seconds) into
/// seconds. Zero and overflowing values are refused.
pub fn parse_ttl(text: &str) -> Result<u64, AuthError> {
    let invalid = || AuthError::InvalidTtl(text.to_owned());
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((index, c)) if c.is_ascii_alphabetic() => (&trimmed[..index], c),
        Some(_) => (trimmed, 's'),
        None => return Err(invalid()),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(invalid()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let seconds = digits
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(multiplier))
        .filter(|&seconds| seconds > 0 && i64::try_from(seconds).is_ok())
        .ok_or_else(invalid)?;
    Ok(seconds)
}

fn public_jwk(key: &VerifyingKey, kid: Option<String>) -> Jwk {
    let with_metadata = kid.is_some();
    Jwk {
        common: CommonParameters {
            public_key_use: with_metadata.then_some(PublicKeyUse::Signature),
            key_algorithm: with_metadata.then_some(KeyAlgorithm::EdDSA),
            key_id: kid,
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key.as_bytes(),
            ),
        }),
    }
}

fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => return Err(AuthError::key_file(dir, "exists but is not a directory")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(AuthError::key_file(dir, format!("cannot be read: {err}"))),
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|err| AuthError::key_file(dir, format!("cannot be created: {err}")))
}

/// Reads the private key; `None` when the file does not exist.
fn read_private_key(path: &Path) -> Result<Option<SigningKey>, AuthError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(AuthError::key_file(path, format!("cannot be read: {err}"))),
    };
    if !metadata.is_file() {
        return Err(AuthError::key_file(path, "is not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::key_file(
                path,
                format!("has permissions {mode:04o}; a private key must be readable by its owner only (chmod 600)"),
            ));
        }
    }
    let text = fs::read_to_string(path)
        .map_err(|err| AuthError::key_file(path, format!("cannot be read: {err}")))?;
    let key = SigningKey::from_pkcs8_pem(&text)
        .map_err(|_| AuthError::key_file(path, "is not a PKCS#8 Ed25519 private key"))?;
    Ok(Some(key))
}

/// The private key as PEM in the PKCS#8 v1 form of RFC 8410 §7 (`OneAsymmetricKey` version
/// 0, no public key attached), which every common tool reads; OpenSSL 3.0 refuses the v2
/// form with the public key that `ed25519-dalek` writes by default. Reading accepts both.
pub(crate) fn private_key_pem(key: &SigningKey) -> Option<String> {
    let bytes = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .ok()
        .map(|pem| pem.as_str().to_owned())
}

/// Writes the private key without ever replacing an existing file: the key goes to a
/// temporary file (mode 0600) in the same directory, which is then hard-linked into place.
/// Returns false when another process created the file first.
fn write_private_key(dir: &Path, path: &Path, key: &SigningKey) -> Result<bool, AuthError> {
    let pem = private_key_pem(key).ok_or_else(|| AuthError::key_file(path, "cannot be encoded"))?;
    let temp = temporary_path(dir, DEV_PRIVATE_KEY_FILE);
    let write_error =
        |err: std::io::Error| AuthError::key_file(path, format!("cannot be written: {err}"));
    let result = write_new_file(&temp, pem.as_bytes(), 0o600)
        .map_err(write_error)
        .and_then(|()| match fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(write_error(err)),
        });
    let _ = fs::remove_file(&temp);
    result
}

/// Makes the public key file match the private key, replacing it atomically if needed.
fn sync_public_key(dir: &Path, key: &VerifyingKey) -> Result<(), AuthError> {
    let path = dir.join(DEV_PUBLIC_KEY_FILE);
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| AuthError::key_file(&path, "cannot be encoded"))?;
    if fs::read_to_string(&path).is_ok_and(|existing| existing == pem) {
        return Ok(());
    }
    let temp = temporary_path(dir, DEV_PUBLIC_KEY_FILE);
    let result =
        write_new_file(&temp, pem.as_bytes(), 0o644).and_then(|()| fs::rename(&temp, &path));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|err| AuthError::key_file(&path, format!("cannot be written: {err}")))
}

fn temporary_path(dir: &Path, name: &str) -> PathBuf {
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(".{name}.{suffix}.tmp"))
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3_600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert_eq!(parse_ttl(" 5m "), Ok(300));
    }

    #[test]
    fn ttl_refusals() {
        for text in [
            "",
            "s",
            "0s",
            "-5m",
            "1.5h",
            "10w",
            "1 h",
            "h1",
            "99999999999999999999s",
            "9223372036854775807d",
        ] {
            assert!(
                matches!(parse_ttl(text), Err(AuthError::InvalidTtl(_))),
                "{text:?} should be refused"
            );
        }
    }
}
