//! Redis: `redis://` and `rediss://` clients, shared by the dedup store and
//! the queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // TLS, checked against the system's roots (or `Some(path)` to a CA file):
//! let client = hookgate_backend::redis::client("rediss://cache.example.com:6380", None)?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let _: String = redis::cmd("PING").query_async(&mut conn).await?;
//! # Ok(()) }
//! ```
//!
//! # TLS
//! A `rediss://` URL connects with TLS and checks the server's certificate
//! chain and host name (rustls) against the system's root certificates, or
//! only against the certificates of the PEM file given as `root_cert`
//! (`--store-ca` / `HOOKGATE_STORE_CA` in the CLI). `rediss://..#insecure`,
//! which the driver reads as "accept any certificate", is refused: it is
//! too easy to leave in a production URL.

use std::path::Path;

use crate::{BackendError, ErrorClass};

/// A Redis client for `url`; connects lazily.
///
/// # Errors
/// [`BackendError::InvalidUrl`] for a malformed URL (without echoing it),
/// a `#insecure` URL, or a `root_cert` given for a plain `redis://` URL;
/// [`BackendError::Tls`] if `root_cert` cannot be read.
pub fn client(url: &str, root_cert: Option<&Path>) -> Result<redis::Client, BackendError> {
    let tls = url.starts_with("rediss://");
    if tls && url.ends_with("#insecure") {
        return Err(BackendError::InvalidUrl(
            "rediss://...#insecure turns certificate checks off; give the server's CA with a root certificate file instead".into(),
        ));
    }
    let invalid = |e: redis::RedisError| {
        BackendError::InvalidUrl(format!(
            "not a Redis URL: {}",
            e.detail().unwrap_or("malformed")
        ))
    };
    match root_cert {
        None => redis::Client::open(url).map_err(invalid),
        Some(_) if !tls => Err(BackendError::InvalidUrl(
            "a CA file was given but the URL is redis://, which does not use TLS (use rediss://)"
                .into(),
        )),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                BackendError::tls(
                    format!("cannot read the root certificate file {}", path.display()),
                    e,
                )
            })?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(invalid)
        }
    }
}

/// The node URLs of a `redis+cluster://host:port,host:port[/]` URL (or
/// `rediss+cluster://` for TLS), as `redis://host:port` (`rediss://`) URLs
/// with the user and password of the first; `None` when `url` is not a
/// cluster URL.
///
/// ```
/// let nodes = hookgate_backend::redis::cluster_nodes("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000").unwrap();
/// assert_eq!(nodes, ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"]);
/// ```
#[must_use]
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{auth}{h}"))
            .collect(),
    )
}

/// A Redis Cluster client seeded with `nodes` (`redis://` or `rediss://`
/// URLs, all one or the other); it discovers the rest of the cluster and
/// follows `MOVED`/`ASK` redirections. TLS as for [`client`].
///
/// # Errors
/// [`BackendError::InvalidUrl`] for no nodes, a malformed URL, mixed or
/// `#insecure` URLs, or a `root_cert` with plain `redis://`;
/// [`BackendError::Tls`] if `root_cert` cannot be read.
pub fn cluster_client(
    nodes: &[String],
    root_cert: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<redis::cluster::ClusterClient, BackendError> {
    if nodes.is_empty() {
        return Err(BackendError::InvalidUrl(
            "a Redis Cluster URL needs at least one host:port".into(),
        ));
    }
    let tls = nodes[0].starts_with("rediss://");
    if nodes.iter().any(|n| n.starts_with("rediss://") != tls) {
        return Err(BackendError::InvalidUrl(
            "the cluster's node URLs mix redis:// and rediss://".into(),
        ));
    }
    for node in nodes {
        // The same checks as for one server (the client itself is dropped).
        if root_cert.is_none() || !tls {
            client(node, root_cert)?;
        } else if node.ends_with("#insecure") {
            client(node, None)?;
        }
    }
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(1);
    if let Some(path) = root_cert.filter(|_| tls) {
        let pem = std::fs::read(path).map_err(|e| {
            BackendError::tls(
                format!("cannot read the root certificate file {}", path.display()),
                e,
            )
        })?;
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
    }
    builder.build().map_err(|e| {
        BackendError::InvalidUrl(format!(
            "not a Redis Cluster URL: {}",
            e.detail().unwrap_or("malformed")
        ))
    })
}

/// What a Redis error means for the caller: I/O, timeouts, refused
/// connections, a loading or read-only replica and cluster moves are
/// Unavailable; authentication, TLS and a wrong value type are Misconfigured.
pub fn classify(error: &redis::RedisError) -> ErrorClass {
    use redis::ErrorKind as K;
    if describe_tls(error).is_some() {
        return ErrorClass::Misconfigured;
    }
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return ErrorClass::Unavailable;
    }
    match error.kind() {
        K::BusyLoadingError
        | K::TryAgain
        | K::ClusterDown
        | K::MasterDown
        | K::ReadOnly
        | K::Moved
        | K::Ask => ErrorClass::Unavailable,
        K::AuthenticationFailed | K::TypeError | K::InvalidClientConfig | K::NoScriptError => {
            ErrorClass::Misconfigured
        }
        K::ResponseError
            if error.code() == Some("WRONGTYPE")
                || error.code() == Some("NOAUTH")
                || error.code() == Some("NOPERM") =>
        {
            ErrorClass::Misconfigured
        }
        _ => ErrorClass::Other,
    }
}

/// A one-line description for logs and CLI messages: which TLS check
/// failed, else the driver's message. Never includes the URL.
pub fn describe(error: &redis::RedisError) -> String {
    describe_tls(error).unwrap_or_else(|| error.to_string())
}

fn describe_tls(error: &redis::RedisError) -> Option<String> {
    // redis 0.27 keeps the I/O error (and the rustls error inside it) behind
    // the deprecated `cause`, which cannot be downcast, so read rustls's own
    // wording ("invalid peer certificate: UnknownIssuer") from the message.
    let text = error.to_string();
    let detail = text.split("invalid peer certificate: ").nth(1)?;
    Some(if detail.starts_with("UnknownIssuer") {
        crate::tls::UNKNOWN_ISSUER.to_owned()
    } else if detail.starts_with("NotValidForName") {
        crate::tls::WRONG_NAME.to_owned()
    } else if detail.starts_with("Expired") {
        crate::tls::EXPIRED.to_owned()
    } else {
        format!("TLS handshake failed: invalid peer certificate: {detail}")
    })
}
