//! Neon-style URLs: `sslmode=require&channel_binding=require` are accepted and
//! the connection really is TLS (checked from the server side, pg_stat_ssl).

use crate::common::{Backend, TestApp, TestDb};
use sea_orm::{ConnectionTrait, Database, Statement};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neon_style_url_connects_over_tls() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let admin = Database::connect(crate::common::admin_database_url())
        .await
        .unwrap();
    let backend = admin.get_database_backend();
    let ssl = admin
        .query_one_raw(Statement::from_string(backend, "SHOW ssl"))
        .await
        .unwrap()
        .unwrap();
    if ssl.try_get::<String>("", "ssl").unwrap() != "on" {
        eprintln!("\n!!!!! SKIPPED: TLS test: this PostgreSQL server has ssl = off !!!!!\n");
        return;
    }
    let neon_url = format!("{}?sslmode=require&channel_binding=require", db.url);
    let app = TestApp::builder(Backend::Postgres)
        .database_url(neon_url)
        .start()
        .await
        .unwrap();
    let token = app.token("alice");
    app.create(&token, serde_json::json!({"title": "over TLS"}))
        .await;

    // Every connection the app holds to its database is encrypted.
    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let sql = format!(
        "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{name}'"
    );
    let row = admin
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .unwrap();
    let total: i64 = row.try_get("", "total").unwrap();
    let encrypted: i64 = row.try_get("", "encrypted").unwrap();
    assert!(total >= 1, "the app keeps a pooled connection");
    assert_eq!(encrypted, total, "all of the app's connections use TLS");
    drop(app);
    let _ = admin.close().await;
}
