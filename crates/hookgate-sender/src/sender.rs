//! The producer side: store endpoints, enqueue messages.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::{
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
            known: Mutex::new(HashSet::new()),
        }
    }

    /// The queue.
    #[must_use]
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// Validate and store (insert or replace) an endpoint.
    ///
    /// # Errors
    /// Invalid settings, or the queue failed.
    pub async fn add_endpoint(&self, endpoint: Endpoint) -> Result<(), SendError> {
        endpoint.validate()?;
        self.queue.put_endpoint(&endpoint).await?;
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(endpoint.id);
        Ok(())
    }

    /// Store a delivery of `message` to endpoint `endpoint_id`, due now.
    /// Enqueueing the same message id to the same endpoint again is a no-op.
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
