//! Settings from the environment (and `.env`, loaded by `main`).
//! Everything is parsed once at start-up; requests never touch the environment.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderValue;
use url::Url;

/// Used when neither `NEON_DATABASE_URL` nor `DATABASE_URL` is set: a newcomer's
/// first run works with no database server.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://todo.db?mode=rwc";
pub const DEFAULT_CORS_ORIGIN: &str = "http://localhost:3000";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "no token verification configured: set BETTER_AUTH_SECRET (HS256 tokens) and/or \
         BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL (Better Auth JWT plugin), or run `todo-api serve --dev`"
    )]
    NoAuth,
}

#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub auth: AuthSettings,
    pub cors_origins: Vec<HeaderValue>,
    pub listen: SocketAddr,
    /// Upper bound of the connection pool (`DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
}

#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Raw bytes of `BETTER_AUTH_SECRET`, the HMAC key for HS256/384/512.
    pub secret: Option<Vec<u8>>,
    /// Where the Better Auth JWT plugin publishes its public keys.
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthSettings {
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.jwks_url.is_some()
    }
}

// Hand-written so that a stray `{:?}` can never print the secret.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("jwks_url", &self.jwks_url.as_ref().map(Url::as_str))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("auth", &self.auth)
            .field("cors_origins", &self.cors_origins)
            .field("listen", &self.listen)
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

impl Settings {
    /// Reads the process environment. Missing auth is not an error here: the
    /// caller decides (`serve --dev` may supply a secret of its own).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Settings::from_env`], reading variables through `get`
    /// (tests pass a map instead of mutating the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty variable means unset, as in a `.env` with `KEY=`.
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let database_url = var("NEON_DATABASE_URL")
            .or_else(|| var("DATABASE_URL"))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                name: "NEON_DATABASE_URL",
                reason: "must start with postgres://, postgresql:// or sqlite:".into(),
            });
        }

        let better_auth_url = var("BETTER_AUTH_URL")
            .map(|v| parse_url("BETTER_AUTH_URL", &v))
            .transpose()?;
        let jwks_url = match var("BETTER_AUTH_JWKS_URL") {
            Some(v) => Some(parse_url("BETTER_AUTH_JWKS_URL", &v)?),
            None => better_auth_url.map(|base| jwks_url_from_base(&base)),
        };
        let auth = AuthSettings {
            // Better Auth signs HS256 tokens with the secret's raw bytes; not trimmed
            // beyond what `var` does, as surrounding whitespace is never intended.
            secret: var("BETTER_AUTH_SECRET").map(String::into_bytes),
            jwks_url,
            issuer: var("JWT_ISSUER"),
            audience: var("JWT_AUDIENCE"),
        };

        let cors_origins = var("CORS_ORIGINS")
            .unwrap_or_else(|| DEFAULT_CORS_ORIGIN.to_owned())
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                // Browsers send the origin without a trailing slash.
                HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| ConfigError::Invalid {
                    name: "CORS_ORIGINS",
                    reason: format!("{o:?} is not a valid origin"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let host: IpAddr = var("HOST")
            .as_deref()
            .unwrap_or("127.0.0.1")
            .parse()
            .map_err(|_| ConfigError::Invalid {
                name: "HOST",
                reason: "must be an IP address".into(),
            })?;
        let port: u16 = var("PORT")
            .as_deref()
            .unwrap_or("8000")
            .parse()
            .map_err(|_| ConfigError::Invalid {
                name: "PORT",
                reason: "must be a number from 0 to 65535".into(),
            })?;
        let db_max_connections: u32 = match var("DB_MAX_CONNECTIONS") {
            None => 10,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Invalid {
                    name: "DB_MAX_CONNECTIONS",
                    reason: "must be a positive number".into(),
                })?,
        };

        Ok(Settings {
            database_url,
            auth,
            cors_origins,
            listen: SocketAddr::new(host, port),
            db_max_connections,
        })
    }
}

fn parse_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    Ok(url)
}

/// `{BETTER_AUTH_URL}/api/auth/jwks`, whether or not the base ends in a slash.
fn jwks_url_from_base(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/api/auth/jwks", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// The URL with any password replaced, safe for a log line.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            s.cors_origins,
            vec![HeaderValue::from_static("http://localhost:3000")]
        );
        assert!(!s.auth.is_configured());
    }

    #[test]
    fn neon_url_wins_over_database_url() {
        let s = settings(&[
            ("NEON_DATABASE_URL", "postgres://a@neon/db"),
            ("DATABASE_URL", "postgres://b@x/db"),
        ])
        .unwrap();
        assert_eq!(s.database_url, "postgres://a@neon/db");
        let s = settings(&[
            ("NEON_DATABASE_URL", ""),
            ("DATABASE_URL", "postgres://b@x/db"),
        ])
        .unwrap();
        assert_eq!(s.database_url, "postgres://b@x/db");
    }

    #[test]
    fn jwks_url_is_derived_from_better_auth_url_unless_explicit() {
        let s = settings(&[("BETTER_AUTH_URL", "https://app.example.com/")]).unwrap();
        assert_eq!(
            s.auth.jwks_url.unwrap().as_str(),
            "https://app.example.com/api/auth/jwks"
        );
        let s = settings(&[
            ("BETTER_AUTH_URL", "https://a.example"),
            ("BETTER_AUTH_JWKS_URL", "https://k.example/keys"),
        ])
        .unwrap();
        assert_eq!(s.auth.jwks_url.unwrap().as_str(), "https://k.example/keys");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("PORT", "eighty"),
            ("HOST", "not-an-ip"),
            ("BETTER_AUTH_URL", "ftp://x"),
            ("DB_MAX_CONNECTIONS", "0"),
        ] {
            let err = settings(&[(k, v)]).err().unwrap().to_string();
            assert!(err.starts_with(k), "{err}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = settings(&[
            ("BETTER_AUTH_SECRET", "s3cr3t-value"),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t-value") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
