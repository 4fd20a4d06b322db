use std::collections::{BTreeSet, HashMap};

use super::*;

fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_to_embedded_sqlite_and_local_frontend() {
    let s = settings(&[]).unwrap();
    assert_eq!(s.database.url(), DEFAULT_DATABASE_URL);
    assert_eq!(s.database.pool_mode, PoolMode::Session);
    assert_eq!(s.database.max_connections, 10);
    assert_eq!(s.server.listen().to_string(), "127.0.0.1:8000");
    assert_eq!(
        s.server.cors_origins.0,
        vec![HeaderValue::from_static("http://localhost:3000")]
    );
    assert!(!s.auth.is_configured());
    assert_eq!(s.server.http_header_timeout, Duration::from_secs(10));
    assert_eq!(s.server.http_body_timeout, Duration::from_secs(30));
    assert_eq!(s.server.http_request_timeout, Duration::from_secs(60));
    assert_eq!(s.operations.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.operations.shutdown_drain_seconds, Duration::ZERO);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(s.server.worker_threads(), cores);
    assert_eq!(
        (s.limits.max_tasks_per_user, s.limits.max_in_flight_per_user),
        (10_000, 4)
    );
    assert_eq!(
        (s.limits.max_queued_per_user, s.limits.rate_limit_per_user),
        (128, 0)
    );
    assert_eq!(s.database.db_startup_timeout, Duration::from_secs(60));
    assert_eq!(s.operations.log_format, LogFormat::Text);
    assert_eq!(s.operations.metrics_addr, None);
}

/// 10 connections for a database elsewhere and for SQLite; for PostgreSQL
/// on this machine 2 per core + 2, at most 10; the variable wins.
#[test]
fn pool_size_follows_where_the_database_runs() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = u32::try_from(2 * cpus + 2).unwrap().min(10);
    let pool = |url: &str| {
        settings(&[("NEON_DATABASE_URL", url)])
            .unwrap()
            .database
            .max_connections
    };
    for url in [
        "postgres://postgres@127.0.0.1:5432/test",
        "postgresql://app:pw@localhost/app",
        "postgres://[::1]/db",
        "postgres:///db?host=/var/run/postgresql",
        "postgres://%2Fvar%2Frun%2Fpostgresql/db",
    ] {
        assert_eq!(pool(url), local, "{url}");
    }
    for url in [
        "postgres://u:p@ep-cool-123456.eu-central-1.aws.neon.tech/db?sslmode=require",
        "postgres://u@10.0.0.5/db",
        "sqlite://./todo.db?mode=rwc",
    ] {
        assert_eq!(pool(url), 10, "{url}");
    }
    let s = settings(&[
        ("NEON_DATABASE_URL", "postgres://postgres@127.0.0.1/test"),
        ("DB_MAX_CONNECTIONS", "12"),
    ]);
    assert_eq!(s.unwrap().database.max_connections, 12);
}

#[test]
fn neon_url_wins_and_empty_means_unset() {
    let s = settings(&[
        ("NEON_DATABASE_URL", "postgres://a@neon/db"),
        ("DATABASE_URL", "postgres://b@x/db"),
    ]);
    assert_eq!(s.unwrap().database.url(), "postgres://a@neon/db");
    let s = settings(&[
        ("NEON_DATABASE_URL", " "),
        ("DATABASE_URL", "postgres://b@x/db"),
    ]);
    assert_eq!(s.unwrap().database.url(), "postgres://b@x/db");
}

#[test]
fn pooler_hosts_switch_to_transaction_mode() {
    let pooled = "postgresql://u:p@ep-cool-1-pooler.eu-central-1.aws.neon.tech/db";
    assert_eq!(
        settings(&[("NEON_DATABASE_URL", pooled)])
            .unwrap()
            .database
            .pool_mode,
        PoolMode::Transaction
    );
    let s = settings(&[("NEON_DATABASE_URL", pooled), ("DB_POOL_MODE", "session")]).unwrap();
    assert_eq!(s.database.pool_mode, PoolMode::Session);
    let s = settings(&[("DB_POOL_MODE", "transaction")]).unwrap();
    assert_eq!(s.database.pool_mode, PoolMode::Transaction);
}

#[test]
fn jwks_url_is_derived_from_better_auth_url_unless_explicit() {
    let s = settings(&[("BETTER_AUTH_URL", "https://app.example.com/")]).unwrap();
    assert_eq!(
        s.auth.better_auth_jwks_url.unwrap().as_str(),
        "https://app.example.com/api/auth/jwks"
    );
    let s = settings(&[
        ("BETTER_AUTH_URL", "https://a.example"),
        ("BETTER_AUTH_JWKS_URL", "https://k.example/keys"),
    ]);
    assert_eq!(
        s.unwrap().auth.better_auth_jwks_url.unwrap().as_str(),
        "https://k.example/keys"
    );
}

#[test]
fn bad_values_name_the_variable() {
    for (k, v) in [
        ("PORT", "eighty"),
        ("HOST", "not-an-ip"),
        ("BETTER_AUTH_URL", "ftp://x"),
        ("DB_MAX_CONNECTIONS", "0"),
        ("DB_POOL_MODE", "statement"),
        ("MIGRATION_DATABASE_URL", "mysql://x"),
        ("HTTP_HEADER_TIMEOUT", "-1"),
        ("SHUTDOWN_TIMEOUT", "soon"),
        ("WORKER_THREADS", "0"),
        ("MAX_IN_FLIGHT_PER_USER", "0"),
        ("MAX_TASKS_PER_USER", "1.5"),
        ("RATE_LIMIT_PER_USER", "-3"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_ADDR", "localhost"),
        ("HTTP_REQUEST_TIMEOUT", "30"),
    ] {
        let err = settings(&[(k, v)]).err().unwrap().to_string();
        let named = if k == "MIGRATION_DATABASE_URL" {
            "database URL"
        } else {
            k
        };
        assert!(err.contains(named), "{k}: {err}");
    }
}

#[test]
fn limits_and_timeouts_are_read() {
    let s = settings(&[
        ("MAX_TASKS_PER_USER", "5"),
        ("MAX_IN_FLIGHT_PER_USER", "2"),
        ("MAX_QUEUED_PER_USER", "0"),
        ("RATE_LIMIT_PER_USER", "50"),
        ("HTTP_HEADER_TIMEOUT", "0.5"),
        ("SHUTDOWN_DRAIN_SECONDS", "3"),
        ("WORKER_THREADS", "4"),
        ("LOG_FORMAT", "json"),
        ("METRICS_ADDR", "127.0.0.1:9090"),
        ("CORS_ORIGINS", "https://a.example/, ,https://b.example"),
    ])
    .unwrap();
    assert_eq!(s.server.worker_threads(), 4);
    assert_eq!(
        (s.limits.max_tasks_per_user, s.limits.max_in_flight_per_user),
        (5, 2)
    );
    assert_eq!(
        (s.limits.max_queued_per_user, s.limits.rate_limit_per_user),
        (0, 50)
    );
    assert_eq!(s.server.http_header_timeout, Duration::from_millis(500));
    assert_eq!(s.operations.shutdown_drain_seconds, Duration::from_secs(3));
    assert_eq!(s.operations.log_format, LogFormat::Json);
    assert_eq!(s.operations.metrics_addr.unwrap().port(), 9090);
    let origins: Vec<&str> = s
        .server
        .cors_origins
        .0
        .iter()
        .map(|o| o.to_str().unwrap())
        .collect();
    assert_eq!(origins, ["https://a.example", "https://b.example"]);
}

#[test]
fn redacted_urls_show_no_password_in_user_info_or_query() {
    assert_eq!(
        redact_url("postgres://u:hunter2@h:5432/db?sslmode=require"),
        "postgres://u:***@h:5432/db?sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://u@h/db?sslmode=require&password=hunter2&sslpassword=x%26y"),
        "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
    );
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn debug_output_never_shows_secrets() {
    let s = settings(&[
        ("BETTER_AUTH_SECRET", "s3cr3t-value"),
        ("DATABASE_URL", "postgres://u:hunter2@h/db"),
        ("MIGRATION_DATABASE_URL", "postgres://u:hunter3@h/db"),
    ])
    .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("s3cr3t-value") && !shown.contains("hunter2") && !shown.contains("hunter3"),
        "{shown}"
    );
}

/// The README's configuration table and `--help` name the same variables,
/// and each default `--help` states is the README's.
#[test]
fn the_readme_table_is_the_help() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = HashMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        for name in cells[0].split('`').skip(1).step_by(2) {
            rows.insert(name.to_owned(), cells.last().unwrap().to_owned());
        }
    }
    let mut command = Settings::arguments(clap::Command::new("todo-api"));
    let help = command.render_long_help().to_string();
    let mut in_help = BTreeSet::new();
    for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let Some(text) = arg.get_help().map(ToString::to_string) else {
            continue;
        };
        let Some(env) = text
            .split("[env: ")
            .nth(1)
            .and_then(|e| e.strip_suffix(']'))
        else {
            continue;
        };
        assert!(help.contains(&format!("[env: {env}]")), "{env} in --help");
        in_help.insert(env.to_owned());
        let row = rows
            .get(env)
            .unwrap_or_else(|| panic!("{env} is in --help, not in the README's table"));
        for default in arg.get_default_values() {
            let default = default.to_str().unwrap();
            assert!(
                row.contains(&format!("`{default}`")),
                "{env}: --help says {default}, the README {row}"
            );
        }
    }
    // RUST_LOG is tracing's own, read by the log filter, not a flag.
    let documented: BTreeSet<String> = rows.into_keys().filter(|name| name != "RUST_LOG").collect();
    assert_eq!(documented, in_help);
}
