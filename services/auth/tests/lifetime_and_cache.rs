//! `iat` and the maximum token lifetime, and the cache of verified tokens: with real keys
//! (the Ed25519 file under `tests/keys/`) and real signed JWTs.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use rollgate_auth::{
    AuthConfig, AuthError, KeySource, Principal, Verifier, VerifyOptions,
    DEFAULT_MAX_LIFETIME_SECONDS,
};
use serde_json::{json, Value};

fn verifier(options: VerifyOptions) -> Verifier {
    Verifier::with_options(
        AuthConfig::default(),
        KeySource::PemFile(key_path("ed25519-public.pem")),
        options,
    )
    .unwrap()
}

fn no_cache() -> VerifyOptions {
    VerifyOptions {
        cache_entries: 0,
        ..VerifyOptions::default()
    }
}

fn signed(claims: &Value) -> String {
    sign(Algorithm::EdDSA, None, claims, &ed_signer())
}

fn alice() -> Principal {
    Principal {
        sub: "alice".to_owned(),
        roles: vec!["approver".to_owned(), "sre".to_owned()],
        teams: vec!["web".to_owned()],
    }
}

// ---------------------------------------------------------------------------------------
// iat

#[test]
fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
    let verifier = verifier(no_cache());
    // No nbf, so only iat speaks.
    let token = |iat: i64| signed(&claims_with(json!({"nbf": null, "iat": iat})));
    assert_eq!(
        verifier.verify(&token(NOW + 31), NOW),
        Err(AuthError::IssuedInFuture)
    );
    assert_eq!(
        verifier.verify(&token(NOW + 3600), NOW),
        Err(AuthError::IssuedInFuture)
    );
    // Within the default 30 s of leeway: a clock slightly ahead at the issuer is fine.
    assert_eq!(verifier.verify(&token(NOW + 30), NOW), Ok(alice()));
    assert_eq!(verifier.verify(&token(NOW - 60), NOW), Ok(alice()));
}

#[test]
fn iat_must_be_a_number() {
    let verifier = verifier(no_cache());
    let token = signed(&claims_with(json!({"iat": "yesterday"})));
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(AuthError::InvalidClaim("iat".to_owned()))
    );
}

// ---------------------------------------------------------------------------------------
// Maximum lifetime

#[test]
fn the_default_maximum_lifetime_is_24_hours() {
    assert_eq!(DEFAULT_MAX_LIFETIME_SECONDS, 86_400);
    assert_eq!(VerifyOptions::default().max_lifetime_seconds, Some(86_400));
    let verifier = verifier(no_cache());
    let day = signed(&claims_with(
        json!({"iat": NOW - 10, "exp": NOW - 10 + 86_400}),
    ));
    assert_eq!(verifier.verify(&day, NOW), Ok(alice()));
    let longer = signed(&claims_with(
        json!({"iat": NOW - 10, "exp": NOW - 10 + 86_401}),
    ));
    assert_eq!(
        verifier.verify(&longer, NOW),
        Err(AuthError::LifetimeTooLong)
    );
    let year = signed(&claims_with(json!({"iat": NOW, "exp": NOW + 365 * 86_400})));
    assert_eq!(verifier.verify(&year, NOW), Err(AuthError::LifetimeTooLong));
}

#[test]
fn the_maximum_lifetime_is_configurable() {
    let verifier = verifier(VerifyOptions {
        max_lifetime_seconds: Some(900),
        ..no_cache()
    });
    let fifteen_minutes = signed(&claims_with(json!({"iat": NOW, "exp": NOW + 900})));
    assert_eq!(verifier.verify(&fifteen_minutes, NOW), Ok(alice()));
    let sixteen = signed(&claims_with(json!({"iat": NOW, "exp": NOW + 960})));
    assert_eq!(
        verifier.verify(&sixteen, NOW),
        Err(AuthError::LifetimeTooLong)
    );

    // Without a maximum, any lifetime is accepted (iat is still checked).
    let unlimited = self::verifier(VerifyOptions {
        max_lifetime_seconds: None,
        ..no_cache()
    });
    let year = signed(&claims_with(json!({"iat": NOW, "exp": NOW + 365 * 86_400})));
    assert_eq!(unlimited.verify(&year, NOW), Ok(alice()));
    let no_iat = signed(&claims_with(json!({"iat": null})));
    assert_eq!(unlimited.verify(&no_iat, NOW), Ok(alice()));
    let future = signed(&claims_with(json!({"nbf": null, "iat": NOW + 600})));
    assert_eq!(
        unlimited.verify(&future, NOW),
        Err(AuthError::IssuedInFuture)
    );
}

#[test]
fn without_iat_the_lifetime_is_unknown_and_the_token_refused_when_a_maximum_is_set() {
    let verifier = verifier(no_cache());
    let token = signed(&claims_with(json!({"iat": null})));
    assert_eq!(
        verifier.verify(&token, NOW),
        Err(AuthError::InvalidClaim("iat".to_owned()))
    );
}

#[test]
fn a_zero_maximum_is_a_configuration_error() {
    let err = Verifier::with_options(
        AuthConfig::default(),
        KeySource::PemFile(key_path("ed25519-public.pem")),
        VerifyOptions {
            max_lifetime_seconds: Some(0),
            ..VerifyOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.is_config_error(), "{err}");
}

// ---------------------------------------------------------------------------------------
// The cache of verified tokens

#[test]
fn the_token_expiry_is_reported_with_and_without_the_cache() {
    let token = signed(&claims_with(json!({"exp": NOW + 600})));
    for verifier in [verifier(VerifyOptions::default()), verifier(no_cache())] {
        for _ in 0..2 {
            let verified = verifier.verify_timed(&token, NOW).unwrap();
            assert_eq!(verified.principal, alice());
            assert_eq!(verified.expires_at, NOW + 600);
        }
    }
}

#[test]
fn a_cached_token_is_refused_once_expired() {
    let verifier = verifier(VerifyOptions::default());
    let token = signed(&claims_with(json!({"exp": NOW + 600})));
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
    // A hit (same answer), until exp plus the leeway...
    assert_eq!(verifier.verify(&token, NOW + 600), Ok(alice()));
    assert_eq!(verifier.verify(&token, NOW + 629), Ok(alice()));
    // ...and refused from then on, exactly as without the cache.
    assert_eq!(verifier.verify(&token, NOW + 630), Err(AuthError::Expired));
    assert_eq!(
        verifier.verify(&token, NOW + 10_000),
        Err(AuthError::Expired)
    );
    let uncached = self::verifier(no_cache());
    assert_eq!(uncached.verify(&token, NOW + 629), Ok(alice()));
    assert_eq!(uncached.verify(&token, NOW + 630), Err(AuthError::Expired));
}

#[test]
fn a_cached_token_is_checked_against_nbf_and_iat_on_every_use() {
    let verifier = verifier(VerifyOptions::default());
    let token = signed(&claims());
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
    // A clock moved back: the token is not valid yet there, cached or not.
    assert_eq!(
        verifier.verify(&token, NOW - 31),
        Err(AuthError::NotYetValid)
    );
    let no_nbf = signed(&claims_with(json!({"nbf": null})));
    assert_eq!(verifier.verify(&no_nbf, NOW), Ok(alice()));
    assert_eq!(
        verifier.verify(&no_nbf, NOW - 31),
        Err(AuthError::IssuedInFuture)
    );
    assert_eq!(verifier.verify(&no_nbf, NOW), Ok(alice()));
}

#[test]
fn a_tampered_token_misses_the_cache_and_is_refused() {
    let verifier = verifier(VerifyOptions::default());
    let token = signed(&claims());
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));

    // Same header and signature, payload granting more.
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged = claims_with(json!({"roles": ["governance_admin"], "teams": ["*"]}));
    let tampered = format!(
        "{header}.{}.{signature}",
        b64(forged.to_string().as_bytes())
    );
    assert_eq!(
        verifier.verify(&tampered, NOW),
        Err(AuthError::BadSignature)
    );

    // A flipped signature character is another token too.
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    assert_eq!(verifier.verify(&flipped, NOW), Err(AuthError::BadSignature));

    // And the genuine one is still served.
    assert_eq!(verifier.verify(&token, NOW), Ok(alice()));
}

#[test]
fn refusals_are_not_cached() {
    let verifier = verifier(VerifyOptions::default());
    let wrong_audience = signed(&claims_with(json!({"aud": "someone-else"})));
    for _ in 0..3 {
        assert_eq!(
            verifier.verify(&wrong_audience, NOW),
            Err(AuthError::WrongAudience)
        );
    }
    // A token that is not yet valid is refused, then accepted once its time has come
    // (the refusal was not remembered).
    let later = signed(&claims_with(
        json!({"nbf": NOW + 100, "iat": NOW + 100, "exp": NOW + 700}),
    ));
    assert_eq!(verifier.verify(&later, NOW), Err(AuthError::NotYetValid));
    assert_eq!(verifier.verify(&later, NOW + 100), Ok(alice()));
}

#[test]
fn the_cache_is_bounded_and_evicted_tokens_verify_again() {
    let verifier = verifier(VerifyOptions {
        cache_entries: 2,
        ..VerifyOptions::default()
    });
    let tokens: Vec<String> = (0..5)
        .map(|i| signed(&claims_with(json!({"jti": format!("t{i}")}))))
        .collect();
    for _ in 0..2 {
        for token in &tokens {
            assert_eq!(verifier.verify(token, NOW), Ok(alice()));
            assert!(verifier.cached_tokens() <= 2);
        }
    }
    assert_eq!(verifier.cached_tokens(), 2);
    assert_eq!(self::verifier(no_cache()).cached_tokens(), 0);
    for token in &tokens {
        assert_eq!(verifier.verify(token, NOW + 630), Err(AuthError::Expired));
    }
    // Expired entries are dropped when met.
    assert_eq!(verifier.cached_tokens(), 0);
}
