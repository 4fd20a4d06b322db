//! PostgreSQL isolates users itself: row-level security, forced, on every
//! table that holds user data; requests run as `todo_request`, which does
//! not bypass it, with their user set inside their transaction; no setting,
//! no row. And it is a second line, not a copy of the first: with the
//! store's own `user_id` conditions taken out (a test-only switch of debug
//! builds), every isolation check still passes, and fails once row-level
//! security is off too.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DbErr, Statement, TransactionTrait};
use serde_json::{Value, json};

use crate::common::pgbouncer::PgBouncer;
use crate::common::{Backend, TestApp, TestDb, json as body};
use crate::isolation;

const USER_TABLES: [&str; 4] = ["tasks", "task_lists", "idempotency_keys", "task_tombstones"];

async fn rows(db: &impl ConnectionTrait, sql: &str) -> Vec<Value> {
    use sea_orm::{FromQueryResult, JsonValue};
    JsonValue::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .all(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn one(db: &impl ConnectionTrait, sql: &str) -> Value {
    rows(db, sql).await.into_iter().next().expect("a row")
}

/// What a fresh database served by the app looks like in the catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_table_forces_row_level_security_for_a_role_that_cannot_bypass_it() {
    let Some(app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let db = app.db.connect().await;
    for table in USER_TABLES {
        let row = one(
            &db,
            &format!(
                "SELECT c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, \
                 (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)::int AS policies \
                 FROM pg_class c WHERE c.oid = '{table}'::regclass"
            ),
        )
        .await;
        assert_eq!(row["enabled"], true, "{table}");
        assert_eq!(row["forced"], true, "{table}");
        assert!(row["policies"].as_i64().unwrap() >= 1, "{table}: {row}");
    }
    let role = one(
        &db,
        "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb \
         FROM pg_roles WHERE rolname = 'todo_request'",
    )
    .await;
    assert_eq!(
        role,
        json!({"rolcanlogin": false, "rolsuper": false, "rolbypassrls": false,
               "rolcreaterole": false, "rolcreatedb": false})
    );
    // What requests do, on the user tables only.
    let granted = rows(
        &db,
        "SELECT t, string_agg(p, ',' ORDER BY p) AS p \
         FROM unnest(ARRAY['tasks', 'task_lists', 'idempotency_keys', 'service_probe', 'seaql_migrations']) AS t, \
              unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p \
         WHERE has_table_privilege('todo_request', t, p) GROUP BY t ORDER BY t",
    )
    .await;
    let user_table = "DELETE,INSERT,SELECT,UPDATE";
    assert_eq!(
        granted,
        vec![
            json!({"t": "idempotency_keys", "p": user_table}),
            json!({"t": "task_lists", "p": user_table}),
            json!({"t": "tasks", "p": user_table}),
        ]
    );
    let _ = db.close().await;
}

/// The role a request's statements run as, and the user they run for,
/// as PostgreSQL sees them: columns that default to `current_user` and to
/// the setting, filled in by a create through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_as_the_request_role_with_their_user_set() {
    let Some(app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let db = app.db.connect().await;
    db.execute_unprepared(
        "ALTER TABLE tasks ADD COLUMN written_by text DEFAULT current_user, \
         ADD COLUMN written_for text DEFAULT current_setting('todo.user_id', true)",
    )
    .await
    .unwrap();
    let alice = app.token("alice");
    let created = app.create(&alice, json!({"title": "whose?"})).await;
    let row = one(
        &db,
        &format!(
            "SELECT written_by, written_for, session_user::text AS connected_as FROM tasks WHERE id = {}",
            created["id"]
        ),
    )
    .await;
    assert_eq!(row["written_by"], "todo_request", "{row}");
    assert_eq!(row["written_for"], "alice", "{row}");
    let _ = db.close().await;
}

/// Directly, the pool's connections are the request role from their start;
/// the service's own work leaves it for its transaction: start-up's write
/// probe runs as the login role, and a request after it on the same pool
/// as the request role again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_work_runs_as_the_login_role_and_requests_never_do() {
    let Some(mut first) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    first.stop().await;
    let db = first.db.connect().await;
    db.execute_unprepared(
        "ALTER TABLE service_probe ADD COLUMN probed_by text DEFAULT current_user, \
           ADD COLUMN probed_on int DEFAULT pg_backend_pid(); \
         DELETE FROM service_probe; \
         ALTER TABLE tasks ADD COLUMN written_by text DEFAULT current_user, \
           ADD COLUMN written_on int DEFAULT pg_backend_pid()",
    )
    .await
    .unwrap();
    let app = first
        .restart_builder(Backend::Postgres)
        .env("DB_MAX_CONNECTIONS", "1")
        .start()
        .await
        .expect("starts again");
    let probe = one(&db, "SELECT probed_by, probed_on FROM service_probe").await;
    let login = one(&db, "SELECT session_user::text AS login").await;
    assert_eq!(probe["probed_by"], login["login"], "{probe}");
    assert_ne!(probe["probed_by"], "todo_request");
    // One connection: the probe's, which a request reuses.
    let created = app
        .create(&app.token("alice"), json!({"title": "after the probe"}))
        .await;
    let row = one(
        &db,
        &format!(
            "SELECT written_by, written_on FROM tasks WHERE id = {}",
            created["id"]
        ),
    )
    .await;
    assert_eq!(row["written_by"], "todo_request", "{row}");
    assert_eq!(row["written_on"], probe["probed_on"], "the same connection");
    let _ = db.close().await;
}

/// The URL's own startup options (`options=-c ...`, as libpq reads them)
/// are kept beside the ones the pool adds (the timeout, the request role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_urls_own_startup_options_are_kept() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    // Written as libpq reads it: `%20` a space (a `+` would be a plus).
    let mut url = url::Url::parse(&db.url).expect("a URL");
    let options = "options=-c%20application_name%3Dfrom-the-url";
    let query = [url.query(), Some(options)].into_iter().flatten();
    url.set_query(Some(&query.collect::<Vec<_>>().join("&")));
    let app = TestApp::builder(Backend::Postgres)
        .database(db)
        .database_url(url.to_string())
        .start()
        .await
        .expect("starts");
    let created = app.create(&app.token("alice"), json!({"title": "t"})).await;
    assert!(created["id"].is_i64(), "{created}");
    let db = app.db.connect().await;
    let seen = one(
        &db,
        "SELECT count(*)::int AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'from-the-url'",
    )
    .await;
    assert!(seen["n"].as_i64().unwrap() >= 1, "{seen}");
    let _ = db.close().await;
}

/// As the request role: no setting, no row (and no write) but expired
/// keys, which the purge deletes; another user's rows neither seen nor
/// changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_user_set_the_request_role_sees_and_writes_nothing() {
    let Some(app) = TestApp::start(Backend::Postgres).await else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    app.create(&alice, json!({"title": "a"})).await;
    let bobs = app.create(&bob, json!({"title": "b"})).await;
    let db = app.db.connect().await;
    db.execute_unprepared(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, created_at) \
         VALUES ('bob', 'old', 'f', 201, now() - interval '2 days'), ('bob', 'live', 'f', 201, now())",
    )
    .await
    .unwrap();

    let as_request = |user: Option<&'static str>| {
        let db = &db;
        async move {
            let txn = db.begin().await.unwrap();
            txn.execute_unprepared("SET LOCAL ROLE todo_request")
                .await
                .unwrap();
            if let Some(user) = user {
                txn.execute_unprepared(&format!(
                    "SELECT set_config('todo.user_id', '{user}', true)"
                ))
                .await
                .unwrap();
            }
            txn
        }
    };
    // No setting at all, and the empty one a setting leaves behind.
    for user in [None, Some("")] {
        let txn = as_request(user).await;
        for table in ["tasks", "task_lists"] {
            let n = one(&txn, &format!("SELECT count(*)::int AS n FROM {table}")).await;
            assert_eq!(n["n"], 0, "{table} with {user:?}");
        }
        // Outside a request, expired keys only (for the purge).
        let keys = rows(&txn, "SELECT key FROM idempotency_keys").await;
        assert_eq!(keys, vec![json!({"key": "old"})], "with {user:?}");
        let refused: Result<_, DbErr> = txn
            .execute_unprepared(
                "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) \
                                 VALUES ('alice', 'x', false, now(), now())",
            )
            .await;
        let refused = refused.expect_err("a write with no user set");
        assert!(
            refused.to_string().contains("row-level security"),
            "{refused}"
        );
        txn.rollback().await.unwrap();
    }
    // Alice's transaction: her row only; Bob's neither changed nor deleted,
    // nor written in his name.
    let txn = as_request(Some("alice")).await;
    let seen = rows(&txn, "SELECT user_id FROM tasks").await;
    assert_eq!(seen, vec![json!({"user_id": "alice"})]);
    let id = bobs["id"].as_i64().unwrap();
    for sql in [
        format!("UPDATE tasks SET title = 'pwned' WHERE id = {id}"),
        format!("DELETE FROM tasks WHERE id = {id}"),
        "DELETE FROM idempotency_keys".to_owned(),
        "UPDATE task_lists SET task_count = 0 WHERE user_id = 'bob'".to_owned(),
    ] {
        let done = txn.execute_unprepared(&sql).await.unwrap();
        assert_eq!(done.rows_affected(), 0, "{sql}");
    }
    let forged = txn
        .execute_unprepared(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) \
                             VALUES ('bob', 'forged', false, now(), now())",
        )
        .await;
    assert!(forged.is_err(), "a row in another user's name");
    txn.rollback().await.unwrap();
    // The purge (the service's own work, no user set): expired keys only.
    let purged = db
        .execute_unprepared(
            "SET ROLE todo_request; DELETE FROM idempotency_keys WHERE true; RESET ROLE",
        )
        .await;
    assert!(purged.is_ok(), "{purged:?}");
    let left = rows(&db, "SELECT key FROM idempotency_keys").await;
    assert_eq!(
        left,
        vec![json!({"key": "live"})],
        "the expired key only is gone"
    );
    let still = one(&db, &format!("SELECT title FROM tasks WHERE id = {id}")).await;
    assert_eq!(still["title"], "b");
    let _ = db.close().await;
}

/// The store's `user_id` conditions taken out: row-level security alone
/// passes every isolation check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_alone_keeps_users_apart() {
    let Some(app) = TestApp::builder(Backend::Postgres)
        .env("TEST_ONLY_WITHOUT_OWNER_FILTER", "true")
        .start()
        .await
    else {
        return;
    };
    isolation::users_cannot_see_or_touch_each_other_in(&app, "alice", "bob").await;
    isolation::same_title_different_users_in(&app, "carol", "dave").await;
    keyed_creates_stay_apart(&app).await;
}

/// The same checks with row-level security off too (the test database's
/// role is a superuser: no policy binds it) fail: they can see a leak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_neither_filter_the_isolation_checks_fail() {
    let Some(app) = TestApp::builder(Backend::Postgres)
        .env("TEST_ONLY_WITHOUT_OWNER_FILTER", "true")
        .env("DB_ROW_LEVEL_SECURITY", "off")
        .start()
        .await
    else {
        return;
    };
    let checks = [
        AssertUnwindSafe(isolation::users_cannot_see_or_touch_each_other_in(
            &app, "alice", "bob",
        ))
        .catch_unwind()
        .await,
        AssertUnwindSafe(isolation::same_title_different_users_in(
            &app, "carol", "dave",
        ))
        .catch_unwind()
        .await,
    ];
    for (i, outcome) in checks.into_iter().enumerate() {
        assert!(
            outcome.is_err(),
            "check {i} passed with no isolation at all"
        );
    }
}

/// The same key from two users makes two tasks, each replayed to its owner.
async fn keyed_creates_stay_apart(app: &TestApp) {
    let mut created = Vec::new();
    for user in ["erin", "frank"] {
        let token = app.token(user);
        let send = || {
            app.request(Method::POST, "/api/tasks", &token)
                .header("Idempotency-Key", "same-key")
                .json(&json!({"title": "same body"}))
                .send()
        };
        let (status, first) = body(send().await.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let (status, again) = body(send().await.unwrap()).await;
        assert_eq!((status, &again), (StatusCode::CREATED, &first));
        assert_eq!(first["user_id"], user);
        created.push(first["id"].clone());
    }
    assert_ne!(created[0], created[1]);
}

/// Through PgBouncer in transaction mode, on ONE server connection, two
/// users' requests interleave; the store's own conditions are off, so only
/// settings made inside each transaction keep them apart. Nothing is left
/// on the server connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_on_one_pooled_server_connection_never_see_each_other() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let direct = url::Url::parse(&db.url).unwrap();
    let Some(bouncer) = PgBouncer::start_with_pool_size(
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432),
        direct.username(),
        1,
    ) else {
        return;
    };
    let mut pooled = direct.clone();
    pooled.set_port(Some(bouncer.port)).unwrap();
    let pooled = pooled.to_string();
    let app = TestApp::builder(Backend::Postgres)
        .database(db)
        .database_url(pooled.clone())
        .env("DB_POOL_MODE", "transaction")
        .env("TEST_ONLY_WITHOUT_OWNER_FILTER", "true")
        .start()
        .await
        .unwrap();
    let users = ["alice", "bob"];
    let rounds = 40;
    let work = users.map(|user| {
        let app = &app;
        async move {
            let token = app.token(user);
            for i in 0..rounds {
                let task = app
                    .create(&token, json!({"title": format!("{user} {i}")}))
                    .await;
                assert_eq!(task["user_id"], user);
                let (status, list) = app.list(&token, "").await;
                assert_eq!(status, StatusCode::OK);
                let list = list.as_array().unwrap();
                assert_eq!(list.len(), i + 1, "{user} sees exactly their own");
                assert!(
                    list.iter().all(|t| t["user_id"] == user),
                    "{user}: {list:?}"
                );
            }
        }
    });
    futures::future::join_all(work).await;

    // The one server connection, now a plain session through the pooler.
    let (session, connection) = tokio_postgres::connect(&pooled, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let left = session
        .query_one(
            "SELECT current_user::text, coalesce(current_setting('todo.user_id', true), '')",
            &[],
        )
        .await
        .unwrap();
    let (role, user): (String, String) = (left.get(0), left.get(1));
    assert_ne!(role, "todo_request");
    assert_eq!(user, "");
    drop(session);
    drop(bouncer);
}
