//! The development key pair: created once with tight permissions, reused afterwards, and
//! the tokens minted with it verify.

mod common;

use std::fs;

use common::*;
use rollgate_auth::{
    AuthConfig, AuthError, DevKeys, KeySource, MintRequest, Principal, Verifier,
    DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE,
};

fn request() -> MintRequest {
    MintRequest {
        sub: "alice".to_owned(),
        roles: vec!["approver".to_owned()],
        teams: vec!["web".to_owned()],
        ttl_seconds: 900,
        now: NOW,
        issuer: "rollgate".to_owned(),
        audience: "rollgate".to_owned(),
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keys_are_created_on_first_use_and_reused_afterwards() {
    let root = TempDir::new();
    let dir = root.path().join("work").join(".rollgate");

    let first = DevKeys::load_or_create(&dir).unwrap();
    let private_path = dir.join(DEV_PRIVATE_KEY_FILE);
    let public_path = dir.join(DEV_PUBLIC_KEY_FILE);
    let private_pem = fs::read_to_string(&private_path).unwrap();
    let public_pem = fs::read_to_string(&public_path).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&private_path), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    let second = DevKeys::load_or_create(&dir).unwrap();
    assert_eq!(second.kid(), first.kid());
    assert_eq!(fs::read_to_string(&private_path).unwrap(), private_pem);
    assert_eq!(fs::read_to_string(&public_path).unwrap(), public_pem);

    // Only the two key files are written: no temporary files are left behind.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE]);
}

#[test]
fn a_minted_token_verifies_against_the_dev_key_dir() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    let keys = DevKeys::load_or_create(&dir).unwrap();
    let token = keys.mint(request()).unwrap();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(keys.kid()));

    let verifier = Verifier::new(AuthConfig::default(), KeySource::DevKeyDir(dir)).unwrap();
    assert_eq!(
        verifier.verify(&token, NOW),
        Ok(Principal {
            sub: "alice".to_owned(),
            roles: vec!["approver".to_owned()],
            teams: vec!["web".to_owned()],
        })
    );
    assert!(verifier.verify(&token, NOW + 900 + 29).is_ok());
    assert_eq!(
        verifier.verify(&token, NOW + 900 + 30),
        Err(AuthError::Expired)
    );
    assert_eq!(
        verifier.verify(&token, NOW - 31),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn a_minted_token_carries_the_registered_claims() {
    let root = TempDir::new();
    let keys = DevKeys::load_or_create(root.path().join(".rollgate")).unwrap();
    let token = keys.mint(request()).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        claims,
        serde_json::json!({
            "iss": "rollgate", "aud": "rollgate", "sub": "alice",
            "iat": NOW, "nbf": NOW, "exp": NOW + 900,
            "roles": ["approver"], "teams": ["web"],
        })
    );
}

#[test]
fn a_minted_token_verifies_against_the_published_public_key_and_jwk() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    let keys = DevKeys::load_or_create(&dir).unwrap();
    let token = keys.mint(request()).unwrap();

    let by_pem = Verifier::new(
        AuthConfig::default(),
        KeySource::PemFile(dir.join(DEV_PUBLIC_KEY_FILE)),
    )
    .unwrap();
    assert!(by_pem.verify(&token, NOW).is_ok());

    let jwks_path = root.path().join("jwks.json");
    let set = jsonwebtoken::jwk::JwkSet {
        keys: vec![keys.public_jwk()],
    };
    fs::write(&jwks_path, serde_json::to_string(&set).unwrap()).unwrap();
    let by_jwks = Verifier::new(AuthConfig::default(), KeySource::JwksFile(jwks_path)).unwrap();
    assert!(by_jwks.verify(&token, NOW).is_ok());
}

#[test]
fn minting_with_custom_claim_names_matches_a_custom_config() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    let keys = DevKeys::load_or_create(&dir).unwrap();
    let token = keys
        .mint_with_claim_names(request(), "grants", "groups")
        .unwrap();
    let config = AuthConfig {
        roles_claim: "grants".to_owned(),
        teams_claim: "groups".to_owned(),
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::DevKeyDir(dir)).unwrap();
    let principal = verifier.verify(&token, NOW).unwrap();
    assert_eq!(principal.roles, ["approver"]);
    assert_eq!(principal.teams, ["web"]);

    assert!(matches!(
        keys.mint_with_claim_names(request(), "exp", "groups"),
        Err(AuthError::Config(_))
    ));
}

#[test]
fn minting_refuses_nonsense() {
    let root = TempDir::new();
    let keys = DevKeys::load_or_create(root.path().join(".rollgate")).unwrap();
    let cases = [
        MintRequest {
            sub: String::new(),
            ..request()
        },
        MintRequest {
            ttl_seconds: 0,
            ..request()
        },
        MintRequest {
            ttl_seconds: u64::MAX,
            ..request()
        },
        MintRequest {
            audience: " ".to_owned(),
            ..request()
        },
    ];
    for case in cases {
        assert!(matches!(keys.mint(case), Err(AuthError::Config(_))));
    }
}

#[test]
fn a_token_from_another_dev_key_is_refused() {
    let root = TempDir::new();
    let ours = root.path().join("ours");
    let theirs = DevKeys::load_or_create(root.path().join("theirs")).unwrap();
    let verifier = Verifier::new(AuthConfig::default(), KeySource::DevKeyDir(ours)).unwrap();
    let token = theirs.mint(request()).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Err(AuthError::UnknownKid));
}

#[test]
fn a_missing_or_stale_public_key_file_is_rewritten() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    DevKeys::load_or_create(&dir).unwrap();
    let public_path = dir.join(DEV_PUBLIC_KEY_FILE);
    let original = fs::read_to_string(&public_path).unwrap();

    fs::remove_file(&public_path).unwrap();
    DevKeys::load_or_create(&dir).unwrap();
    assert_eq!(fs::read_to_string(&public_path).unwrap(), original);

    fs::write(&public_path, "stale").unwrap();
    DevKeys::load_or_create(&dir).unwrap();
    assert_eq!(fs::read_to_string(&public_path).unwrap(), original);
}

#[cfg(unix)]
#[test]
fn a_private_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    DevKeys::load_or_create(&dir).unwrap();
    let private_path = dir.join(DEV_PRIVATE_KEY_FILE);
    fs::set_permissions(&private_path, fs::Permissions::from_mode(0o644)).unwrap();
    let result = DevKeys::load_or_create(&dir);
    assert!(
        matches!(&result, Err(AuthError::KeyFile { reason, .. }) if reason.contains("0644")),
        "{result:?}"
    );
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let root = TempDir::new();
    let path = root.path().join(".rollgate");
    fs::write(&path, "not a directory").unwrap();
    assert!(matches!(
        DevKeys::load_or_create(&path),
        Err(AuthError::KeyFile { .. })
    ));
}

#[test]
fn a_corrupt_private_key_is_refused_and_left_alone() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    DevKeys::load_or_create(&dir).unwrap();
    let private_path = dir.join(DEV_PRIVATE_KEY_FILE);
    fs::write(&private_path, "garbage").unwrap();
    assert!(matches!(
        DevKeys::load_or_create(&dir),
        Err(AuthError::KeyFile { .. })
    ));
    assert_eq!(fs::read_to_string(&private_path).unwrap(), "garbage");
}

/// The DER of the private key file: RFC 8410 §7 `OneAsymmetricKey` version 0 (PKCS#8 v1)
/// with the Ed25519 OID and the 32-byte seed wrapped in an OCTET STRING, and nothing after
/// it (no public key, which is what makes OpenSSL 3.0 refuse the v2 form).
#[test]
fn the_private_key_is_written_as_pkcs8_v1_per_rfc_8410() {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    let keys = DevKeys::load_or_create(&dir).unwrap();
    let pem = fs::read_to_string(dir.join(DEV_PRIVATE_KEY_FILE)).unwrap();
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{pem}");
    let der = STANDARD.decode(body).unwrap();

    // The example of RFC 8410 §10.3, byte for byte up to the key itself:
    // 30 2e | 02 01 00 | 30 05 06 03 2b 65 70 | 04 22 04 20 <32 bytes>
    let prefix: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    assert_eq!(der.len(), 48, "a v1 key is 48 bytes of DER: {der:02x?}");
    assert_eq!(der[..16], prefix, "{der:02x?}");

    // The 32 bytes are the seed of the key in use: signing with it gives the public key.
    let seed: [u8; 32] = der[16..].try_into().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    assert_eq!(signing.verifying_key(), keys.verifying_key());
}

/// A key file written in the v2 form (with the public key attached, as earlier versions
/// did) is still read, and left as it is.
#[test]
fn a_pkcs8_v2_private_key_is_still_read() {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    fs::create_dir_all(&dir).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let path = dir.join(DEV_PRIVATE_KEY_FILE);
    fs::write(&path, v2.as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The v2 form is longer than the 48-byte v1 form: the public key is in there.
    assert!(v2.len() > 120, "{}", v2.as_str());

    let keys = DevKeys::load_or_create(&dir).unwrap();
    assert_eq!(keys.verifying_key(), key.verifying_key());
    assert_eq!(fs::read_to_string(&path).unwrap(), v2.as_str());
    let token = keys.mint(request()).unwrap();
    let verifier = Verifier::new(AuthConfig::default(), KeySource::DevKeyDir(dir)).unwrap();
    assert_eq!(verifier.verify(&token, NOW).unwrap().sub, "alice");
}

/// The openssl command line, when the machine has one (`ROLLGATE_OPENSSL`, then `PATH`,
/// then `/usr/bin/openssl`).
fn openssl() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("ROLLGATE_OPENSSL") {
        return Some(path.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("openssl"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let usual = std::path::PathBuf::from("/usr/bin/openssl");
        usual.is_file().then_some(usual)
    })
}

/// OpenSSL reads the private key file, and derives from it the public key rollgate wrote.
#[test]
fn openssl_reads_the_private_key() {
    let Some(openssl) = openssl() else {
        eprintln!("openssl not found (set ROLLGATE_OPENSSL or install the `openssl` package); skipping the OpenSSL check");
        return;
    };
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    DevKeys::load_or_create(&dir).unwrap();
    let private_path = dir.join(DEV_PRIVATE_KEY_FILE);

    let check = std::process::Command::new(&openssl)
        .args(["pkey", "-noout", "-in"])
        .arg(&private_path)
        .output()
        .expect("openssl runs");
    assert!(
        check.status.success(),
        "openssl pkey -noout refused the key: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let public = std::process::Command::new(&openssl)
        .args(["pkey", "-pubout", "-in"])
        .arg(&private_path)
        .output()
        .expect("openssl runs");
    assert!(public.status.success());
    assert_eq!(
        String::from_utf8(public.stdout).unwrap(),
        fs::read_to_string(dir.join(DEV_PUBLIC_KEY_FILE)).unwrap()
    );
}
