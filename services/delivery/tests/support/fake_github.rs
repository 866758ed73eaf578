//! A fake GitHub API on 127.0.0.1 that checks what GitHub checks: the App JWT (RS256,
//! verified with the App's public key; `iss`, `iat` in the past, `exp` at most 10 minutes
//! after `iat`) before issuing an installation token, and that token before accepting a
//! callback. Shared by the delivery crate's GitHub tests and the end-to-end ones
//! (`#[path]`-included, so both run the same checks).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const APP_ID: &str = "424242";

#[derive(Default)]
pub struct Seen {
    pub token_requests: u32,
    pub callbacks: Vec<(String, Value)>,
    pub refused: Vec<String>,
}

pub struct FakeGitHub {
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
}

/// A small HTTP/1.1 server: one request per connection.
pub async fn fake_github(public_pem: String) -> FakeGitHub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let issued = Arc::new(Mutex::new(Vec::<String>::new()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let issued = issued.clone();
            let public_pem = public_pem.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut auth = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).await.unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_owned(),
                        "content-length" => len = v.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).await.unwrap();
                let (status, answer) = if path.starts_with("/app/installations/") {
                    match check_app_jwt(&auth, &public_pem) {
                        Ok(()) => {
                            let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
                            issued.lock().unwrap().push(token.clone());
                            seen.lock().unwrap().token_requests += 1;
                            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
                            (
                                "201 Created",
                                json!({"token": token, "expires_at": expires}).to_string(),
                            )
                        }
                        Err(why) => {
                            seen.lock().unwrap().refused.push(why);
                            ("401 Unauthorized", "{}".to_owned())
                        }
                    }
                } else if path.ends_with("/deployment_protection_rule") {
                    let token = auth.strip_prefix("Bearer ").unwrap_or("");
                    if issued.lock().unwrap().iter().any(|t| t == token) {
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        seen.lock().unwrap().callbacks.push((path.clone(), v));
                        ("204 No Content", String::new())
                    } else {
                        seen.lock()
                            .unwrap()
                            .refused
                            .push("bad installation token".into());
                        ("401 Unauthorized", "{}".to_owned())
                    }
                } else {
                    ("404 Not Found", "{}".to_owned())
                };
                let mut stream = reader.into_inner();
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    FakeGitHub { base, seen }
}

/// What GitHub checks of an App JWT.
pub fn check_app_jwt(auth: &str, public_pem: &str) -> Result<(), String> {
    let jwt = auth.strip_prefix("Bearer ").ok_or("no bearer token")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID]);
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| e.to_string())?;
    let iat = data.claims["iat"].as_i64().ok_or("iat")?;
    let exp = data.claims["exp"].as_i64().ok_or("exp")?;
    let now = chrono::Utc::now().timestamp();
    if iat > now - 30 {
        return Err("iat is not in the past".into());
    }
    if exp - iat > 600 {
        return Err("exp is more than 10 minutes after iat".into());
    }
    Ok(())
}

pub fn keypair() -> (String, String) {
    let mut rng = rand::rngs::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key");
    let public = rsa::RsaPublicKey::from(&private);
    (
        private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
}
