//! PostgreSQL with a separate serving role (docs/OPERATIONS.md): the schema owner runs
//! `rollgate migrate` and the grants of docs/examples/postgres-serving-role.sql; `rollgate
//! serve` connected as the serving role works, and that role cannot change, delete,
//! truncate or alter the log, switch off its triggers, or move the head row. A serving role
//! facing a pending migration refuses to start with one line saying how to apply it.

mod support;

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use rollgate_auth::DevKeys;
use rollgate_testkit::TestDb;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use support::{create_rollout, http_client, spawn_server, token, wait_ready, BIN};

const GRANTS: &str = include_str!("../../../docs/examples/postgres-serving-role.sql");

fn as_role(url: &str, role: &str) -> String {
    PgConnectOptions::from_str(url)
        .expect("test URL parses")
        .username(role)
        .to_url_lossy()
        .to_string()
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connects")
}

fn migrate(url: &str) {
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", url])
        .env_remove("DATABASE_URL")
        .output()
        .expect("rollgate migrate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn the_serving_role_appends_but_cannot_rewrite_the_log() {
    let db = TestDb::postgres().await;
    migrate(&db.url);
    let role = format!("rollgate_app_{}", uuid::Uuid::new_v4().simple());
    let mut owner = connect(&db.url).await;
    owner
        .execute(format!("CREATE ROLE {role} LOGIN").as_str())
        .await
        .unwrap();
    owner
        .execute(GRANTS.replace("rollgate_app", &role).as_str())
        .await
        .expect("the documented grants run");
    let serving_url = as_role(&db.url, &role);

    // The server, connected as the serving role, serves reads and writes.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = spawn_server(&serving_url, &dir.path().join("keys"), &log);
    let client = http_client(Duration::from_secs(10));
    wait_ready(&client, &mut server, &log).await;
    let keys = DevKeys::load_or_create(dir.path().join("keys")).unwrap();
    let manager = token(&keys, "rita", &["release_manager"], &["web"]);
    let id = create_rollout(&client, &server.base, &manager, "checkout-v2").await;
    let r = client
        .post(format!("{}/v1/rollouts/{id}/notes", server.base))
        .bearer_auth(&manager)
        .json(&serde_json::json!({"audience": "internal", "text": "written by the serving role"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = client
        .get(format!("{}/v1/rollouts/{id}?min_position=2", server.base))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // What the serving role may not do, each refused by the database.
    let mut serving = connect(&serving_url).await;
    let events_before = count(&mut serving, "SELECT count(*) FROM events").await;
    assert!(events_before >= 2);
    let head_before = count(&mut serving, "SELECT position FROM event_head").await;
    for sql in [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 2",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "ALTER TABLE events ADD COLUMN forged TEXT",
        "DROP TRIGGER events_refuse_update_delete ON events",
        "DROP TABLE events",
        "ALTER TABLE event_head DISABLE TRIGGER USER",
        "UPDATE event_head SET position = 1, hash = (SELECT hash FROM events WHERE position = 1)",
        "DELETE FROM event_head",
        "TRUNCATE event_head",
        "DELETE FROM _sqlx_migrations",
        "CREATE TABLE shadow (x int)",
    ] {
        let err = serving.execute(sql).await.expect_err(sql);
        let text = err.to_string();
        assert!(
            text.contains("permission denied")
                || text.contains("must be owner")
                || text.contains("rollgate"),
            "{sql}: {text}"
        );
    }
    assert_eq!(
        count(&mut serving, "SELECT count(*) FROM events").await,
        events_before
    );
    assert_eq!(
        count(&mut serving, "SELECT position FROM event_head").await,
        head_before
    );
    let out = Command::new(BIN)
        .args(["verify", "--database-url", &serving_url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(server);
    serving.close().await.unwrap();

    // A migration pending (as after an upgrade whose `migrate` was not run): the serving
    // role cannot apply it and says so in one line.
    owner
        .execute("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .await
        .unwrap();
    let refused = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dev-keys",
            "--dev-key-dir",
        ])
        .arg(dir.path().join("keys"))
        .args(["--database-url", &serving_url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        last.contains("rollgate migrate") && last.contains("1 migration"),
        "{stderr}"
    );

    owner
        .execute(format!("DROP OWNED BY {role}").as_str())
        .await
        .unwrap();
    owner.close().await.unwrap();
    let mut admin = connect(&rollgate_testkit::admin_url()).await;
    let _ = admin.execute(format!("DROP ROLE {role}").as_str()).await;
}
