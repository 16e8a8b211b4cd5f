//! One `webhook` span per received request, carrying the scheme, the event
//! id once verified, the outcome and the status, as an OpenTelemetry (or any
//! `tracing`) subscriber sees it. Checked with an in-memory subscriber layer
//! that keeps each closed span's fields.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::VerifyWebhookLayer;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt as _};
use tracing::{
    field::{Field, Visit},
    span::{Attributes, Id, Record},
    Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Fields = BTreeMap<String, String>;

/// Keeps the fields of every `webhook` span, in the order the spans close.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "webhook" {
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<Fields>() {
            values.record(&mut Collect(fields));
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span.extensions_mut().remove::<Fields>();
        if let Some(fields) = fields {
            self.0.lock().unwrap().push(fields);
        }
    }
}

fn signed(id: &str, body: &str, forge: bool) -> Request<Full<Bytes>> {
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let mut req = Request::post("/hooks");
    for (name, value) in signer.sign(id, unix_now(), body.as_bytes()) {
        let value = if forge && name == "webhook-signature" {
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
        } else {
            value
        };
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

#[tokio::test]
async fn each_webhook_is_one_span_with_its_id_outcome_and_status() {
    let spans = Spans::default();
    let _guard = tracing_subscriber::registry()
        .with(spans.clone())
        .set_default();

    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let service = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier))
        .service_fn(|req: Request<Full<Bytes>>| async move {
            let status = if req.uri().query() == Some("fail") {
                500
            } else {
                200
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        });

    let status = |r: Response<_>| r.status();
    assert_eq!(
        status(
            service
                .clone()
                .oneshot(signed("msg_1", "{}", false))
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            service
                .clone()
                .oneshot(signed("msg_1", "{}", false))
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            service
                .clone()
                .oneshot(signed("msg_2", "{}", true))
                .await
                .unwrap()
        ),
        StatusCode::UNAUTHORIZED
    );
    let mut failing = signed("msg_3", "{}", false);
    *failing.uri_mut() = "/hooks?fail".parse().unwrap();
    assert_eq!(
        status(service.clone().oneshot(failing).await.unwrap()),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let got = spans.0.lock().unwrap().clone();
    let view: Vec<Vec<(&str, &str)>> = got
        .iter()
        .map(|f| {
            ["scheme", "id", "outcome", "status"]
                .iter()
                .map(|k| (*k, f.get(*k).map_or("-", String::as_str)))
                .collect()
        })
        .collect();
    assert_eq!(
        view,
        vec![
            vec![
                ("scheme", "standard"),
                ("id", "msg_1"),
                ("outcome", "completed"),
                ("status", "200")
            ],
            vec![
                ("scheme", "standard"),
                ("id", "msg_1"),
                ("outcome", "replayed"),
                ("status", "200")
            ],
            // A forged request is never attributed to the id it claims.
            vec![
                ("scheme", "standard"),
                ("id", "-"),
                ("outcome", "invalid_signature"),
                ("status", "401")
            ],
            vec![
                ("scheme", "standard"),
                ("id", "msg_3"),
                ("outcome", "released"),
                ("status", "500")
            ],
        ]
    );
}
