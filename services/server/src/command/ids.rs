//! Ids a command mints: its events' ids and the ids of what it creates (rollouts, advance
//! requests, deviations...). With an `Idempotency-Key` they are derived from (caller, key, request),
//! so a command run again after a lost reply makes the very same ids, and the store's
//! idempotent append (or [`crate::command::execute`]'s look-up of the first event id)
//! recognises the rerun instead of writing twice. Without a key they are random.

use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Clone, Debug)]
pub enum Ids {
    Random,
    /// SHA-256 of (caller, key, request): every id is a UUIDv8 from a hash of this seed and a label.
    Derived([u8; 32]),
}

impl Ids {
    /// Ids derived from the caller's subject, the request's `Idempotency-Key` and the
    /// request's fingerprint (the same key on another request after the record expired
    /// makes other ids).
    pub fn derived(subject: &str, key: &str, fingerprint: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"rollgate/idempotency/v1\0");
        h.update(subject.as_bytes());
        h.update(b"\0");
        h.update(key.as_bytes());
        h.update(b"\0");
        h.update(fingerprint.as_bytes());
        Ids::Derived(h.finalize().into())
    }

    pub fn is_derived(&self) -> bool {
        matches!(self, Ids::Derived(_))
    }

    /// The id of what the command creates, named by `label` (`rollout`, `request`, ...).
    pub fn named(&self, label: &str) -> Uuid {
        match self {
            Ids::Random => Uuid::new_v4(),
            Ids::Derived(seed) => {
                let mut h = Sha256::new();
                h.update(seed);
                h.update(label.as_bytes());
                let digest: [u8; 32] = h.finalize().into();
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_custom_bytes(bytes).into_uuid()
            }
        }
    }

    /// The id of the command's `index`-th event.
    pub fn event(&self, index: usize) -> Uuid {
        self.named(&format!("event/{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_depend_on_caller_key_and_label_only() {
        let a = Ids::derived("alice", "k-1", "f");
        assert_eq!(a.event(0), Ids::derived("alice", "k-1", "f").event(0));
        assert_ne!(a.event(0), a.event(1));
        assert_ne!(a.event(0), Ids::derived("bob", "k-1", "f").event(0));
        assert_ne!(a.event(0), Ids::derived("alice", "k-2", "f").event(0));
        assert_ne!(a.event(0), Ids::derived("alice", "k-1", "g").event(0));
        assert_ne!(a.named("rollout"), a.named("request"));
        assert_eq!(a.event(0).get_version_num(), 8);
        assert_ne!(Ids::Random.event(0), Ids::Random.event(0));
    }
}
