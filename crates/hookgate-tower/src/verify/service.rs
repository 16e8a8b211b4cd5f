//! [`VerifyWebhook`]: the middleware service.

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt as _};
use hookgate_core::VerifyError;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Full, Limited};
use sha2::{Digest as _, Sha256};
use tower_service::Service;
use tracing::Instrument as _;

use super::{
    layer::{Shared, STORE_RETRY_AFTER_SECS},
    ResponseFuture, VerifiedWebhook, VerifyWebhookLayer,
};
use crate::{
    body::{collect_limited, BoxError, CollectError, ResponseBody},
    rejection::{
        problem_response, BodyReadFailed, ConflictingDuplicate, DuplicateInFlight,
        InvalidSignature, MalformedWebhook, PayloadTooLarge, SourceNotAllowed, StoreUnavailable,
        TimestampOutOfTolerance, WebhookRejection,
    },
    source::Refused,
    store::{Claim, ClaimToken, DedupStore, Digest, DoneRecord, StoreErrorKind},
};

/// Name of the header marking an answer replayed from the store.
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Middleware that verifies webhooks and runs the inner service once per
/// event. See the [module docs](super) for the steps and status codes.
///
/// Build it with [`VerifyWebhookLayer`] (or [`VerifyWebhook::layer`]).
pub struct VerifyWebhook<Svc, S> {
    inner: Svc,
    shared: Arc<Shared<S>>,
}

impl<Svc, S> VerifyWebhook<Svc, S> {
    pub(crate) fn from_shared(inner: Svc, shared: Arc<Shared<S>>) -> Self {
        Self { inner, shared }
    }

    /// A layer wrapping services with this middleware: the same as
    /// [`VerifyWebhookLayer::new`].
    #[must_use]
    pub fn layer(verifier: hookgate_core::Verifier) -> VerifyWebhookLayer {
        VerifyWebhookLayer::new(verifier)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// Consume the middleware, returning the inner service.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<Svc: Clone, S> Clone for VerifyWebhook<Svc, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Svc: fmt::Debug, S: fmt::Debug> fmt::Debug for VerifyWebhook<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyWebhook")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<Svc, S, ReqB, ResB> Service<Request<ReqB>> for VerifyWebhook<Svc, S>
where
    Svc: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone + Send + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
    ReqB: Body + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    S: DedupStore,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<ResB, Svc::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; `self` keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // One span per received webhook; `id` is filled in once verified,
        // `outcome` and `status` when the answer is known.
        let span = tracing::info_span!(
            "webhook",
            scheme = self.shared.verifier.scheme().name(),
            id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let handled = handle(Arc::clone(&self.shared), inner, req);
        ResponseFuture::new(
            async move {
                let result = handled.await;
                if let Ok(res) = &result {
                    tracing::Span::current().record("status", res.status().as_u16());
                }
                result
            }
            .instrument(span),
        )
    }
}

fn layer_response<B>(res: Response<Full<Bytes>>) -> Response<ResponseBody<B>> {
    res.map(ResponseBody::layer)
}

fn reject<B>(
    scheme: &'static str,
    rejection: impl Into<WebhookRejection>,
) -> Response<ResponseBody<B>> {
    let rejection = rejection.into();
    tracing::Span::current().record("outcome", rejection.kind());
    match &rejection {
        WebhookRejection::DuplicateInFlight(_) => {
            tracing::debug!(scheme, kind = rejection.kind(), reason = %rejection, "webhook rejected");
        }
        WebhookRejection::ConflictingDuplicate(_) => {
            tracing::warn!(scheme, kind = rejection.kind(), reason = %rejection, "webhook rejected: event id reused with a different body");
        }
        WebhookRejection::StoreUnavailable(_) => {
            tracing::error!(scheme, kind = rejection.kind(), reason = %rejection, "webhook rejected: dedup store unavailable");
        }
        _ => {
            tracing::info!(scheme, kind = rejection.kind(), reason = %rejection, "webhook rejected");
        }
    }
    layer_response(rejection.into_response())
}

fn verification_failed<B>(scheme: &'static str, err: VerifyError) -> Response<ResponseBody<B>> {
    let kind = err.kind();
    metrics::counter!("hookgate_receiver_verifications_total", "scheme" => scheme, "result" => kind)
        .increment(1);
    let detail = err.to_string();
    match err {
        VerifyError::MissingHeader { .. } | VerifyError::MalformedHeader { .. } => {
            reject(scheme, MalformedWebhook::new(detail).with_source(err))
        }
        VerifyError::TimestampTooOld { .. } | VerifyError::TimestampInFuture { .. } => reject(
            scheme,
            TimestampOutOfTolerance::new(detail)
                .with_challenge(scheme)
                .with_source(err),
        ),
        // `VerifyError` is non-exhaustive: a future variant is a failed
        // verification, never a pass.
        _ => reject(
            scheme,
            InvalidSignature::new(detail)
                .with_challenge(scheme)
                .with_source(err),
        ),
    }
}

fn source_refused<B>(scheme: &'static str, refused: &Refused) -> Response<ResponseBody<B>> {
    tracing::Span::current().record("outcome", "source_not_allowed");
    metrics::counter!("hookgate_receiver_verifications_total", "scheme" => scheme, "result" => "source_not_allowed")
        .increment(1);
    if *refused == Refused::NoPeerAddress {
        tracing::error!(scheme, kind = "source_not_allowed", reason = %refused, "webhook rejected: allow-list configured but the request carries no peer address");
    } else {
        tracing::info!(scheme, kind = "source_not_allowed", reason = %refused, "webhook rejected");
    }
    layer_response(
        SourceNotAllowed::new("requests from this address are not accepted")
            .with_source(refused.to_string())
            .into_response(),
    )
}

fn too_large<B>(scheme: &'static str, limit: usize) -> Response<ResponseBody<B>> {
    metrics::counter!("hookgate_receiver_verifications_total", "scheme" => scheme, "result" => "payload_too_large")
        .increment(1);
    reject(
        scheme,
        PayloadTooLarge::new(format!("body is larger than {limit} bytes")),
    )
}

fn retry_after_secs(remaining: Duration) -> u64 {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    secs.max(1)
}

/// The part of a dedup key that names the event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyPart<'a> {
    /// A signed event id.
    Id(&'a str),
    /// The body's SHA-256, for schemes that do not sign their id.
    Digest(&'a Digest),
}

/// `prefix:scheme:id` or `prefix:scheme:sha256:<hex>`, with `%` and `:`
/// percent-escaped in the prefix and the id, so the parts can always be
/// told apart: no two different (prefix, scheme, id or digest) give one
/// key. Prefixes and ids without `%` or `:` are unchanged.
pub(crate) fn dedup_key(prefix: &str, scheme: &str, part: KeyPart<'_>) -> String {
    fn push_escaped(out: &mut String, s: &str) {
        for c in s.chars() {
            match c {
                '%' => out.push_str("%25"),
                ':' => out.push_str("%3A"),
                c => out.push(c),
            }
        }
    }
    let mut key = String::with_capacity(prefix.len() + scheme.len() + 80);
    push_escaped(&mut key, prefix);
    key.push(':');
    // Scheme names are fixed lowercase words; escape anyway.
    push_escaped(&mut key, scheme);
    key.push(':');
    match part {
        KeyPart::Id(id) => push_escaped(&mut key, id),
        KeyPart::Digest(d) => {
            key.push_str("sha256:");
            key.push_str(&hex::encode(d));
        }
    }
    key
}

/// Owns the claim while the request runs. Dropped with the claim still in
/// it (the request went away), it finishes in the background: it releases
/// the claim, or, once the handler has given a final answer, records it.
struct ClaimGuard<S: DedupStore> {
    store: Arc<S>,
    key: String,
    /// The token, and the done record to store (`None`: release).
    claim: Option<(ClaimToken, Option<DoneRecord>)>,
    retention: Duration,
    scheme: &'static str,
}

impl<S: DedupStore> ClaimGuard<S> {
    /// Take the claim out and return the future that completes or releases
    /// it.
    fn finish(&mut self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let (token, record) = self.claim.take()?;
        let store = Arc::clone(&self.store);
        let key = std::mem::take(&mut self.key);
        let (retention, scheme) = (self.retention, self.scheme);
        Some(async move {
            let key = key.as_str();
            if let Some(record) = record {
                match store.complete(key, &token, record, retention).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(scheme, key, "a newer claim holds the event (our lease expired and another delivery took it); it may be handled twice"),
                    Err(e) => {
                        metrics::counter!("hookgate_receiver_store_errors_total", "scheme" => scheme, "op" => "complete")
                            .increment(1);
                        tracing::error!(scheme, key, error = %e, "could not mark the event done; a retry may run the handler again");
                    }
                }
            } else if let Err(e) = store.release(key, &token).await {
                metrics::counter!("hookgate_receiver_store_errors_total", "scheme" => scheme, "op" => "release")
                    .increment(1);
                tracing::error!(scheme, key, error = %e, "could not release the claim; a retry must wait for the lease");
            }
        })
    }
}

impl<S: DedupStore> Drop for ClaimGuard<S> {
    fn drop(&mut self) {
        let Some(finish) = self.finish() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(finish);
        }
    }
}

async fn handle<Svc, S, ReqB, ResB>(
    shared: Arc<Shared<S>>,
    mut inner: Svc,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, Svc::Error>
where
    Svc: Service<Request<Full<Bytes>>, Response = Response<ResB>>,
    ReqB: Body,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
    S: DedupStore,
{
    let verifier = &shared.verifier;
    let scheme = verifier.scheme().name();

    // 0. Source address, before anything of the request is read.
    if let Err(refused) = shared.sources.check(&req) {
        return Ok(source_refused(scheme, &refused));
    }
    // 1. Headers.
    let parsed = match verifier.parse_headers(req.headers()) {
        Ok(p) => p,
        Err(e) => return Ok(verification_failed(scheme, e)),
    };
    // 2. Timestamp.
    let parsed = match verifier.check_timestamp(parsed, shared.clock.now()) {
        Ok(checked) => checked,
        Err(e) => return Ok(verification_failed(scheme, e)),
    };
    // 3. Body, up to the limit; Content-Length first.
    let limit = shared.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = |n: u64| usize::try_from(n).map_or(true, |n| n > limit);
    if declared.is_some_and(too_big) || too_big(req.body().size_hint().lower()) {
        return Ok(too_large(scheme, limit));
    }
    let (mut parts, body) = req.into_parts();
    // One buffer, capped at the limit, whatever the framing.
    let expected = declared.and_then(|n| usize::try_from(n).ok());
    let bytes = match collect_limited(body, limit, expected).await {
        Ok(bytes) => bytes,
        Err(CollectError::TooLarge) => return Ok(too_large(scheme, limit)),
        Err(CollectError::Read(e)) => {
            metrics::counter!("hookgate_receiver_verifications_total", "scheme" => scheme, "result" => "body_read_failed")
                .increment(1);
            return Ok(reject(
                scheme,
                BodyReadFailed::new("the request body could not be read").with_source(e),
            ));
        }
    };
    // 4. Signature.
    let verified = match verifier.verify_parsed(&parsed, &bytes) {
        Ok(v) => v,
        Err(e) => return Ok(verification_failed(scheme, e)),
    };
    metrics::counter!("hookgate_receiver_verifications_total", "scheme" => scheme, "result" => "ok")
        .increment(1);

    // 5. Dedup claim.
    let digest: Digest = Sha256::digest(&bytes).into();
    let key = match (&verified.id, verifier.id_is_signed()) {
        (Some(id), true) => dedup_key(&shared.prefix, scheme, KeyPart::Id(id)),
        _ => dedup_key(&shared.prefix, scheme, KeyPart::Digest(&digest)),
    };
    let mut webhook = VerifiedWebhook {
        scheme: verified.scheme,
        id: verified.id,
        timestamp: verified.timestamp,
        key_index: verified.key_index,
        dedup_key: key,
        deduplicated: true,
    };
    if let Some(id) = &webhook.id {
        tracing::Span::current().record("id", id.as_str());
    }

    let claim = shared
        .store
        .claim(&webhook.dedup_key, &digest, shared.lease)
        .await;
    let token = match claim {
        Ok(Claim::Acquired(token)) => Some(token),
        Ok(Claim::InFlight {
            remaining,
            digest: held,
        }) => {
            if held != digest {
                return Ok(conflicting(scheme, &webhook));
            }
            metrics::counter!("hookgate_receiver_duplicates_total", "scheme" => scheme, "kind" => "in_flight")
                .increment(1);
            return Ok(reject(
                scheme,
                DuplicateInFlight::new("this event is being handled; retry later")
                    .with_retry_after(retry_after_secs(remaining)),
            ));
        }
        Ok(Claim::Done(record)) => {
            if record.digest != digest {
                return Ok(conflicting(scheme, &webhook));
            }
            metrics::counter!("hookgate_receiver_duplicates_total", "scheme" => scheme, "kind" => "replayed")
                .increment(1);
            tracing::debug!(scheme, key = %webhook.dedup_key, status = record.status, "duplicate of a handled event; replaying its answer");
            return Ok(replay(&webhook.dedup_key, record));
        }
        Err(e) if e.kind() == StoreErrorKind::Config => {
            metrics::counter!("hookgate_receiver_store_errors_total", "scheme" => scheme, "op" => "claim")
                .increment(1);
            // Never fail-open: retrying will not help until someone fixes
            // the store's setup, and running the handler undeduplicated
            // would hide that.
            tracing::error!(scheme, key = %webhook.dedup_key, error = %e, "dedup store is misconfigured; answering 500 (an operator must fix the store)");
            tracing::Span::current().record("outcome", "store_misconfigured");
            return Ok(layer_response(problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_misconfigured",
                "Dedup store misconfigured",
                "the receiver's dedup store is misconfigured",
                None,
            )));
        }
        Err(e) => {
            metrics::counter!("hookgate_receiver_store_errors_total", "scheme" => scheme, "op" => "claim")
                .increment(1);
            if !shared.fail_open {
                return Ok(reject(
                    scheme,
                    StoreUnavailable::new("the dedup store is unavailable; retry later")
                        .with_retry_after(STORE_RETRY_AFTER_SECS)
                        .with_source(e),
                ));
            }
            tracing::warn!(scheme, key = %webhook.dedup_key, error = %e, "dedup store unavailable; fail-open: running the handler without deduplication");
            webhook.deduplicated = false;
            None
        }
    };

    let mut guard = ClaimGuard {
        store: Arc::clone(&shared.store),
        key: webhook.dedup_key.clone(),
        claim: token.map(|t| (t, None)),
        retention: shared.retention,
        scheme,
    };
    parts.extensions.insert(webhook);
    let req = Request::from_parts(parts, Full::new(bytes));

    let started = Instant::now();
    let handler = async {
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        }
    };
    // While the handler runs, keep its claim alive.
    let result = match &guard.claim {
        Some((token, _)) => {
            let renewals =
                renew_every_third(&*shared.store, &guard.key, token, shared.lease, scheme);
            let (handler, renewals) = (std::pin::pin!(handler), std::pin::pin!(renewals));
            match futures_util::future::select(handler, renewals).await {
                Either::Left((result, _)) => result,
                Either::Right(((), handler)) => handler.await,
            }
        }
        None => handler.await,
    };
    metrics::histogram!("hookgate_receiver_handler_duration_seconds", "scheme" => scheme)
        .record(started.elapsed().as_secs_f64());

    let owns_claim = guard.claim.is_some();
    let final_status = match &result {
        Ok(Ok(res)) if shared.policy.0.is_final(res.status()) => Some(res.status()),
        _ => None,
    };
    // From here on, the handler has answered: a request dropped from now on
    // records a final answer (without its body) instead of releasing it.
    if let (Some(status), Some((_, record))) = (final_status, guard.claim.as_mut()) {
        *record = Some(DoneRecord::new(status.as_u16(), digest));
    }
    let not_final = match &result {
        Ok(Ok(_)) => "released",
        Ok(Err(_)) => "error",
        Err(_) => "panic",
    };

    let key = guard.key.clone();
    let key = key.as_str();
    let response = match result {
        Ok(Ok(res)) if owns_claim && final_status.is_some() => {
            // Keep the start of the answer for replays: a body of known size
            // up to DoneRecord::MAX_BODY is read here and answered from
            // memory; a larger or streamed one is passed through and replayed
            // empty.
            let (res, kept) = keep_small_body(res).await;
            match kept {
                Ok(kept) => {
                    if let (Some((content_type, body)), Some((_, record))) =
                        (kept, guard.claim.as_mut())
                    {
                        *record = record.take().map(|r| r.with_body(content_type, body));
                    }
                    Ok(res)
                }
                Err(e) => {
                    // The answer could not be read: not a final answer.
                    if let Some((_, record)) = guard.claim.as_mut() {
                        *record = None;
                    }
                    tracing::error!(scheme, key, error = %e, "could not read the handler's response body; claim released, answering 500");
                    Ok(layer_response(problem_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "handler_failed",
                        "Handler failed",
                        "the handler failed; retry later",
                        None,
                    )))
                }
            }
        }
        Ok(Ok(res)) => Ok(res.map(ResponseBody::inner)),
        Ok(Err(e)) => {
            tracing::warn!(scheme, key, "handler returned an error; claim released");
            Err(e)
        }
        Err(_) => {
            tracing::error!(
                scheme,
                key,
                "handler panicked; claim released, answering 500"
            );
            Ok(layer_response(problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler_panicked",
                "Handler failed",
                "the handler failed; retry later",
                None,
            )))
        }
    };

    let outcome = match &guard.claim {
        None => "undeduplicated",
        Some((_, Some(_))) => "completed",
        Some((_, None)) if final_status.is_some() => "error",
        Some((_, None)) => not_final,
    };
    metrics::counter!("hookgate_receiver_handled_total", "scheme" => scheme, "outcome" => outcome)
        .increment(1);
    tracing::Span::current().record("outcome", outcome);

    // Record the outcome in a task of its own, so a request dropped while
    // the store answers cannot cancel it; wait for it so that a sender's
    // retry after this response finds the outcome recorded.
    if let Some(finish) = guard.finish() {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let _ = rt.spawn(finish).await;
            }
            Err(_) => finish.await,
        }
    }
    response
}

/// Answer a duplicate of a handled event from its done record.
fn replay<B>(key: &str, record: DoneRecord) -> Response<ResponseBody<B>> {
    tracing::Span::current().record("outcome", "replayed");
    let status = StatusCode::from_u16(record.status).unwrap_or_else(|_| {
        tracing::error!(key, status = record.status, "store holds an invalid status");
        StatusCode::INTERNAL_SERVER_ERROR
    });
    let mut res = Response::new(ResponseBody::layer(Full::new(record.body)));
    *res.status_mut() = status;
    if let Some(value) = record
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        res.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    res.headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

/// The body and content type a done record keeps, if the body's size is
/// known and at most [`DoneRecord::MAX_BODY`]; the response is rebuilt
/// around the bytes read. A larger or streamed body is left untouched.
async fn keep_small_body<B>(
    res: Response<B>,
) -> (
    Response<ResponseBody<B>>,
    Result<Option<(Option<String>, Bytes)>, BoxError>,
)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let small = res
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= DoneRecord::MAX_BODY as u64);
    if !small {
        let content_type = content_type(res.headers());
        return (
            res.map(ResponseBody::inner),
            Ok(Some((content_type, Bytes::new()))),
        );
    }
    let (parts, body) = res.into_parts();
    match Limited::new(body, DoneRecord::MAX_BODY).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let content_type = content_type(&parts.headers);
            let res = Response::from_parts(parts, ResponseBody::layer(Full::new(bytes.clone())));
            (res, Ok(Some((content_type, bytes))))
        }
        Err(e) => {
            let res = Response::from_parts(parts, ResponseBody::layer(Full::new(Bytes::new())));
            (res, Err(e))
        }
    }
}

fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Renew the claim every third of `lease` until dropped; returns (and stops
/// renewing) once the token no longer owns the key.
async fn renew_every_third<S: DedupStore + ?Sized>(
    store: &S,
    key: &str,
    token: &ClaimToken,
    lease: Duration,
    scheme: &'static str,
) {
    let every = (lease / 3).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        match store.renew(key, token, lease).await {
            Ok(true) => tracing::trace!(scheme, key, "claim renewed"),
            Ok(false) => {
                tracing::warn!(scheme, key, "the claim was lost while the handler ran (the store was unreachable for longer than the lease?); a duplicate may run concurrently");
                return;
            }
            Err(e) => {
                metrics::counter!("hookgate_receiver_store_errors_total", "scheme" => scheme, "op" => "renew")
                    .increment(1);
                tracing::warn!(scheme, key, error = %e, "could not renew the claim; retrying");
            }
        }
    }
}

fn conflicting<B>(scheme: &'static str, webhook: &VerifiedWebhook) -> Response<ResponseBody<B>> {
    metrics::counter!("hookgate_receiver_duplicates_total", "scheme" => scheme, "kind" => "conflicting")
        .increment(1);
    reject(
        scheme,
        ConflictingDuplicate::new(format!(
            "event {} was already received with a different body",
            webhook.id.as_deref().unwrap_or("(no id)")
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use hookgate_core::{Scheme, Signer, Verifier};
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt as _};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn verifier() -> Verifier {
        Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap()
    }

    fn request(id: &str, ts: i64, body: &'static [u8]) -> Request<Full<Bytes>> {
        let signer = Signer::new(
            Scheme::StandardWebhooks,
            Scheme::StandardWebhooks.secret(SECRET).unwrap(),
        );
        let mut req = Request::builder().method("POST").uri("/");
        for (k, v) in signer.sign(id, ts, body) {
            req = req.header(k, v);
        }
        req.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    async fn ok(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"handled"))))
    }

    #[tokio::test]
    async fn injected_clock_drives_the_tolerance_both_ways() {
        let now = 1_700_000_000;
        let layer = VerifyWebhookLayer::new(verifier())
            .with_clock(move || now)
            .with_tolerance(Duration::from_secs(60));
        let svc = ServiceBuilder::new().layer(layer).service_fn(ok);
        for (ts, status) in [
            (now, 200),
            (now - 60, 200),
            (now + 60, 200),
            (now - 61, 401),
            (now + 61, 401),
        ] {
            let id = format!("msg_{ts}");
            let res = svc.clone().oneshot(request(&id, ts, b"{}")).await.unwrap();
            assert_eq!(res.status(), status, "timestamp {ts}");
        }
    }

    #[tokio::test]
    async fn handler_body_passes_through_unchanged() {
        let svc = ServiceBuilder::new()
            .layer(VerifyWebhookLayer::new(verifier()))
            .service_fn(ok);
        let res = svc
            .oneshot(request("msg_1", hookgate_core::unix_now(), b"{}"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get(IDEMPOTENT_REPLAYED).is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"handled");
    }

    #[tokio::test]
    async fn an_abandoned_request_releases_its_claim() {
        let store = Arc::new(MemoryStore::default());
        let started = Arc::new(tokio::sync::Notify::new());
        let s = Arc::clone(&started);
        let layer = VerifyWebhookLayer::new(verifier())
            .with_shared_store(Arc::clone(&store))
            .with_prefix("p");
        let svc = ServiceBuilder::new().layer(layer).service_fn(move |_req| {
            let s = Arc::clone(&s);
            async move {
                s.notify_one();
                std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
            }
        });
        let fut = svc.oneshot(request("msg_gone", hookgate_core::unix_now(), b"{}"));
        let task = tokio::spawn(fut);
        started.notified().await;
        let digest: Digest = Sha256::digest(b"{}").into();
        let held = store
            .claim("p:standard:msg_gone", &digest, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(matches!(held, Claim::InFlight { .. }), "{held:?}");
        task.abort();
        let _ = task.await;
        // The guard released it in the background.
        let mut claim = None;
        for _ in 0..100 {
            let c = store
                .claim("p:standard:msg_gone", &digest, Duration::from_secs(30))
                .await
                .unwrap();
            if matches!(c, Claim::Acquired(_)) {
                claim = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            claim.is_some(),
            "claim released after the request was dropped"
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn dedup_keys_cannot_collide() {
        let d = [0xab; 32];
        assert_eq!(
            dedup_key("p", "standard", KeyPart::Id("msg_1")),
            "p:standard:msg_1"
        );
        assert_eq!(
            dedup_key("p", "github", KeyPart::Digest(&d)),
            format!("p:github:sha256:{}", hex::encode(d))
        );
        let (hex_id, sha_id) = (hex::encode(d), format!("sha256:{}", hex::encode(d)));
        // Triples that naive joining with ':' would confuse.
        let triples: Vec<(&str, &str, KeyPart<'_>)> = vec![
            ("a:standard:b", "standard", KeyPart::Id("c")),
            ("a", "standard", KeyPart::Id("b:standard:c")),
            ("a:standard", "standard", KeyPart::Id("b:c")),
            ("a", "standard", KeyPart::Id("b%3Ac")),
            ("a", "standard", KeyPart::Id("b:c")),
            ("a%3A", "standard", KeyPart::Id("c")),
            ("a:", "standard", KeyPart::Id("c")),
            ("a", "github", KeyPart::Digest(&d)),
            ("a", "github", KeyPart::Id(&sha_id)),
            ("a:github", "sha256", KeyPart::Id(&hex_id)),
            ("", "standard", KeyPart::Id("")),
            ("", "standard", KeyPart::Id(":")),
            (":", "standard", KeyPart::Id("")),
        ];
        let keys: Vec<String> = triples
            .iter()
            .map(|(p, s, part)| dedup_key(p, s, *part))
            .collect();
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:#?}");
        // Escaped keys split into exactly the parts they were built from.
        for key in &keys {
            let parts = key.split(':').count();
            assert!(parts == 3 || parts == 4, "{key}");
        }
    }

    #[test]
    fn random_parts_never_collide() {
        // Short random strings over an alphabet rich in separators.
        let alphabet = [":", "%", "3", "A", "a", "2", "5"];
        let pick = |n: usize| -> String {
            (0..n)
                .map(|_| alphabet[rand::random::<usize>() % alphabet.len()])
                .collect()
        };
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let (p, i) = (
                pick(rand::random::<usize>() % 4),
                pick(rand::random::<usize>() % 4),
            );
            let key = dedup_key(&p, "standard", KeyPart::Id(&i));
            if let Some(prev) = seen.insert(key.clone(), (p.clone(), i.clone())) {
                assert_eq!(prev, (p, i), "two triples gave {key}");
            }
        }
    }
}
