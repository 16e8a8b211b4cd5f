//! The audit trail of endpoint changes: who changed what, and when.
//!
//! Every change to an endpoint made through [`Sender`](crate::Sender)
//! (created, URLs, secrets rotated, headers, other settings, enabled or
//! disabled and why, removed, re-encrypted) is appended to the queue's
//! audit trail ([`Queue::append_audit`]) with the store's time and an
//! **actor**, a string the caller passes ([`Sender::with_actor`](crate::Sender::with_actor);
//! `hookgate` passes the OS user). Entries never hold secret or header
//! values: URLs are masked ([`redact::url`](crate::redact::url)), headers
//! are named, secrets counted. Read it with [`Queue::endpoint_history`] or
//! `hookgate endpoint history ID`; the maintenance
//! [`Pruner`](crate::maintenance::Pruner) deletes entries older than its
//! audit retention.
//!
//! ```
//! use hookgate_core::Scheme;
//! use hookgate_sender::{audit::Change, Endpoint};
//! let a = Endpoint::new("e", "https://a.example/h?token=x", Scheme::GitHub, "s1")?;
//! let b = a.clone().with_secret("s2")?.with_header("Authorization", "Bearer t")?;
//! let changes = Change::between(Some(&a), &b);
//! assert_eq!(changes.len(), 2);
//! assert_eq!(changes[0].to_string(), "secrets rotated (2 current, 0 previous)");
//! assert_eq!(changes[1].to_string(), "headers changed: Authorization");
//! # Ok::<(), hookgate_sender::EndpointError>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    queue::{Queue, QueueError},
    Endpoint,
};

/// One change to an endpoint. Never holds a secret or header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The endpoint was registered.
    Created {
        /// Its URLs, masked.
        urls: Vec<String>,
        /// Its scheme.
        scheme: String,
    },
    /// The URLs changed.
    UrlsChanged {
        /// The new URLs, masked.
        urls: Vec<String>,
    },
    /// The signing secrets changed (values never recorded).
    SecretsRotated {
        /// How many current secrets there are now.
        current: usize,
        /// How many previous secrets still sign until their expiry.
        previous: usize,
    },
    /// Extra headers were added, removed or given new values.
    HeadersChanged {
        /// The header names now set (values never recorded).
        names: Vec<String>,
    },
    /// Other settings changed.
    SettingsChanged {
        /// Which (`scheme`, `timeout`, `connect_timeout`, `allow_http`,
        /// `client_certificate`).
        fields: Vec<String>,
    },
    /// Deliveries resumed.
    Enabled,
    /// Deliveries stopped.
    Disabled {
        /// Why (`410 Gone`, an operator's words, ...).
        reason: String,
    },
    /// Deliveries paused by a circuit breaker or a limiter (not a
    /// disable: they resume on their own).
    Paused {
        /// Why.
        reason: String,
    },
    /// The endpoint record was deleted.
    Removed,
    /// The record was re-encrypted under key `key_id`.
    Rekeyed {
        /// The key id.
        key_id: String,
    },
}

impl Change {
    /// What changed from `before` (none: a new endpoint) to `after`, in a
    /// fixed order; empty when nothing did. The `disabled` flag is not
    /// compared (it has its own entries).
    #[must_use]
    pub fn between(before: Option<&Endpoint>, after: &Endpoint) -> Vec<Change> {
        let masked = |e: &Endpoint| -> Vec<String> {
            e.urls.iter().map(|u| crate::redact::url(u)).collect()
        };
        let Some(before) = before else {
            return vec![Change::Created {
                urls: masked(after),
                scheme: after.scheme.name().to_owned(),
            }];
        };
        let mut out = Vec::new();
        if before.urls != after.urls {
            out.push(Change::UrlsChanged {
                urls: masked(after),
            });
        }
        if before.secrets != after.secrets || before.previous_secrets != after.previous_secrets {
            out.push(Change::SecretsRotated {
                current: after.secrets.len(),
                previous: after.previous_secrets.len(),
            });
        }
        if before.headers != after.headers {
            out.push(Change::HeadersChanged {
                names: after.headers.iter().map(|(n, _)| n.clone()).collect(),
            });
        }
        let mut fields = Vec::new();
        if before.scheme != after.scheme {
            fields.push("scheme");
        }
        if before.timeout != after.timeout {
            fields.push("timeout");
        }
        if before.connect_timeout != after.connect_timeout {
            fields.push("connect_timeout");
        }
        if before.allow_http != after.allow_http {
            fields.push("allow_http");
        }
        if before.client_identity != after.client_identity {
            fields.push("client_certificate");
        }
        if !fields.is_empty() {
            out.push(Change::SettingsChanged {
                fields: fields.into_iter().map(str::to_owned).collect(),
            });
        }
        out
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created { urls, scheme } => {
                write!(f, "created ({scheme}, {})", urls.join(", "))
            }
            Self::UrlsChanged { urls } => write!(f, "urls changed: {}", urls.join(", ")),
            Self::SecretsRotated { current, previous } => {
                write!(
                    f,
                    "secrets rotated ({current} current, {previous} previous)"
                )
            }
            Self::HeadersChanged { names } => write!(f, "headers changed: {}", names.join(", ")),
            Self::SettingsChanged { fields } => {
                write!(f, "settings changed: {}", fields.join(", "))
            }
            Self::Enabled => f.write_str("enabled"),
            Self::Disabled { reason } => write!(f, "disabled: {reason}"),
            Self::Paused { reason } => write!(f, "paused: {reason}"),
            Self::Removed => f.write_str("removed"),
            Self::Rekeyed { key_id } => write!(f, "re-encrypted under key {key_id}"),
        }
    }
}

/// One entry of an endpoint's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// The endpoint's id.
    pub endpoint: String,
    /// When, Unix milliseconds (the store's clock).
    pub at_ms: i64,
    /// Who (as the caller named itself).
    pub actor: String,
    /// What.
    pub change: Change,
}

/// How long the actor string may be; longer ones are cut.
pub const MAX_ACTOR_LEN: usize = 256;

/// `actor` cut to [`MAX_ACTOR_LEN`] bytes (at a character boundary).
pub(crate) fn bounded_actor(actor: &str) -> &str {
    let mut end = actor.len().min(MAX_ACTOR_LEN);
    while !actor.is_char_boundary(end) {
        end -= 1;
    }
    &actor[..end]
}

/// Append `changes` for `endpoint` by `actor`, in order.
///
/// # Errors
/// The queue failed (entries before the failing one are kept).
pub async fn record(
    queue: &dyn Queue,
    endpoint: &str,
    actor: &str,
    changes: &[Change],
) -> Result<(), QueueError> {
    for change in changes {
        queue.append_audit(endpoint, actor, change).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookgate_core::Scheme;

    #[test]
    fn changes_name_what_changed_and_never_values() {
        let a = Endpoint::new("e", "https://u:pw@a.example/h", Scheme::GitHub, "s3cret").unwrap();
        let created = Change::between(None, &a);
        assert_eq!(created.len(), 1);
        assert!(!created[0].to_string().contains("pw"), "{}", created[0]);
        assert!(Change::between(Some(&a), &a).is_empty());
        let b = a
            .clone()
            .with_url("https://b.example/h?token=t0k")
            .unwrap()
            .with_header("Authorization", "Bearer v4lue")
            .unwrap()
            .rotate_secret("n3w", 1)
            .unwrap()
            .allowing_http(true);
        let changes = Change::between(Some(&a), &b);
        let text = changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(
            text,
            "urls changed: https://***@a.example/h, https://b.example/h?token=***; \
             secrets rotated (1 current, 1 previous); headers changed: Authorization; \
             settings changed: allow_http"
        );
        let json = serde_json::to_string(&changes).unwrap();
        for secret in ["s3cret", "n3w", "v4lue", "t0k", "pw"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
    }

    #[test]
    fn actors_are_bounded() {
        assert_eq!(bounded_actor("alice"), "alice");
        let long = "é".repeat(200);
        let cut = bounded_actor(&long);
        assert!(cut.len() <= MAX_ACTOR_LEN && long.starts_with(cut));
    }
}
