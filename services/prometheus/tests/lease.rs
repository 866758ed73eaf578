//! The evaluator lease on both databases: one holder, renewal, takeover after expiry.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rollgate_domain::RolloutId;
use rollgate_prometheus::Leases;
use rollgate_store::{BackendKind, StoreOptions};
use rollgate_testkit::TestDb;

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

async fn holder_rules(kind: BackendKind) {
    let db = TestDb::new(kind).await;
    let store = db.store(StoreOptions::default()).await;
    let ttl = Duration::from_secs(5);
    let a = Leases::new(store.pool(), "instance-a", ttl);
    let b = Leases::new(store.pool(), "instance-b", ttl);
    let rollout = RolloutId::new(uuid::Uuid::new_v4());
    let other = RolloutId::new(uuid::Uuid::new_v4());

    assert!(
        a.acquire(&rollout, at(0)).await.unwrap(),
        "a takes a free lease"
    );
    assert!(
        !b.acquire(&rollout, at(1)).await.unwrap(),
        "b cannot take a held lease"
    );
    assert!(
        b.acquire(&other, at(1)).await.unwrap(),
        "leases are per rollout"
    );
    assert!(a.acquire(&rollout, at(3)).await.unwrap(), "a renews");
    assert!(
        !b.acquire(&rollout, at(7)).await.unwrap(),
        "renewed until 8"
    );
    let row = a.holder(&rollout).await.unwrap().unwrap();
    assert_eq!(row.owner, "instance-a");
    assert_eq!(row.expires_at_ms, at(8).timestamp_millis());

    assert!(
        b.acquire(&rollout, at(8)).await.unwrap(),
        "b takes over once expired"
    );
    assert!(!a.acquire(&rollout, at(9)).await.unwrap(), "a lost it");

    a.release(&rollout).await.unwrap();
    assert_eq!(
        a.holder(&rollout).await.unwrap().unwrap().owner,
        "instance-b",
        "only the holder can release"
    );
    b.release(&rollout).await.unwrap();
    assert_eq!(a.holder(&rollout).await.unwrap(), None);
    assert!(a.acquire(&rollout, at(10)).await.unwrap(), "free again");
}

#[tokio::test]
async fn one_holder_renewal_and_takeover_on_postgres() {
    holder_rules(BackendKind::Postgres).await;
}

#[tokio::test]
async fn one_holder_renewal_and_takeover_on_sqlite() {
    holder_rules(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claimants_exactly_one_wins_on_postgres() {
    let db = TestDb::new(BackendKind::Postgres).await;
    let store = db.store(StoreOptions::default()).await;
    for round in 0..5 {
        let rollout = Arc::new(RolloutId::new(uuid::Uuid::new_v4()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let leases = Leases::new(
                store.pool(),
                format!("instance-{i}"),
                Duration::from_secs(5),
            );
            let rollout = rollout.clone();
            tasks.push(tokio::spawn(async move {
                leases.acquire(&rollout, at(round)).await.unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            if t.await.unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
