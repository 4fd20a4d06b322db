//! What a database URL says: where the database runs, whether a pooler sits
//! in front of it, and how to print it without its password.

use std::net::IpAddr;

use url::Url;

/// Neon's pooled hosts are `ep-...-pooler.<region>...`: PgBouncer in transaction mode.
pub fn is_pooler(url: &str) -> bool {
    Url::parse(url)
        .ok()
        .and_then(|u| Some(u.host_str()?.contains("-pooler")))
        == Some(true)
}

/// 10, unless PostgreSQL runs on this machine (a loopback host or a Unix
/// socket): its backends then share the service's cores, where connections
/// beyond 2 per core (+2) only queue inside PostgreSQL (docs/performance.md).
pub fn default_pool_size(url: &str) -> u32 {
    let Ok(parsed) = Url::parse(url) else {
        return 10;
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return 10;
    }
    let socket = parsed
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    let local = socket
        || match parsed.host() {
            None => true,
            // Not a special scheme: the URL standard leaves its IPv4 hosts as text.
            Some(url::Host::Domain(d)) => {
                d.is_empty()
                    || d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().starts_with("%2f")
                    || d.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if local {
        u32::try_from(cpus * 2 + 2).unwrap_or(10).min(10)
    } else {
        10
    }
}

/// The URL with any password replaced, fit for a log line (also libpq's
/// `password` and `sslpassword` query parameters).
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        return "<unparsable url>".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let secret = |key: &str| key.to_ascii_lowercase().contains("password");
    if url.query_pairs().any(|(key, _)| secret(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    if secret(&k) {
                        "***".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}
