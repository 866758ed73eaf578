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
