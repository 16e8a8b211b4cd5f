//! [`ResponseBody`]: the body of every response the layer returns, and the
//! bounded collection of request bodies.

use std::{
    error::Error as StdError,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full};
use pin_project_lite::pin_project;

/// Boxed error of a [`ResponseBody`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

pin_project! {
    /// The handler's own body, or a small body the layer wrote itself (a
    /// problem document, or an empty replayed answer). No allocation beyond
    /// the handler's body; works as an axum response (`IntoResponse`) and as
    /// a hyper response body.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Layer { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn layer(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Layer { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(Into::into))),
            KindProj::Layer { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Layer { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Layer { body } => body.size_hint(),
        }
    }
}

/// Largest buffer allocated before any body byte has arrived. A declared
/// length is a claim by a client that has not authenticated yet: honouring
/// it up front would let header-only connections pin `limit` bytes each, so
/// beyond this the buffer grows as bytes actually arrive.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// Why [`collect_limited`] stopped.
#[derive(Debug)]
pub(crate) enum CollectError {
    /// The body is larger than the limit.
    TooLarge,
    /// Reading the body failed (the client went away, bad framing).
    Read(BoxError),
}

/// Read `body` into one contiguous buffer of at most `limit` bytes.
///
/// Every data frame is copied into that buffer and dropped at once, so
/// however the body is framed (a million 1-byte chunks included), the heap
/// it costs is the buffer: at most `limit` bytes once grown, and, while
/// growing, the old and the new buffer together (under twice the limit).
/// The buffer starts at the expected length (a declared `Content-Length`,
/// already checked against the limit, or the body's size hint) up to
/// [`INITIAL_CAPACITY`], and doubles as bytes arrive, never past the
/// expected length while the body keeps to it, nor past the limit.
pub(crate) async fn collect_limited<B>(
    body: B,
    limit: usize,
    expected: Option<usize>,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let expected = expected
        .or_else(|| usize::try_from(body.size_hint().lower()).ok())
        .filter(|&n| n > 0)
        .map(|n| n.min(limit));
    let mut buf: Vec<u8> = Vec::with_capacity(
        expected
            .unwrap_or(INITIAL_CAPACITY)
            .min(INITIAL_CAPACITY)
            .min(limit),
    );
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            // Trailers carry nothing that is signed.
            continue;
        };
        let needed = buf
            .len()
            .checked_add(data.remaining())
            .filter(|&n| n <= limit)
            .ok_or(CollectError::TooLarge)?;
        if needed > buf.capacity() {
            // Aim at the expected length while the body keeps to it.
            let target = expected.filter(|&e| e >= needed).unwrap_or(limit);
            let grown = buf.capacity().saturating_mul(2).clamp(needed, target);
            buf.reserve_exact(grown - buf.len());
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            data.advance(n);
        }
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    fn frames(
        chunks: Vec<Bytes>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        StreamBody::new(futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(Frame::data(c))),
        ))
    }

    fn of(chunks: &[&'static [u8]]) -> Vec<Bytes> {
        chunks.iter().map(|c| Bytes::from_static(c)).collect()
    }

    #[tokio::test]
    async fn frames_are_joined_up_to_the_limit() {
        let body = collect_limited(frames(of(&[b"ab", b"", b"cd", b"e"])), 5, None)
            .await
            .unwrap();
        assert_eq!(&body[..], b"abcde");
        let over = collect_limited(frames(of(&[b"ab", b"cd", b"ef"])), 5, None).await;
        assert!(matches!(over, Err(CollectError::TooLarge)), "{over:?}");
        let empty = collect_limited(frames(vec![]), 5, None).await.unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn growth_stops_at_the_expected_length_and_the_limit() {
        let body = collect_limited(Full::new(Bytes::from_static(&[7; 1000])), 1000, Some(1000))
            .await
            .unwrap();
        assert_eq!(body.len(), 1000);
        // A declared length is not allocated up front, but growth lands on it.
        let declared = 3 * INITIAL_CAPACITY + 5;
        let chunks: Vec<Bytes> = (0..declared).map(|_| Bytes::from_static(b"q")).collect();
        let body = collect_limited(frames(chunks), 10 * declared, Some(declared))
            .await
            .unwrap();
        assert_eq!(body.len(), declared);
        let vec: Vec<u8> = body.into();
        assert_eq!(
            vec.capacity(),
            declared,
            "no slack past the declared length"
        );
        // Unknown length: doubling from 16 KiB would overshoot; the buffer
        // is capped at the limit instead.
        let limit = INITIAL_CAPACITY + 1;
        let chunks = vec![
            Bytes::from(vec![1u8; INITIAL_CAPACITY]),
            Bytes::from_static(b"z"),
        ];
        let body = collect_limited(frames(chunks), limit, None).await.unwrap();
        assert_eq!(body.len(), limit);
    }

    #[tokio::test]
    async fn read_errors_are_reported() {
        let failing = StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err::<Frame<Bytes>, BoxError>("connection reset".into()),
        ]));
        let err = collect_limited(failing, 100, None).await;
        assert!(matches!(err, Err(CollectError::Read(_))), "{err:?}");
    }
}
