//! Verification of the hash chain.

use serde::{Deserialize, Serialize};

use crate::chain::{chain_hash, GENESIS_HASH};
use crate::{EventStore, Head, RecordedEvent, StoreError};

/// The result of checking the chain; serialized as `GET /v1/audit/verify` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyReport {
    Ok {
        ok: bool,
        verified_through: u64,
        head_hash: String,
    },
    Bad {
        ok: bool,
        first_bad_position: u64,
        reason: String,
    },
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        matches!(self, VerifyReport::Ok { .. })
    }
    fn bad(position: u64, reason: impl Into<String>) -> Self {
        VerifyReport::Bad {
            ok: false,
            first_bad_position: position,
            reason: reason.into(),
        }
    }
}

/// Incremental chain checker, fed events in position order (from the store or from an export).
pub struct ChainVerifier {
    position: u64,
    hash: String,
    failure: Option<VerifyReport>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            position: 0,
            hash: GENESIS_HASH.to_owned(),
            failure: None,
        }
    }
}

impl ChainVerifier {
    /// A checker that continues a chain already verified up to `head`: the first event fed
    /// must be at `head.position + 1` and name `head.hash` as its `prev_hash` (a partial
    /// export that starts where an earlier one ended).
    pub fn continuing(head: &Head) -> Self {
        Self {
            position: head.position,
            hash: head.hash.clone(),
            failure: None,
        }
    }

    /// Checks the next event; returns false once the chain is broken.
    pub fn feed(&mut self, e: &RecordedEvent) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let expected_position = self.position + 1;
        let failure = if e.position != expected_position {
            Some(VerifyReport::bad(
                expected_position,
                format!(
                    "position {expected_position} is missing (found {})",
                    e.position
                ),
            ))
        } else if e.prev_hash != self.hash {
            Some(VerifyReport::bad(
                e.position,
                "prev_hash does not match the hash of the previous event",
            ))
        } else {
            let recomputed = chain_hash(&self.hash, &e.into());
            (recomputed != e.hash).then(|| {
                VerifyReport::bad(
                    e.position,
                    "stored hash does not match the recomputed hash of the event",
                )
            })
        };
        match failure {
            Some(f) => {
                self.failure = Some(f);
                false
            }
            None => {
                self.position = e.position;
                self.hash = e.hash.clone();
                true
            }
        }
    }

    /// The verdict, also checking the stored head row and, when given, an exported head.
    pub fn finish(self, stored_head: Option<&Head>, exported: Option<&Head>) -> VerifyReport {
        if let Some(f) = self.failure {
            return f;
        }
        if let Some(h) = stored_head {
            if h.position != self.position || h.hash != self.hash {
                return VerifyReport::bad(
                    self.position.min(h.position) + 1,
                    format!(
                        "head row says position {} but the chain ends at {}",
                        h.position, self.position
                    ),
                );
            }
        }
        if let Some(x) = exported {
            if x.position > self.position {
                return VerifyReport::bad(
                    self.position + 1,
                    format!(
                        "log truncated: exported head is at position {} but the log ends at {}",
                        x.position, self.position
                    ),
                );
            }
            // Whether the exported head's hash is still on the chain is checked by the
            // caller while feeding, at that position.
        }
        VerifyReport::Ok {
            ok: true,
            verified_through: self.position,
            head_hash: self.hash,
        }
    }
}

/// Recomputes the chain of `store` up to the head it has when the call starts (appends made
/// meanwhile are left for the next run); with `exported`, also proves the log still holds
/// that head unchanged (detects truncation and rewrites behind it).
pub async fn verify(
    store: &dyn EventStore,
    exported: Option<&Head>,
) -> Result<VerifyReport, StoreError> {
    const PAGE: usize = 10_000;
    let stored_head = store.head().await?;
    let end = stored_head.position;
    let mut verifier = ChainVerifier::default();
    if end == 0 {
        return Ok(verifier.finish(Some(&stored_head), exported));
    }
    // Hashing one page (on a blocking thread) overlaps with reading the next.
    let mut page = store.read_all(0, PAGE).await?;
    while let Some(last) = page.last().map(|e| e.position) {
        let more = page.len() == PAGE && last < end;
        let exported_at = exported.cloned();
        let hashing = tokio::task::spawn_blocking(move || {
            let mut bad = None;
            for e in page.iter().take_while(|e| e.position <= end) {
                if !verifier.feed(e) {
                    break;
                }
                if let Some(x) = &exported_at {
                    if e.position == x.position && e.hash != x.hash {
                        bad = Some(VerifyReport::bad(
                            e.position,
                            "hash differs from the exported head: the log was rewritten",
                        ));
                        break;
                    }
                }
            }
            (verifier, bad)
        });
        let next = async {
            if more {
                store.read_all(last, PAGE).await
            } else {
                Ok(Vec::new())
            }
        };
        let (hashed, next) = tokio::join!(hashing, next);
        let (v, bad) =
            hashed.map_err(|e| StoreError::Database(format!("verification task: {e}")))?;
        verifier = v;
        if let Some(report) = bad {
            return Ok(report);
        }
        if verifier.failure.is_some() {
            return Ok(verifier.finish(None, None));
        }
        page = next?;
    }
    Ok(verifier.finish(Some(&stored_head), exported))
}
