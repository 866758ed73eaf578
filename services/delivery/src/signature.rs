//! Request signatures: Standard Webhooks (what rollgate sends), and the checks of what GitHub
//! and Slack send to rollgate. Every comparison is constant-time (`hmac`'s `verify_slice`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn standard_webhooks_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", B64.encode(m.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated (several during a
/// secret rotation).
pub fn standard_webhooks_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| standard_webhooks_signature(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>` (GitHub).
pub fn github_signature_valid(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// Why a Slack request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlackRefusal {
    MissingHeaders,
    /// Older (or newer) than the window: a replay.
    Stale,
    BadSignature,
}

/// Checks `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{body}")>` and that
/// `X-Slack-Request-Timestamp` is within `window_seconds` of `now` (Slack asks for 5 minutes).
pub fn slack_signature_check(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
    window_seconds: i64,
) -> Result<(), SlackRefusal> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SlackRefusal::MissingHeaders);
    };
    let ts_value: i64 = ts.trim().parse().map_err(|_| SlackRefusal::Stale)?;
    if (now_unix - ts_value).abs() > window_seconds {
        return Err(SlackRefusal::Stale);
    }
    let Some(hex_sig) = sig.trim().strip_prefix("v0=") else {
        return Err(SlackRefusal::BadSignature);
    };
    let Ok(sig_bytes) = hex::decode(hex_sig) else {
        return Err(SlackRefusal::BadSignature);
    };
    let mut m = mac(signing_secret);
    m.update(b"v0:");
    m.update(ts.trim().as_bytes());
    m.update(b":");
    m.update(body);
    m.verify_slice(&sig_bytes)
        .map_err(|_| SlackRefusal::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::signing_key;

    /// The vector of the Standard Webhooks reference library's own test ("sign function
    /// works", libraries/javascript/src/webhook.test.ts); kept in
    /// tests/fixtures/standardwebhooks/sign-vector.json at the top of the repository.
    #[test]
    fn standard_webhooks_reference_vector() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/standardwebhooks/sign-vector.json"
        ))
        .unwrap();
        let key = signing_key(fixture["secret"].as_str().unwrap()).unwrap();
        let sig = standard_webhooks_signature(
            &key,
            fixture["msg_id"].as_str().unwrap(),
            fixture["timestamp"].as_i64().unwrap(),
            fixture["payload"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(sig, fixture["signature"].as_str().unwrap());
        let header = standard_webhooks_header(
            &[key.clone(), vec![1u8; 32]],
            fixture["msg_id"].as_str().unwrap(),
            fixture["timestamp"].as_i64().unwrap(),
            fixture["payload"].as_str().unwrap().as_bytes(),
        );
        assert!(header.starts_with(&format!("{sig} v1,")));
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"action":"requested"}"#;
        let mut m = mac(b"It's a Secret to Everybody");
        m.update(body);
        let good = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
        assert!(github_signature_valid(
            b"It's a Secret to Everybody",
            &good,
            body
        ));
        assert!(!github_signature_valid(b"other", &good, body));
        assert!(!github_signature_valid(
            b"It's a Secret to Everybody",
            &good,
            b"{}"
        ));
        assert!(!github_signature_valid(
            b"It's a Secret to Everybody",
            "sha1=00",
            body
        ));
        assert!(!github_signature_valid(
            b"It's a Secret to Everybody",
            "sha256=zz",
            body
        ));
    }

    /// GitHub's documented example (docs "Validating webhook deliveries"): secret "It's a
    /// Secret to Everybody", payload "Hello, World!".
    #[test]
    fn github_documented_vector() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/github/signature-vector.json"
        ))
        .unwrap();
        assert!(github_signature_valid(
            fixture["secret"].as_str().unwrap().as_bytes(),
            fixture["x_hub_signature_256"].as_str().unwrap(),
            fixture["payload"].as_str().unwrap().as_bytes(),
        ));
    }

    #[test]
    fn slack_signatures_and_window() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"payload=%7B%7D";
        let ts = 1_531_420_618_i64;
        let mut m = mac(secret);
        m.update(format!("v0:{ts}:").as_bytes());
        m.update(body);
        let sig = format!("v0={}", hex::encode(m.finalize().into_bytes()));
        let ts_s = ts.to_string();
        assert_eq!(
            slack_signature_check(secret, Some(&ts_s), Some(&sig), body, ts + 10, 300),
            Ok(())
        );
        assert_eq!(
            slack_signature_check(secret, Some(&ts_s), Some(&sig), body, ts + 301, 300),
            Err(SlackRefusal::Stale)
        );
        assert_eq!(
            slack_signature_check(b"forged", Some(&ts_s), Some(&sig), body, ts, 300),
            Err(SlackRefusal::BadSignature)
        );
        assert_eq!(
            slack_signature_check(secret, None, Some(&sig), body, ts, 300),
            Err(SlackRefusal::MissingHeaders)
        );
    }
}
