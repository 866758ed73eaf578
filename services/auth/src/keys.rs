//! Turning key files into verification keys, each bound to exactly one algorithm.
//!
//! The algorithm of a key is decided here, from the key itself (and a JWK's `alg`), never
//! from a token: that is what makes algorithm confusion impossible later on.

use std::collections::HashSet;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::{AuthError, DevKeys};

/// Key files larger than this are refused before parsing.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// Smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub(crate) const MIN_HS256_SECRET_BYTES: usize = 32;

/// One verification key and the single algorithm it may be used with.
#[derive(Clone)]
pub(crate) struct KeyEntry {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The configured keys.
#[derive(Clone)]
pub(crate) struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Picks the key for a token's `kid`.
    ///
    /// A single key is used for a token without `kid`, and for any `kid` when the key
    /// itself has none (a PEM file or a secret). With several keys, the `kid` must match.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&KeyEntry, AuthError> {
        match (self.entries.as_slice(), kid) {
            ([only], None) => Ok(only),
            ([only], Some(kid)) => match only.kid.as_deref() {
                None => Ok(only),
                Some(own) if own == kid => Ok(only),
                Some(_) => Err(AuthError::UnknownKid),
            },
            (_, None) => Err(AuthError::MissingKid),
            (entries, Some(kid)) => entries
                .iter()
                .find(|entry| entry.kid.as_deref() == Some(kid))
                .ok_or(AuthError::UnknownKid),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn from_pem_file(path: &Path) -> Result<Self, AuthError> {
        let bytes = read_key_file(path)?;
        let entry = pem_public_key(&bytes).map_err(|reason| AuthError::key_file(path, reason))?;
        Ok(KeySet {
            entries: vec![entry],
        })
    }

    pub(crate) fn from_jwks_file(path: &Path, allow_hs256: bool) -> Result<Self, AuthError> {
        let bytes = read_key_file(path)?;
        let entries = jwks_entries(&bytes, allow_hs256, Strictness::Strict)
            .map_err(|reason| AuthError::key_file(path, reason))?;
        Ok(KeySet { entries })
    }

    /// The keys of an OpenID Connect provider's JWKS: only RS256, ES256 and EdDSA keys are
    /// kept; keys this service cannot use (other algorithms, curves or sizes, shared
    /// secrets) are skipped with a log line rather than failing the whole set.
    pub(crate) fn from_oidc_jwks(bytes: &[u8]) -> Result<Self, String> {
        let mut entries = jwks_entries(bytes, false, Strictness::SkipUnusable)?;
        entries.retain(|entry| {
            let keep = matches!(
                entry.alg,
                Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
            );
            if !keep {
                tracing::debug!(kid = ?entry.kid, alg = ?entry.alg, "OpenID Connect key with an algorithm other than RS256, ES256 or EdDSA; ignored");
            }
            keep
        });
        if entries.is_empty() {
            return Err("holds no RS256, ES256 or EdDSA signature key".to_owned());
        }
        Ok(KeySet { entries })
    }

    /// The key ids in the set, for logs.
    pub(crate) fn kids(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|entry| entry.kid.clone().unwrap_or_else(|| "(none)".to_owned()))
            .collect()
    }

    pub(crate) fn from_hs256_secret(secret: &[u8], allow_hs256: bool) -> Result<Self, AuthError> {
        if !allow_hs256 {
            return Err(AuthError::Config(
                "an HS256 secret is configured but `allow_hs256` is off; HS256 is for development only"
                    .to_owned(),
            ));
        }
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(AuthError::Config(format!(
                "the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes long"
            )));
        }
        Ok(KeySet {
            entries: vec![KeyEntry {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }],
        })
    }

    pub(crate) fn from_dev_keys(keys: &DevKeys) -> Self {
        KeySet {
            entries: vec![KeyEntry {
                kid: Some(keys.kid().to_owned()),
                alg: Algorithm::EdDSA,
                key: DecodingKey::from_ed_der(keys.verifying_key().as_bytes()),
            }],
        }
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    let metadata = std::fs::metadata(path)
        .map_err(|err| AuthError::key_file(path, format!("cannot be read: {err}")))?;
    if !metadata.is_file() {
        return Err(AuthError::key_file(path, "is not a regular file"));
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(AuthError::key_file(path, "is too large to be a key file"));
    }
    std::fs::read(path).map_err(|err| AuthError::key_file(path, format!("cannot be read: {err}")))
}

// ---------------------------------------------------------------------------------------
// PEM

/// Reads the first PEM block of `input`: its label and its decoded bytes. Text before the
/// block (such as OpenSSL's "Bag Attributes") and later blocks (a certificate chain) are
/// ignored.
pub(crate) fn first_pem_block(input: &[u8]) -> Result<(String, Vec<u8>), String> {
    let text = std::str::from_utf8(input).map_err(|_| "is not a PEM text file".to_owned())?;
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|line| {
            line.strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.strip_suffix("-----"))
        })
        .ok_or_else(|| "holds no PEM block (no `-----BEGIN ...-----` line)".to_owned())?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut closed = false;
    for line in lines {
        if line == end {
            closed = true;
            break;
        }
        if line.contains(':') {
            // RFC 1421 encapsulated header (e.g. legacy encrypted keys): not key data.
            continue;
        }
        body.push_str(line);
    }
    if !closed {
        return Err(format!("the PEM block `{label}` has no END line"));
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| format!("the PEM block `{label}` is not valid base64"))?;
    Ok((label, der))
}

fn pem_public_key(input: &[u8]) -> Result<KeyEntry, String> {
    let (label, der) = first_pem_block(input)?;
    let entry = match label.as_str() {
        "PUBLIC KEY" => spki_key(&der)?,
        "RSA PUBLIC KEY" => rsa_pkcs1_key(&der)?,
        "CERTIFICATE" => spki_key(certificate_spki(&der)?)?,
        "PRIVATE KEY"
        | "RSA PRIVATE KEY"
        | "EC PRIVATE KEY"
        | "ENCRYPTED PRIVATE KEY"
        | "OPENSSH PRIVATE KEY" => {
            return Err(
                "holds a private key; configure the public key or a certificate instead".to_owned(),
            )
        }
        other => return Err(format!("holds an unsupported PEM block `{other}`")),
    };
    Ok(entry)
}

// ---------------------------------------------------------------------------------------
// A minimal DER reader: enough to find a SubjectPublicKeyInfo and read its parts.

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_CONTEXT_0: u8 = 0xA0;

const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];

/// One DER element: its tag, its content, and the whole encoding (header included).
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and what follows.
fn read_element(input: &[u8]) -> Result<(Element<'_>, &[u8]), String> {
    let malformed = || "holds malformed DER data".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(malformed)?;
    if tag & 0x1F == 0x1F {
        return Err(malformed());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed());
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte))
    };
    if rest.len() < len {
        return Err(malformed());
    }
    let (content, after) = rest.split_at(len);
    let header_len = input.len() - rest.len();
    let element = Element {
        tag,
        content,
        whole: &input[..header_len + len],
    };
    Ok((element, after))
}

fn expect_element(input: &[u8], tag: u8) -> Result<(Element<'_>, &[u8]), String> {
    let (element, rest) = read_element(input)?;
    if element.tag != tag {
        return Err("holds DER data of an unexpected shape".to_owned());
    }
    Ok((element, rest))
}

/// The SubjectPublicKeyInfo inside an X.509 certificate.
fn certificate_spki(der: &[u8]) -> Result<&[u8], String> {
    let (certificate, _) = expect_element(der, TAG_SEQUENCE)?;
    let (tbs, _) = expect_element(certificate.content, TAG_SEQUENCE)?;
    let mut rest = tbs.content;
    let (first, after_first) = read_element(rest)?;
    if first.tag == TAG_CONTEXT_0 {
        rest = after_first; // explicit version
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        let (_, after) = read_element(rest)?;
        rest = after;
    }
    let (spki, _) = expect_element(rest, TAG_SEQUENCE)?;
    Ok(spki.whole)
}

fn bit_string_bytes<'a>(element: &Element<'a>) -> Result<&'a [u8], String> {
    match element.content.split_first() {
        Some((0, bytes)) => Ok(bytes),
        _ => Err("holds a malformed public key bit string".to_owned()),
    }
}

/// A SubjectPublicKeyInfo: the key type decides the algorithm.
fn spki_key(der: &[u8]) -> Result<KeyEntry, String> {
    let (spki, _) = expect_element(der, TAG_SEQUENCE)?;
    let (algorithm, rest) = expect_element(spki.content, TAG_SEQUENCE)?;
    let (bits, _) = expect_element(rest, TAG_BIT_STRING)?;
    let key_bytes = bit_string_bytes(&bits)?;
    let (oid, params) = expect_element(algorithm.content, TAG_OID)?;
    match oid.content {
        OID_RSA_ENCRYPTION => rsa_pkcs1_key(key_bytes),
        OID_EC_PUBLIC_KEY => {
            let (curve, _) = expect_element(params, TAG_OID)
                .map_err(|_| "holds an EC key without a named curve".to_owned())?;
            let alg = match curve.content {
                OID_P256 => Algorithm::ES256,
                OID_P384 => Algorithm::ES384,
                _ => return Err("holds an EC key on an unsupported curve (use P-256)".to_owned()),
            };
            checked_entry(None, alg, DecodingKey::from_ec_der(key_bytes))
        }
        OID_ED25519 => ed25519_entry(None, key_bytes),
        _ => Err("holds an unsupported key type (use RSA, EC P-256 or Ed25519)".to_owned()),
    }
}

/// A PKCS#1 RSAPublicKey: `SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_pkcs1_key(der: &[u8]) -> Result<KeyEntry, String> {
    let (sequence, _) = expect_element(der, TAG_SEQUENCE)?;
    let (modulus, rest) = expect_element(sequence.content, TAG_INTEGER)?;
    let (exponent, _) = expect_element(rest, TAG_INTEGER)?;
    rsa_entry(None, Algorithm::RS256, modulus.content, exponent.content)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
    }
}

fn rsa_entry(
    kid: Option<String>,
    alg: Algorithm,
    modulus: &[u8],
    exponent: &[u8],
) -> Result<KeyEntry, String> {
    let modulus = strip_leading_zeros(modulus);
    let exponent = strip_leading_zeros(exponent);
    let bits = bit_length(modulus);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "holds an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    let odd = exponent.last().is_some_and(|b| b & 1 == 1);
    if !odd || bit_length(exponent) < 2 || exponent.len() > 8 {
        return Err("holds an RSA key with an invalid public exponent".to_owned());
    }
    Ok(KeyEntry {
        kid,
        alg,
        key: DecodingKey::from_rsa_raw_components(modulus, exponent),
    })
}

fn ed25519_entry(kid: Option<String>, key_bytes: &[u8]) -> Result<KeyEntry, String> {
    if key_bytes.len() != 32 {
        return Err("holds an Ed25519 key of the wrong length".to_owned());
    }
    checked_entry(kid, Algorithm::EdDSA, DecodingKey::from_ed_der(key_bytes))
}

/// Builds the entry after making sure the crypto backend accepts the key, so that a bad key
/// is a start-up error rather than a refused token later.
fn checked_entry(
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
) -> Result<KeyEntry, String> {
    // Verifying a dummy signature builds the backend's key object: an unusable key is an
    // `Err`, a usable one merely fails to verify (`Ok(false)`).
    jsonwebtoken::crypto::verify("AAAA", b"probe", &key, alg)
        .map_err(|_| format!("holds a key that is not a valid {alg:?} public key"))?;
    Ok(KeyEntry { kid, alg, key })
}

// ---------------------------------------------------------------------------------------
// JWKS

/// What to do with a key of a JWKS that cannot be used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Refuse the whole set (a file the operator wrote: a mistake should stop start-up).
    Strict,
    /// Skip the key with a log line (a provider's published set, which may hold keys for
    /// other consumers).
    SkipUnusable,
}

fn jwks_entries(
    input: &[u8],
    allow_hs256: bool,
    strictness: Strictness,
) -> Result<Vec<KeyEntry>, String> {
    let document: serde_json::Value =
        serde_json::from_slice(input).map_err(|_| "is not valid JSON".to_owned())?;
    let keys = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "is not a JWK set (no `keys` array)".to_owned())?;

    let mut entries: Vec<KeyEntry> = Vec::new();
    let mut kids = HashSet::new();
    for (index, raw) in keys.iter().enumerate() {
        let name = match raw.get("kid").and_then(serde_json::Value::as_str) {
            Some(kid) => format!("key `{kid}`"),
            None => format!("key #{index}"),
        };
        if !is_signature_key(raw) {
            tracing::debug!(key = %name, "JWKS key is not a signature key; ignored");
            continue;
        }
        let parsed = serde_json::from_value::<Jwk>(raw.clone())
            .map_err(|_| format!("{name} is not a valid or supported JWK"))
            .and_then(|jwk| {
                jwk_entry(&jwk, allow_hs256).map_err(|reason| format!("{name} {reason}"))
            });
        let parsed = match (parsed, strictness) {
            (Ok(parsed), _) => parsed,
            (Err(reason), Strictness::Strict) => return Err(reason),
            (Err(reason), Strictness::SkipUnusable) => {
                tracing::info!(%reason, "JWKS key cannot be used; ignored");
                continue;
            }
        };
        let Some(entry) = parsed else {
            tracing::warn!(key = %name, "JWKS key declares an algorithm that is not used for signatures here; ignored");
            continue;
        };
        if let Some(kid) = &entry.kid {
            if !kids.insert(kid.clone()) {
                return Err(format!("has two keys with the kid `{kid}`"));
            }
        }
        entries.push(entry);
    }
    if entries.len() > 1 && entries.iter().any(|entry| entry.kid.is_none()) {
        tracing::warn!(
            "JWKS keys without a kid in a set of several keys can never be selected; ignored"
        );
        entries.retain(|entry| entry.kid.is_some());
    }
    if entries.is_empty() {
        return Err("holds no usable signature key".to_owned());
    }
    Ok(entries)
}

/// False for keys meant for encryption (`"use":"enc"`, or `key_ops` without `verify`).
fn is_signature_key(raw: &serde_json::Value) -> bool {
    if let Some(usage) = raw.get("use").and_then(serde_json::Value::as_str) {
        if usage != "sig" {
            return false;
        }
    }
    if let Some(ops) = raw.get("key_ops").and_then(serde_json::Value::as_array) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return false;
        }
    }
    true
}

fn declared_algorithm(jwk: &Jwk) -> Result<Option<Algorithm>, ()> {
    let Some(declared) = jwk.common.key_algorithm else {
        return Ok(None);
    };
    Ok(Some(match declared {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return Err(()),
    }))
}

/// The entry for one JWK, `None` when it declares a non-signature algorithm.
fn jwk_entry(jwk: &Jwk, allow_hs256: bool) -> Result<Option<KeyEntry>, String> {
    let Ok(declared) = declared_algorithm(jwk) else {
        return Ok(None);
    };
    let kid = jwk.common.key_id.clone();
    let mismatch =
        |alg: Algorithm| format!("declares `alg` {alg:?}, which does not fit its key type");
    let entry = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let alg = declared.unwrap_or(Algorithm::RS256);
            if !matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) {
                return Err(mismatch(alg));
            }
            let n = URL_SAFE_NO_PAD
                .decode(params.n.as_bytes())
                .map_err(|_| "has an `n` that is not base64url".to_owned())?;
            let e = URL_SAFE_NO_PAD
                .decode(params.e.as_bytes())
                .map_err(|_| "has an `e` that is not base64url".to_owned())?;
            rsa_entry(kid, alg, &n, &e)?
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let alg = match params.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err("uses an unsupported curve (use P-256)".to_owned()),
            };
            if let Some(declared) = declared.filter(|&declared| declared != alg) {
                return Err(mismatch(declared));
            }
            let key = DecodingKey::from_ec_components(&params.x, &params.y)
                .map_err(|_| "has coordinates that are not base64url".to_owned())?;
            checked_entry(kid, alg, key)?
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Err("uses an unsupported curve (use Ed25519)".to_owned());
            }
            if let Some(declared) = declared.filter(|&alg| alg != Algorithm::EdDSA) {
                return Err(mismatch(declared));
            }
            let x = URL_SAFE_NO_PAD
                .decode(params.x.as_bytes())
                .map_err(|_| "has an `x` that is not base64url".to_owned())?;
            ed25519_entry(kid, &x)?
        }
        AlgorithmParameters::OctetKey(params) => {
            if !allow_hs256 {
                return Err(
                    "is a shared secret (`oct`), which is refused unless `allow_hs256` is on"
                        .to_owned(),
                );
            }
            if let Some(declared) = declared.filter(|&alg| alg != Algorithm::HS256) {
                return Err(mismatch(declared));
            }
            let secret = URL_SAFE_NO_PAD
                .decode(params.value.as_bytes())
                .map_err(|_| "has a `k` that is not base64url".to_owned())?;
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(format!(
                    "is a shared secret shorter than {MIN_HS256_SECRET_BYTES} bytes"
                ));
            }
            KeyEntry {
                kid,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(&secret),
            }
        }
    };
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_in_long_form_are_read() {
        let mut der = vec![TAG_SEQUENCE, 0x81, 0x80];
        der.extend(std::iter::repeat_n(0u8, 0x80));
        let (element, rest) = read_element(&der).unwrap();
        assert_eq!(element.content.len(), 0x80);
        assert_eq!(element.whole.len(), der.len());
        assert!(rest.is_empty());
    }

    #[test]
    fn truncated_der_is_refused() {
        assert!(read_element(&[TAG_SEQUENCE, 0x05, 0x00]).is_err());
        assert!(read_element(&[TAG_SEQUENCE, 0x80]).is_err());
        assert!(read_element(&[]).is_err());
    }

    #[test]
    fn pem_text_without_a_block_is_refused() {
        assert!(first_pem_block(b"hello").is_err());
        assert!(first_pem_block(b"-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let err = rsa_entry(None, Algorithm::RS256, &[0xFF; 128], &[1, 0, 1])
            .err()
            .unwrap();
        assert!(err.contains("1024 bits"), "{err}");
    }
}
