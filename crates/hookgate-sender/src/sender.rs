//! The producer side: store endpoints, enqueue messages.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::{
    audit::Change,
    queue::{DeliveryKey, Queue, QueueError},
    Endpoint, EndpointError, Message, MessageError,
};

/// Enqueueing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The endpoint's settings are invalid.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The message cannot be sent (its id is not a valid header value).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// No endpoint with this id is stored in the queue.
    #[error("unknown endpoint {0:?}")]
    UnknownEndpoint(String),
    /// An endpoint with this id is stored with another configuration; it was
    /// left unchanged (use [`Sender::update_endpoint`] to change it).
    #[error("endpoint {0:?} exists with another configuration")]
    EndpointConflict(String),
    /// The queue failed; the message may not be stored.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Stores endpoints and enqueues messages for [`Worker`](crate::Worker)s to deliver.
///
/// `enqueue` returns only once the delivery is stored in the queue, so a
/// crash after it returns loses nothing.
pub struct Sender {
    queue: Arc<dyn Queue>,
    /// Who the audit trail names for changes made through this sender.
    actor: String,
    /// Endpoint ids known to exist (saves a lookup per enqueue).
    known: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender writing to `queue`.
    #[must_use]
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self {
            queue,
            actor: "sender".to_owned(),
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Name `actor` (a user, a service, `hookgate-cli:alice`) in the audit
    /// trail entries of the changes made through this sender (default
    /// `sender`; cut to [`MAX_ACTOR_LEN`](crate::audit::MAX_ACTOR_LEN) bytes).
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    async fn audit(&self, id: &str, changes: &[Change]) -> Result<(), SendError> {
        match crate::audit::record(&*self.queue, id, &self.actor, changes).await {
            Ok(()) => Ok(()),
            // A third-party queue without an audit trail: say so, go on.
            Err(e) if e.kind() == crate::queue::QueueErrorKind::Unsupported => {
                tracing::warn!(endpoint = %id, "endpoint change not audited: {e}");
                Ok(())
            }
            Err(e) => Err(SendError::Queue(
                QueueError::new(
                    e.kind(),
                    format!("the change was stored but its audit entry was not: {e}"),
                )
                .with_source(e),
            )),
        }
    }

    /// Enable (`disabled = false`) or disable an endpoint, recording it and
    /// `reason` in the audit trail.
    ///
    /// # Errors
    /// [`SendError::UnknownEndpoint`], or the queue failed.
    pub async fn set_endpoint_disabled(
        &self,
        id: &str,
        disabled: bool,
        reason: &str,
    ) -> Result<(), SendError> {
        if self.queue.get_endpoint(id).await?.is_none() {
            return Err(SendError::UnknownEndpoint(id.to_owned()));
        }
        self.queue.set_endpoint_disabled(id, disabled).await?;
        let change = if disabled {
            Change::Disabled {
                reason: reason.to_owned(),
            }
        } else {
            Change::Enabled
        };
        self.audit(id, &[change]).await
    }

    /// Remove an endpoint's record (its deliveries stay, see
    /// [`Queue::remove_endpoint`]), recording it in the audit trail.
    /// Returns `false` if there was none.
    ///
    /// # Errors
    /// The queue failed.
    pub async fn remove_endpoint(&self, id: &str) -> Result<bool, SendError> {
        let removed = self.queue.remove_endpoint(id).await?;
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        if removed {
            self.audit(id, &[Change::Removed]).await?;
        }
        Ok(removed)
    }

    /// The queue.
    #[must_use]
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// Validate and register an endpoint (recorded in the audit trail as
    /// created, when it is new). Endpoints are managed records:
    /// registering an id that is already stored with the same configuration
    /// changes nothing (its `disabled` flag included, so a restart does not
    /// undo a 410), and one stored with another configuration is refused and
    /// left unchanged ([`SendError::EndpointConflict`]). The check and the
    /// write are two store calls: two processes registering *different*
    /// configurations at the same instant may both succeed (the last one
    /// stays).
    ///
    /// # Errors
    /// Invalid settings, a conflicting stored endpoint, or the queue failed.
    pub async fn add_endpoint(&self, endpoint: Endpoint) -> Result<(), SendError> {
        endpoint.validate()?;
        match self.queue.get_endpoint(&endpoint.id).await? {
            Some(stored) if same_config(&stored, &endpoint) => {}
            Some(_) => return Err(SendError::EndpointConflict(endpoint.id)),
            None => {
                self.queue.put_endpoint(&endpoint).await?;
                self.audit(&endpoint.id, &Change::between(None, &endpoint))
                    .await?;
            }
        }
        self.remember(endpoint.id);
        Ok(())
    }

    /// Validate and store an endpoint's configuration, replacing what is
    /// stored under its id; what changed goes to the audit trail
    /// ([`Change::between`]). The stored `disabled` flag is kept: only
    /// [`Queue::set_endpoint_disabled`] changes it.
    ///
    /// # Errors
    /// Invalid settings, or the queue failed.
    pub async fn update_endpoint(&self, endpoint: Endpoint) -> Result<(), SendError> {
        endpoint.validate()?;
        let before = self.queue.get_endpoint(&endpoint.id).await?;
        self.queue.put_endpoint(&endpoint).await?;
        self.audit(&endpoint.id, &Change::between(before.as_ref(), &endpoint))
            .await?;
        self.remember(endpoint.id);
        Ok(())
    }

    /// Enable a disabled endpoint and release the messages held while it
    /// was disabled (due now). Returns how many were released.
    ///
    /// # Errors
    /// No such endpoint, or the queue failed.
    pub async fn enable_endpoint(&self, id: &str) -> Result<u64, SendError> {
        // Recorded in the audit trail (with this sender's actor).
        self.set_endpoint_disabled(id, false, "").await?;
        // A fresh start: the failure streak that disabled it is forgotten
        // (else one more failure would disable it again).
        if let Ok(records) = self.queue.endpoint_state(id).await {
            if let Some(r) = records.iter().find(|r| r.name == crate::state::STREAK) {
                let fresh = crate::lifecycle::FailureStreak::default().encode();
                let _ = self
                    .queue
                    .swap_endpoint_state(id, crate::state::STREAK, r.version, &fresh)
                    .await;
            }
        }
        Ok(self.queue.release_held(id).await?)
    }

    /// Dead-letter the messages held for a disabled endpoint (instead of
    /// enabling it): each becomes a dead letter (`endpoint_disabled`) that
    /// can be replayed later. Returns how many.
    ///
    /// # Errors
    /// The queue failed (or cannot do it: a third-party queue without
    /// [`Queue::dead_letter_held`]).
    pub async fn purge_held(&self, id: &str) -> Result<u64, SendError> {
        Ok(self.queue.dead_letter_held(id).await?)
    }

    fn remember(&self, id: String) {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }

    /// Store a delivery of `message` to endpoint `endpoint_id`, due now.
    /// Enqueueing the same message id to the same endpoint again is a no-op
    /// whatever became of the first ([`Queue::enqueue`]: one history per key).
    ///
    /// # Errors
    /// [`SendError::Message`] when the message id cannot be sent
    /// ([`validate_message_id`](crate::validate_message_id)); nothing is stored;
    /// [`SendError::UnknownEndpoint`] when no such endpoint is stored;
    /// [`SendError::Queue`] when the queue failed.
    pub async fn enqueue(
        &self,
        endpoint_id: &str,
        message: Message,
    ) -> Result<DeliveryKey, SendError> {
        message.validate()?;
        let known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(endpoint_id);
        if !known {
            if self.queue.get_endpoint(endpoint_id).await?.is_none() {
                return Err(SendError::UnknownEndpoint(endpoint_id.to_owned()));
            }
            self.known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(endpoint_id.to_owned());
        }
        self.queue.enqueue(endpoint_id, &message).await?;
        Ok(DeliveryKey {
            endpoint: endpoint_id.to_owned(),
            message_id: message.id,
        })
    }
}

/// Whether two endpoints have the same configuration (everything but `disabled`).
fn same_config(a: &Endpoint, b: &Endpoint) -> bool {
    a.id == b.id
        && a.urls == b.urls
        && a.scheme == b.scheme
        && a.secrets == b.secrets
        && a.headers == b.headers
        && a.timeout == b.timeout
        && a.connect_timeout == b.connect_timeout
        && a.breaker == b.breaker
        && a.rate_limit == b.rate_limit
        && a.max_in_flight == b.max_in_flight
        && a.health_url == b.health_url
        && a.tier == b.tier
        && a.auto_disable == b.auto_disable
        && a.allow_http == b.allow_http
        && a.client_identity == b.client_identity
        && a.previous_secrets == b.previous_secrets
}
