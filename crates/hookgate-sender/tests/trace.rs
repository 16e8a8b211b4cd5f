//! One `hookgate_sender.deliver` span per attempt, carrying the message id,
//! endpoint, attempt number, URL index, status and outcome, so an
//! OpenTelemetry (or any `tracing`) subscriber sees each message's attempts.
//! Checked with an in-memory subscriber layer that keeps each closed span.

mod sender_support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use hookgate_core::Scheme;
use hookgate_sender::{Endpoint, MemoryQueue, Message, Queue, Sender};
use sender_support::{fast_policy, test_worker, until_final, Receiver, Reply};
use tracing::{
    field::{Field, Visit},
    span::{Attributes, Id, Record},
    Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

type Fields = BTreeMap<String, String>;

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
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "hookgate_sender.deliver" {
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

#[test]
fn each_attempt_is_one_span_with_its_status_and_outcome() {
    let spans = Spans::default();
    // A global default: the worker's tasks run on the runtime's threads.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // 503, then 200.
            let receiver = Receiver::start([Reply::status(503)]).await;
            let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
            let sender = Sender::new(queue.clone());
            sender
                .add_endpoint(Endpoint::new("shop", receiver.url(), Scheme::GitHub, "s").unwrap())
                .await
                .unwrap();
            let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
            let worker = builder.build().unwrap().spawn();
            let key = sender
                .enqueue(
                    "shop",
                    Message::new("t", "{}").try_with_id("msg_traced").unwrap(),
                )
                .await
                .unwrap();
            until_final(&mut reports, &key).await;
            worker.shutdown(std::time::Duration::from_secs(5)).await;
        });
    let got = spans.0.lock().unwrap().clone();
    let view: Vec<Vec<(&str, &str)>> = got
        .iter()
        .map(|f| {
            [
                "message_id",
                "endpoint",
                "attempt",
                "url_index",
                "status",
                "outcome",
            ]
            .iter()
            .map(|k| (*k, f.get(*k).map_or("-", String::as_str)))
            .collect()
        })
        .collect();
    assert_eq!(
        view,
        vec![
            vec![
                ("message_id", "msg_traced"),
                ("endpoint", "shop"),
                ("attempt", "1"),
                ("url_index", "0"),
                ("status", "503"),
                ("outcome", "retry")
            ],
            vec![
                ("message_id", "msg_traced"),
                ("endpoint", "shop"),
                ("attempt", "2"),
                ("url_index", "0"),
                ("status", "200"),
                ("outcome", "delivered")
            ],
        ]
    );
}
