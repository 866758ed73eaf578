//! Token verification with real keys: the RSA, EC and Ed25519 files under `tests/keys/`
//! (made once with `openssl genpkey`) and Ed25519 keys generated here.

mod common;

use common::*;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey};
use rollgate_auth::{AuthConfig, AuthError, KeySource, Principal, Verifier};
use serde_json::json;

fn pem_verifier(file: &str) -> Verifier {
    Verifier::new(AuthConfig::default(), KeySource::PemFile(key_path(file))).unwrap()
}

fn jwks_verifier() -> Verifier {
    Verifier::new(
        AuthConfig::default(),
        KeySource::JwksFile(key_path("jwks.json")),
    )
    .unwrap()
}

fn alice() -> Principal {
    Principal {
        sub: "alice".to_owned(),
        roles: vec!["approver".to_owned(), "sre".to_owned()],
        teams: vec!["web".to_owned()],
    }
}

// ---------------------------------------------------------------------------------------
// One valid token per algorithm and key format

#[test]
fn rs256_token_verifies_against_a_public_key_pem() {
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    assert_eq!(
        pem_verifier("rsa-public.pem").verify(&token, NOW),
        Ok(alice())
    );
}

#[test]
fn rs256_token_verifies_against_a_pkcs1_pem_and_a_certificate() {
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    assert_eq!(
        pem_verifier("rsa-public-pkcs1.pem").verify(&token, NOW),
        Ok(alice())
    );
    assert_eq!(
        pem_verifier("rsa-cert.pem").verify(&token, NOW),
        Ok(alice())
    );
}

#[test]
fn es256_token_verifies_against_a_public_key_pem_and_a_certificate() {
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert_eq!(
        pem_verifier("ec-public.pem").verify(&token, NOW),
        Ok(alice())
    );
    assert_eq!(pem_verifier("ec-cert.pem").verify(&token, NOW), Ok(alice()));
}

#[test]
fn es384_token_verifies_against_a_p384_key() {
    let signer = EncodingKey::from_ec_pem(&key_bytes("ec384-private.pem")).unwrap();
    let token = sign(Algorithm::ES384, None, &claims(), &signer);
    assert_eq!(
        pem_verifier("ec384-public.pem").verify(&token, NOW),
        Ok(alice())
    );
}

#[test]
fn eddsa_token_verifies_against_a_freshly_generated_ed25519_key() {
    let dir = TempDir::new();
    let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public_pem = signing_key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let path = dir.path().join("ed25519.pub.pem");
    std::fs::write(&path, public_pem).unwrap();
    let der = signing_key.to_pkcs8_der().unwrap();
    let token = sign(
        Algorithm::EdDSA,
        None,
        &claims(),
        &EncodingKey::from_ed_der(der.as_bytes()),
    );

    let verifier = Verifier::new(AuthConfig::default(), KeySource::PemFile(path)).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));

    // A token from another Ed25519 key does not verify.
    let other = SigningKey::generate(&mut rand::rngs::OsRng);
    let other_der = other.to_pkcs8_der().unwrap();
    let forged = sign(
        Algorithm::EdDSA,
        None,
        &claims(),
        &EncodingKey::from_ed_der(other_der.as_bytes()),
    );
    assert_eq!(verifier.verify(&forged, NOW), Err(AuthError::BadSignature));
}

#[test]
fn eddsa_token_verifies_against_the_committed_ed25519_pem() {
    let token = sign(Algorithm::EdDSA, None, &claims(), &ed_signer());
    assert_eq!(
        pem_verifier("ed25519-public.pem").verify(&token, NOW),
        Ok(alice())
    );
}

#[test]
fn the_authorization_header_is_parsed() {
    let verifier = pem_verifier("ec-public.pem");
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    let header = format!("Bearer {token}");
    assert_eq!(
        verifier
            .verify_authorization(Some(&header), NOW)
            .map(|v| v.principal),
        Ok(alice())
    );
    assert_eq!(
        verifier
            .verify_authorization(None, NOW)
            .map(|v| v.principal),
        Err(AuthError::MissingCredentials)
    );
    assert_eq!(
        verifier
            .verify_authorization(Some(&format!("Token {token}")), NOW)
            .map(|v| v.principal),
        Err(AuthError::MalformedHeader)
    );
}

// ---------------------------------------------------------------------------------------
// Time: exp and nbf against the caller's clock, with leeway

#[test]
fn expiry_is_enforced_with_leeway() {
    let verifier = pem_verifier("ec-public.pem"); // leeway 30 s
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer()); // exp = NOW + 600

    assert!(verifier.verify(&token, NOW + 599).is_ok());
    assert!(
        verifier.verify(&token, NOW + 600 + 29).is_ok(),
        "within leeway"
    );
    assert_eq!(
        verifier.verify(&token, NOW + 600 + 30),
        Err(AuthError::Expired)
    );
    assert_eq!(
        verifier.verify(&token, NOW + 10_000),
        Err(AuthError::Expired)
    );
}

#[test]
fn expiry_without_leeway_is_exact() {
    let config = AuthConfig {
        leeway_seconds: 0,
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::PemFile(key_path("ec-public.pem"))).unwrap();
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert!(verifier.verify(&token, NOW + 599).is_ok());
    assert_eq!(verifier.verify(&token, NOW + 600), Err(AuthError::Expired));
}

#[test]
fn a_token_without_exp_is_refused() {
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"exp": null})),
        &ec_signer(),
    );
    assert_eq!(
        pem_verifier("ec-public.pem").verify(&token, NOW),
        Err(AuthError::InvalidClaim("exp".to_owned()))
    );
}

#[test]
fn not_before_is_enforced_with_leeway() {
    let verifier = pem_verifier("ec-public.pem");
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"nbf": NOW + 100})),
        &ec_signer(),
    );
    assert_eq!(verifier.verify(&token, NOW), Err(AuthError::NotYetValid));
    assert_eq!(
        verifier.verify(&token, NOW + 69),
        Err(AuthError::NotYetValid)
    );
    assert!(verifier.verify(&token, NOW + 70).is_ok(), "within leeway");
    assert!(verifier.verify(&token, NOW + 100).is_ok());
}

// ---------------------------------------------------------------------------------------
// Issuer, audience, subject

#[test]
fn a_wrong_or_missing_issuer_is_refused() {
    let verifier = pem_verifier("ec-public.pem");
    for iss in [json!("someone-else"), json!(["rollgate"]), json!(null)] {
        let token = sign(
            Algorithm::ES256,
            None,
            &claims_with(json!({"iss": iss})),
            &ec_signer(),
        );
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(AuthError::WrongIssuer),
            "{iss}"
        );
    }
}

#[test]
fn a_wrong_or_missing_audience_is_refused() {
    let verifier = pem_verifier("ec-public.pem");
    for aud in [
        json!("other-service"),
        json!(["a", "b"]),
        json!(null),
        json!(7),
    ] {
        let token = sign(
            Algorithm::ES256,
            None,
            &claims_with(json!({"aud": aud})),
            &ec_signer(),
        );
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(AuthError::WrongAudience),
            "{aud}"
        );
    }
}

#[test]
fn an_audience_array_naming_rollgate_is_accepted() {
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"aud": ["billing", "rollgate"]})),
        &ec_signer(),
    );
    assert_eq!(
        pem_verifier("ec-public.pem").verify(&token, NOW),
        Ok(alice())
    );
}

#[test]
fn issuer_and_audience_come_from_the_config() {
    let config = AuthConfig {
        issuer: "https://idp.example".to_owned(),
        audience: "rollgate-prod".to_owned(),
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::PemFile(key_path("ec-public.pem"))).unwrap();
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"iss": "https://idp.example", "aud": "rollgate-prod"})),
        &ec_signer(),
    );
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
    let default_token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert_eq!(
        verifier.verify(&default_token, NOW),
        Err(AuthError::WrongIssuer)
    );
}

#[test]
fn a_missing_subject_is_refused() {
    let verifier = pem_verifier("ec-public.pem");
    for sub in [json!(null), json!(""), json!(42)] {
        let token = sign(
            Algorithm::ES256,
            None,
            &claims_with(json!({"sub": sub})),
            &ec_signer(),
        );
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(AuthError::InvalidClaim("sub".to_owned()))
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tampering, `alg: none`, algorithm confusion

#[test]
fn a_tampered_payload_is_refused() {
    let verifier = pem_verifier("rsa-public.pem");
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    let parts: Vec<&str> = token.split('.').collect();
    let elevated = claims_with(json!({"roles": ["governance-admin"], "teams": ["*"]}));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(elevated.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        verifier.verify(&tampered, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_tampered_signature_is_refused() {
    let verifier = pem_verifier("ed25519-public.pem");
    let token = sign(Algorithm::EdDSA, None, &claims(), &ed_signer());
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    bytes[10] ^= 0x01;
    let tampered = format!("{message}.{}", b64(&bytes));
    assert_eq!(
        verifier.verify(&tampered, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn alg_none_is_refused() {
    let verifier = pem_verifier("rsa-public.pem");
    for alg in ["none", "None", "NONE"] {
        let unsigned = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims(), "");
        assert_eq!(
            verifier.verify(&unsigned, NOW),
            Err(AuthError::ForbiddenAlgorithm("none")),
            "{alg}"
        );
        let with_signature = raw_token(&json!({"alg": alg}), &claims(), "c2ln");
        assert_eq!(
            verifier.verify(&with_signature, NOW),
            Err(AuthError::ForbiddenAlgorithm("none"))
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the public key's PEM bytes used as an HMAC secret.
    let public_pem = key_bytes("rsa-public.pem");
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims_with(json!({"roles": ["governance-admin"]})),
        &EncodingKey::from_secret(&public_pem),
    );
    assert_eq!(
        pem_verifier("rsa-public.pem").verify(&forged, NOW),
        Err(AuthError::ForbiddenAlgorithm("HS256"))
    );

    // Even with HS256 allowed in the config, an RSA key never verifies an HMAC token.
    let config = AuthConfig {
        allow_hs256: true,
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::PemFile(key_path("rsa-public.pem"))).unwrap();
    assert_eq!(
        verifier.verify(&forged, NOW),
        Err(AuthError::ForbiddenAlgorithm("HS256"))
    );

    // Nor does a JWKS key.
    let forged_with_kid = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    );
    assert_eq!(
        jwks_verifier().verify(&forged_with_kid, NOW),
        Err(AuthError::ForbiddenAlgorithm("HS256"))
    );
}

#[test]
fn a_header_algorithm_other_than_the_keys_is_refused() {
    let ec_verifier = pem_verifier("ec-public.pem");
    let rs_token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    assert_eq!(
        ec_verifier.verify(&rs_token, NOW),
        Err(AuthError::ForbiddenAlgorithm("RS256"))
    );
    let ps_token = sign(Algorithm::PS256, None, &claims(), &rsa_signer());
    assert_eq!(
        pem_verifier("rsa-public.pem").verify(&ps_token, NOW),
        Err(AuthError::ForbiddenAlgorithm("PS256"))
    );
}

#[test]
fn an_unknown_algorithm_is_unsupported() {
    let token = raw_token(&json!({"alg": "XS999"}), &claims(), "c2ln");
    assert_eq!(
        pem_verifier("rsa-public.pem").verify(&token, NOW),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let verifier = pem_verifier("rsa-public.pem");
    let valid = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    let too_long = "a".repeat(rollgate_auth::MAX_TOKEN_BYTES + 1);
    let cases = [
        "".to_owned(),
        "abc".to_owned(),
        "a.b".to_owned(),
        format!("{valid}.extra"),
        "!!!.e30.c2ln".to_owned(),
        format!("{}.e30.c2ln", b64(b"[1,2]")),
        format!("{}.e30.c2ln", b64(br#"{"typ":"JWT"}"#)),
        format!("{}.e30.c2ln", b64(br#"{"alg":"RS256","crit":["exp"]}"#)),
        format!("{}.e30.c2ln", b64(br#"{"alg":"RS256","kid":5}"#)),
        too_long,
    ];
    for token in cases {
        let result = verifier.verify(&token, NOW);
        assert!(
            matches!(result, Err(AuthError::MalformedToken(_))),
            "{token:.40}: {result:?}"
        );
    }
    // A well-formed header with a payload that is not JSON fails on the signature first.
    let (header, _) = valid.split_once('.').unwrap();
    let garbage = format!("{header}.{}.c2ln", b64(b"not json"));
    assert_eq!(verifier.verify(&garbage, NOW), Err(AuthError::BadSignature));
}

// ---------------------------------------------------------------------------------------
// HS256 (development only)

#[test]
fn hs256_secret_is_refused_unless_allowed() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let refused = Verifier::new(
        AuthConfig::default(),
        KeySource::Hs256Secret(secret.clone()),
    );
    assert!(matches!(refused, Err(AuthError::Config(_))), "{refused:?}");
    assert!(refused.unwrap_err().is_config_error());

    let config = AuthConfig {
        allow_hs256: true,
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config.clone(), KeySource::Hs256Secret(secret.clone())).unwrap();
    let token = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(&secret),
    );
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));

    let wrong = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(b"another secret of thirty-two bytes!"),
    );
    assert_eq!(verifier.verify(&wrong, NOW), Err(AuthError::BadSignature));

    let short = Verifier::new(config, KeySource::Hs256Secret(b"short".to_vec()));
    assert!(matches!(short, Err(AuthError::Config(_))));
}

#[test]
fn a_jwks_with_a_shared_secret_is_refused_unless_hs256_is_allowed() {
    let dir = TempDir::new();
    let path = dir.path().join("jwks.json");
    let secret = b64(b"0123456789abcdef0123456789abcdef");
    std::fs::write(
        &path,
        json!({"keys": [{"kty": "oct", "kid": "dev", "k": secret}]}).to_string(),
    )
    .unwrap();
    let refused = Verifier::new(AuthConfig::default(), KeySource::JwksFile(path.clone()));
    assert!(
        matches!(refused, Err(AuthError::KeyFile { .. })),
        "{refused:?}"
    );

    let config = AuthConfig {
        allow_hs256: true,
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::JwksFile(path)).unwrap();
    let token = sign(
        Algorithm::HS256,
        Some("dev"),
        &claims(),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    );
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
}

// ---------------------------------------------------------------------------------------
// JWKS

#[test]
fn jwks_selects_the_key_by_kid() {
    let verifier = jwks_verifier();
    let cases = [
        (Algorithm::RS256, "rsa-1", rsa_signer()),
        (Algorithm::RS256, "rsa-2", rsa2_signer()),
        (Algorithm::ES256, "ec-1", ec_signer()),
        (Algorithm::EdDSA, "ed-1", ed_signer()),
    ];
    for (alg, kid, key) in cases {
        let token = sign(alg, Some(kid), &claims(), &key);
        assert_eq!(verifier.verify(&token, NOW), Ok(alice()), "{kid}");
    }
}

#[test]
fn jwks_refuses_a_token_signed_by_another_key_than_its_kid_names() {
    let token = sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa2_signer());
    assert_eq!(
        jwks_verifier().verify(&token, NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn jwks_refuses_an_unknown_kid() {
    let token = sign(Algorithm::RS256, Some("rsa-9"), &claims(), &rsa_signer());
    assert_eq!(
        jwks_verifier().verify(&token, NOW),
        Err(AuthError::UnknownKid)
    );
}

#[test]
fn jwks_with_several_keys_refuses_a_token_without_kid() {
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    assert_eq!(
        jwks_verifier().verify(&token, NOW),
        Err(AuthError::MissingKid)
    );
}

#[test]
fn jwks_with_a_single_key_accepts_a_token_without_kid() {
    let dir = TempDir::new();
    let path = dir.path().join("jwks.json");
    let set: serde_json::Value = serde_json::from_slice(&key_bytes("jwks.json")).unwrap();
    let ec_key = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == "ec-1")
        .unwrap()
        .clone();
    // An encryption key beside it is ignored.
    let enc_key = json!({"kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB"});
    std::fs::write(&path, json!({"keys": [ec_key, enc_key]}).to_string()).unwrap();
    let verifier = Verifier::new(AuthConfig::default(), KeySource::JwksFile(path)).unwrap();

    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
    let token = sign(Algorithm::ES256, Some("ec-2"), &claims(), &ec_signer());
    assert_eq!(verifier.verify(&token, NOW), Err(AuthError::UnknownKid));
}

#[test]
fn jwks_refuses_duplicate_kids_and_mismatched_algorithms() {
    let dir = TempDir::new();
    let set: serde_json::Value = serde_json::from_slice(&key_bytes("jwks.json")).unwrap();
    let keys = set["keys"].as_array().unwrap();

    let duplicate = dir.path().join("duplicate.json");
    std::fs::write(&duplicate, json!({"keys": [keys[0], keys[0]]}).to_string()).unwrap();
    let result = Verifier::new(AuthConfig::default(), KeySource::JwksFile(duplicate));
    assert!(
        matches!(result, Err(AuthError::KeyFile { .. })),
        "{result:?}"
    );

    let mut ec_as_rsa = keys[2].clone();
    ec_as_rsa["alg"] = json!("RS256");
    let mismatched = dir.path().join("mismatched.json");
    std::fs::write(&mismatched, json!({"keys": [ec_as_rsa]}).to_string()).unwrap();
    let result = Verifier::new(AuthConfig::default(), KeySource::JwksFile(mismatched));
    assert!(
        matches!(result, Err(AuthError::KeyFile { .. })),
        "{result:?}"
    );

    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    let result = Verifier::new(AuthConfig::default(), KeySource::JwksFile(empty));
    assert!(
        matches!(result, Err(AuthError::KeyFile { .. })),
        "{result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Roles and teams

#[test]
fn roles_and_teams_come_from_custom_claim_names() {
    let config = AuthConfig {
        roles_claim: "https://rollgate.example/roles".to_owned(),
        teams_claim: "groups".to_owned(),
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::PemFile(key_path("ec-public.pem"))).unwrap();
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({
            "roles": ["ignored"],
            "teams": ["ignored"],
            "https://rollgate.example/roles": ["auditor"],
            "groups": ["payments", "web"],
        })),
        &ec_signer(),
    );
    let principal = verifier.verify(&token, NOW).unwrap();
    assert_eq!(principal.roles, ["auditor"]);
    assert_eq!(principal.teams, ["payments", "web"]);
}

#[test]
fn roles_and_teams_may_be_separated_strings() {
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"roles": "approver sre  release-manager", "teams": "web,payments"})),
        &ec_signer(),
    );
    let principal = pem_verifier("ec-public.pem").verify(&token, NOW).unwrap();
    assert_eq!(principal.roles, ["approver", "sre", "release-manager"]);
    assert_eq!(principal.teams, ["web", "payments"]);
}

#[test]
fn missing_roles_and_teams_are_empty_and_star_passes_through() {
    let verifier = pem_verifier("ec-public.pem");
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"roles": null, "teams": null})),
        &ec_signer(),
    );
    let principal = verifier.verify(&token, NOW).unwrap();
    assert!(principal.roles.is_empty() && principal.teams.is_empty());

    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"teams": ["*"]})),
        &ec_signer(),
    );
    assert_eq!(verifier.verify(&token, NOW).unwrap().teams, ["*"]);
}

#[test]
fn a_roles_claim_of_the_wrong_type_is_refused() {
    let token = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({"roles": {"a": 1}})),
        &ec_signer(),
    );
    assert_eq!(
        pem_verifier("ec-public.pem").verify(&token, NOW),
        Err(AuthError::InvalidClaim("roles".to_owned()))
    );
}

// ---------------------------------------------------------------------------------------
// Configuration errors

#[test]
fn private_keys_and_missing_files_are_configuration_errors() {
    for file in [
        "rsa-private.pem",
        "ec-private.pem",
        "ed25519-private.pem",
        "does-not-exist.pem",
    ] {
        let result = Verifier::new(AuthConfig::default(), KeySource::PemFile(key_path(file)));
        match result {
            Err(err @ AuthError::KeyFile { .. }) => assert!(err.is_config_error()),
            other => panic!("{file}: {other:?}"),
        }
    }
    let result = Verifier::new(
        AuthConfig::default(),
        KeySource::PemFile(key_path("jwks.json")),
    );
    assert!(matches!(result, Err(AuthError::KeyFile { .. })));
}

#[test]
fn unusable_settings_are_refused() {
    let source = || KeySource::PemFile(key_path("ec-public.pem"));
    let bad = [
        AuthConfig {
            issuer: " ".to_owned(),
            ..AuthConfig::default()
        },
        AuthConfig {
            teams_claim: "roles".to_owned(),
            ..AuthConfig::default()
        },
        AuthConfig {
            leeway_seconds: 30_000,
            ..AuthConfig::default()
        },
    ];
    for config in bad {
        assert!(matches!(
            Verifier::new(config, source()),
            Err(AuthError::Config(_))
        ));
    }
}

#[test]
fn error_messages_and_debug_output_carry_no_secrets() {
    let secret = b"a very secret value that is long enough".to_vec();
    let debug = format!("{:?}", KeySource::Hs256Secret(secret));
    assert!(!debug.contains("secret value"), "{debug}");

    let config = AuthConfig {
        allow_hs256: true,
        ..AuthConfig::default()
    };
    let verifier = Verifier::new(config, KeySource::PemFile(key_path("rsa-public.pem"))).unwrap();
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(&key_bytes("rsa-public.pem")),
    );
    let message = verifier.verify(&forged, NOW).unwrap_err().to_string();
    assert!(!message.contains("MII"), "{message}");
}

#[test]
fn the_verifier_can_be_shared_between_threads() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Verifier>();
}
