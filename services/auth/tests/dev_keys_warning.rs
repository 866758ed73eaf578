//! Development keys announce themselves with exactly one warning.
//!
//! Kept in its own test binary: tracing caches per-callsite interest process-wide, so a
//! scoped subscriber can miss events when other tests hit the same callsite concurrently.

mod common;

use common::*;
use rollgate_auth::{AuthConfig, DevKeys, KeySource, Verifier};

#[test]
fn loading_the_keys_logs_exactly_one_warning() {
    let root = TempDir::new();
    let dir = root.path().join(".rollgate");
    let (keys, warnings) = count_warnings(|| DevKeys::load_or_create(&dir));
    keys.unwrap();
    assert_eq!(warnings, 1);

    let (verifier, warnings) =
        count_warnings(|| Verifier::new(AuthConfig::default(), KeySource::DevKeyDir(dir.clone())));
    verifier.unwrap();
    assert_eq!(warnings, 1);
}
