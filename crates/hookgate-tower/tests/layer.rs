//! The layer over real HTTP on loopback: the six steps, their status codes,
//! exactly-once handling across replicas, release on failure, lease expiry,
//! fail-closed / fail-open, and replays of unsigned-id schemes.
#![cfg(feature = "axum")]

mod layer_support;

use std::{sync::Arc, time::Duration};

use hookgate_core::{unix_now, Scheme};
use hookgate_tower::{
    store::{Claim, DedupStore},
    MemoryStore, VerifyWebhookLayer,
};
use layer_support::*;
use sha2::{Digest as _, Sha256};

const BODY: &[u8] = br#"{"type":"invoice.paid","amount":4200}"#;

fn layer_on(store: SharedStore, prefix: &str) -> VerifyWebhookLayer<SharedStore> {
    VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .with_store(store)
        .with_prefix(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_handle_64_concurrent_deliveries_exactly_once() {
    for_each_store(|name, store, replica| async move {
        let prefix = test_prefix();
        // Two independent layer instances (two replicas) sharing one store.
        // The handler holds on until every other delivery has seen a 409.
        let a = serve(
            layer_on(Arc::clone(&store), &prefix),
            vec![Action::Gated(200)],
        )
        .await;
        let b = serve(layer_on(replica, &prefix), vec![Action::Gated(200)]).await;
        let id = random_id("msg");
        let client = client();
        let blocked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let url = if i % 2 == 0 { a.url() } else { b.url() };
            let (client, id, blocked) = (client.clone(), id.clone(), Arc::clone(&blocked));
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..3000 {
                    // Each retry is signed afresh, as a sender does.
                    let res = post(
                        &client,
                        &url,
                        &sign(Scheme::StandardWebhooks, &id, BODY),
                        BODY,
                    )
                    .await;
                    if res.status() == 409 {
                        assert!(
                            res.headers().contains_key("retry-after"),
                            "409 carries Retry-After"
                        );
                        if conflicts == 0 {
                            blocked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        conflicts += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let replayed = res.headers().get("idempotent-replayed").is_some();
                    return (res.status().as_u16(), replayed, conflicts);
                }
                panic!("delivery never left 409");
            }));
        }
        for _ in 0..3000 {
            if blocked.load(std::sync::atomic::Ordering::SeqCst) == 63 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            blocked.load(std::sync::atomic::Ordering::SeqCst),
            63,
            "[{name}] while one handler runs, all 63 other deliveries get 409"
        );
        a.gate.add_permits(1);
        b.gate.add_permits(1);
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            a.calls() + b.calls(),
            1,
            "[{name}] the handler ran exactly once"
        );
        assert!(
            results.iter().all(|(s, _, _)| *s == 200),
            "[{name}] every delivery ends 2xx: {results:?}"
        );
        assert_eq!(
            results.iter().filter(|(_, r, _)| !r).count(),
            1,
            "[{name}] one original answer, the rest replayed"
        );
        assert_eq!(
            results.iter().filter(|(_, _, c)| *c > 0).count(),
            63,
            "[{name}] every delivery but the first retried after 409"
        );
    })
    .await;
}

#[tokio::test]
async fn handler_500_is_released_and_a_retry_runs_it_once_more() {
    for_each_store(|name, store, _replica| async move {
        let counting = Arc::new(Counting::new(store));
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
            .with_shared_store(Arc::clone(&counting))
            .with_prefix(test_prefix());
        let srv = serve(layer, vec![Action::Status(500), Action::Status(200)]).await;
        let (client, id) = (client(), random_id("msg"));
        let first = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(first.status(), 500, "[{name}]");
        assert!(first.headers().get("idempotent-replayed").is_none());
        let retry = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(retry.status(), 200, "[{name}] the 500 was not cached");
        assert_eq!(srv.calls(), 2);
        let again = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(srv.calls(), 2, "[{name}] the success is remembered");
        // claim+release, claim+complete, claim.
        assert_eq!(counting.claims.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            counting.releases.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(
            counting.completes.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn lease_expiry_after_a_crash_lets_a_later_delivery_run_the_handler() {
    for_each_store(|name, store, _replica| async move {
        let prefix = test_prefix();
        let srv = serve(
            layer_on(Arc::clone(&store), &prefix),
            vec![Action::Status(200)],
        )
        .await;
        let (client, id) = (client(), random_id("msg"));
        // A replica claimed the event and died: the claim is never completed.
        let key = format!("{prefix}:standard:{id}");
        let digest: [u8; 32] = Sha256::digest(BODY).into();
        let claim = store
            .claim(&key, &digest, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Acquired(_)), "[{name}] {claim:?}");
        let mut saw_conflict = false;
        let mut final_status = 0;
        for _ in 0..300 {
            let res = post(
                &client,
                &srv.url(),
                &sign(Scheme::StandardWebhooks, &id, BODY),
                BODY,
            )
            .await;
            if res.status() == 409 {
                saw_conflict = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            final_status = res.status().as_u16();
            break;
        }
        assert!(
            saw_conflict,
            "[{name}] the dead replica's claim was in flight at first"
        );
        assert_eq!(
            final_status, 200,
            "[{name}] after the lease expired the handler ran"
        );
        assert_eq!(srv.calls(), 1);
    })
    .await;
}

#[tokio::test]
async fn handler_4xx_is_stored_but_408_429_and_5xx_are_not() {
    for (status, cached) in [
        (404, true),
        (422, true),
        (400, true),
        (408, false),
        (429, false),
        (503, false),
    ] {
        let srv = serve(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
            vec![Action::Status(status)],
        )
        .await;
        let (client, id) = (client(), random_id("msg"));
        let first = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(first.status(), status);
        let second = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(second.status(), status);
        if cached {
            assert_eq!(
                second.headers()["idempotent-replayed"],
                "true",
                "{status} is stored"
            );
            assert_eq!(srv.calls(), 1, "{status}: handler not called again");
        } else {
            assert!(
                second.headers().get("idempotent-replayed").is_none(),
                "{status} is not stored"
            );
            assert_eq!(srv.calls(), 2, "{status}: handler called again");
        }
    }
}

#[tokio::test]
async fn duplicate_of_a_done_event_replays_the_status_without_calling_the_handler() {
    let srv = serve(
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
        vec![Action::Status(202)],
    )
    .await;
    let (client, id) = (client(), random_id("msg"));
    let first = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(first.status(), 202);
    assert_eq!(first.text().await.unwrap(), "handled 0");
    for _ in 0..3 {
        let dup = post(
            &client,
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(dup.status(), 202);
        assert_eq!(dup.headers()["idempotent-replayed"], "true");
    }
    assert_eq!(srv.calls(), 1);
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(Some(id), BODY.to_vec())],
        "handler saw the id and the body unchanged"
    );
}

#[tokio::test]
async fn same_id_with_a_different_validly_signed_body_is_422() {
    let srv = serve(
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
        vec![Action::Status(200)],
    )
    .await;
    let (client, id) = (client(), random_id("msg"));
    let first = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(first.status(), 200);
    let other = br#"{"type":"invoice.paid","amount":1}"#;
    let res = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, other),
        other,
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/conflicting_duplicate"
    );
    assert_eq!(srv.calls(), 1);
}

#[tokio::test]
async fn same_id_different_body_while_in_flight_is_422() {
    let srv = serve(
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
        vec![Action::Gated(200)],
    )
    .await;
    let (client, id) = (client(), random_id("msg"));
    let (c2, url, id2) = (client.clone(), srv.url(), id.clone());
    let slow = tokio::spawn(async move {
        post(&c2, &url, &sign(Scheme::StandardWebhooks, &id2, BODY), BODY)
            .await
            .status()
    });
    // Wait until the first delivery holds the claim.
    while srv.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = b"{}";
    let res = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, other),
        other,
    )
    .await;
    assert_eq!(res.status(), 422);
    let same = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(same.status(), 409);
    let retry_after: u64 = same.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry_after),
        "rest of the 30 s lease: {retry_after}"
    );
    srv.gate.add_permits(1);
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(srv.calls(), 1);
}

#[tokio::test]
async fn tampered_body_id_or_timestamp_is_401_and_writes_nothing() {
    let store = Arc::new(Counting::new(MemoryStore::default()));
    let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .with_shared_store(Arc::clone(&store));
    let srv = serve(layer, vec![Action::Status(200)]).await;
    let (client, id) = (client(), random_id("msg"));
    let headers = sign(Scheme::StandardWebhooks, &id, BODY);
    let set = |name: &str, value: String| -> Vec<(&'static str, String)> {
        headers
            .iter()
            .map(|(k, v)| (*k, if *k == name { value.clone() } else { v.clone() }))
            .collect()
    };
    // Body.
    let res = post(
        &client,
        &srv.url(),
        &headers,
        br#"{"type":"invoice.paid","amount":9999}"#,
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/invalid_signature"
    );
    // Id.
    let res = post(
        &client,
        &srv.url(),
        &set("webhook-id", random_id("msg")),
        BODY,
    )
    .await;
    assert_eq!(res.status(), 401);
    // Timestamp (still within tolerance, but not the signed one).
    let res = post(
        &client,
        &srv.url(),
        &set("webhook-timestamp", {
            let signed: i64 = headers
                .iter()
                .find(|(k, _)| *k == "webhook-timestamp")
                .unwrap()
                .1
                .parse()
                .unwrap();
            (signed - 1).to_string()
        }),
        BODY,
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/invalid_signature"
    );
    // Stale but correctly signed.
    let stale = signer(Scheme::StandardWebhooks).sign(&id, unix_now() - 3600, BODY);
    let res = post(&client, &srv.url(), &stale, BODY).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/timestamp_out_of_tolerance"
    );
    // In the future.
    let future = signer(Scheme::StandardWebhooks).sign(&id, unix_now() + 3600, BODY);
    assert_eq!(post(&client, &srv.url(), &future, BODY).await.status(), 401);
    assert_eq!(store.total(), 0, "nothing reached the store");
    assert_eq!(srv.calls(), 0);
    // The genuine delivery still goes through: nothing was poisoned.
    let res = post(&client, &srv.url(), &headers, BODY).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn missing_or_malformed_headers_are_400() {
    let store = Arc::new(Counting::new(MemoryStore::default()));
    let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .with_shared_store(Arc::clone(&store));
    let srv = serve(layer, vec![Action::Status(200)]).await;
    let client = client();
    let headers = sign(Scheme::StandardWebhooks, &random_id("msg"), BODY);
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let partial: Vec<_> = headers
            .iter()
            .filter(|(k, _)| *k != missing)
            .cloned()
            .collect();
        let res = post(&client, &srv.url(), &partial, BODY).await;
        assert_eq!(res.status(), 400, "without {missing}");
        assert_eq!(
            problem_type(res).await,
            "https://hookgate.dev/problems/malformed_webhook"
        );
    }
    let bad_ts: Vec<_> = headers
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "webhook-timestamp" {
                    "1e9".to_owned()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    assert_eq!(post(&client, &srv.url(), &bad_ts, BODY).await.status(), 400);
    assert_eq!(post(&client, &srv.url(), &[], BODY).await.status(), 400);
    assert_eq!(store.total(), 0);
    assert_eq!(srv.calls(), 0);
}

#[cfg(any(feature = "redis", feature = "postgres"))]
#[tokio::test]
async fn store_unreachable_is_503_with_retry_after_and_fail_open_lets_it_through() {
    for (name, store) in unreachable_stores().await {
        let closed = serve(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                .with_store(Arc::clone(&store)),
            vec![Action::Status(200)],
        )
        .await;
        let (client, id) = (client(), random_id("msg"));
        let res = post(
            &client,
            &closed.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(res.status(), 503, "[{name}]");
        assert!(
            res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert_eq!(
            problem_type(res).await,
            "https://hookgate.dev/problems/store_unavailable"
        );
        assert_eq!(closed.calls(), 0, "[{name}] nothing reached the handler");

        let open = serve(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                .with_store(store)
                .with_fail_open(true),
            vec![Action::Status(200)],
        )
        .await;
        let res = post(
            &client,
            &open.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(res.status(), 200, "[{name}] fail-open runs the handler");
        assert_eq!(open.calls(), 1);
    }
}

#[tokio::test]
async fn content_length_over_the_limit_is_413_before_reading() {
    let store = Arc::new(Counting::new(MemoryStore::default()));
    let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .with_shared_store(Arc::clone(&store))
        .with_body_limit(1024);
    let srv = serve(layer, vec![Action::Status(200)]).await;
    let big = vec![b'x'; 1025];
    let res = post(
        &client(),
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &random_id("msg"), &big),
        &big,
    )
    .await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/payload_too_large"
    );
    let ok = vec![b'x'; 1024];
    let res = post(
        &client(),
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &random_id("msg"), &ok),
        &ok,
    )
    .await;
    assert_eq!(res.status(), 200, "exactly at the limit is accepted");
    assert_eq!(srv.calls(), 1);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_without_reading_it_whole() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let layer =
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)).with_body_limit(64 * 1024);
    let srv = serve(layer, vec![Action::Status(200)]).await;
    let headers = sign(Scheme::StandardWebhooks, &random_id("msg"), b"irrelevant");
    let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "POST /hook HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n",
        srv.addr
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // Would be 1 GiB if the server read it all.
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 16 * 1024;
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("{CHUNK:x}\r\n{}\r\n", "y".repeat(CHUNK));
        let mut sent = 0;
        while sent < TOTAL {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += CHUNK;
        }
        sent
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before a response");
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    drop(rd);
    let sent = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the server stopped reading, so the writer fails")
        .unwrap();
    assert!(
        sent < TOTAL / 4,
        "server stopped reading early; client wrote {sent} bytes"
    );
    assert_eq!(srv.calls(), 0);
}

#[tokio::test]
async fn github_and_shopify_replays_with_a_changed_id_header_are_duplicates() {
    for (scheme, id_header) in [
        (Scheme::GitHub, "x-github-delivery"),
        (Scheme::Shopify, "x-shopify-webhook-id"),
    ] {
        let srv = serve(
            VerifyWebhookLayer::new(verifier(scheme)),
            vec![Action::Status(200)],
        )
        .await;
        let client = client();
        let body = format!(r#"{{"action":"opened","n":{}}}"#, rand::random::<u32>()).into_bytes();
        let headers = sign(scheme, &random_id("delivery"), &body);
        let first = post(&client, &srv.url(), &headers, &body).await;
        assert_eq!(first.status(), 200, "{scheme}");
        // Captured and replayed under a fresh id header.
        let replay: Vec<_> = headers
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    if k.eq_ignore_ascii_case(id_header) {
                        random_id("forged")
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        assert_ne!(replay, headers);
        let res = post(&client, &srv.url(), &replay, &body).await;
        assert_eq!(res.status(), 200, "{scheme}");
        assert_eq!(
            res.headers()["idempotent-replayed"],
            "true",
            "{scheme} replay caught"
        );
        assert_eq!(srv.calls(), 1, "{scheme}");
    }
}

#[tokio::test]
async fn every_scheme_goes_through_and_dedups() {
    for scheme in Scheme::ALL {
        let srv = serve(
            VerifyWebhookLayer::new(verifier(scheme)),
            vec![Action::Status(200)],
        )
        .await;
        let client = client();
        let id = random_id("evt");
        let body = format!(r#"{{"id":"{id}","type":"x"}}"#).into_bytes();
        let res = post(&client, &srv.url(), &sign(scheme, &id, &body), &body).await;
        assert_eq!(res.status(), 200, "{scheme}");
        let res = post(&client, &srv.url(), &sign(scheme, &id, &body), &body).await;
        assert_eq!(res.headers()["idempotent-replayed"], "true", "{scheme}");
        assert_eq!(srv.calls(), 1, "{scheme}");
        let seen = srv.seen.lock().unwrap().clone();
        if scheme != Scheme::Slack {
            assert_eq!(
                seen[0].0.as_deref(),
                Some(id.as_str()),
                "{scheme} reports the id"
            );
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_is_500_and_released() {
    let srv = serve(
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
        vec![Action::Panic, Action::Status(200)],
    )
    .await;
    let (client, id) = (client(), random_id("msg"));
    let res = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(res.status(), 500);
    let res = post(
        &client,
        &srv.url(),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(res.status(), 200, "the panic released the claim");
    assert_eq!(srv.calls(), 2);
}

#[tokio::test]
async fn rotated_secrets_report_which_key_matched() {
    let verifier = hookgate_core::Verifier::from_secret_strings(
        Scheme::StandardWebhooks,
        [
            "whsec_bmV3IHNlY3JldCBuZXcgc2VjcmV0",
            secret_for(Scheme::StandardWebhooks),
        ],
    )
    .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = Arc::clone(&seen);
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move |w: hookgate_tower::extract::Webhook| async move {
                *s.lock().unwrap() = Some(w.verified.clone());
                "ok"
            }),
        )
        .layer(VerifyWebhookLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let id = random_id("msg");
    let res = post(
        &client(),
        &format!("http://{addr}/hook"),
        &sign(Scheme::StandardWebhooks, &id, BODY),
        BODY,
    )
    .await;
    assert_eq!(res.status(), 200);
    let v = seen.lock().unwrap().clone().unwrap();
    assert_eq!(v.key_index, 1);
    assert_eq!(v.id.as_deref(), Some(id.as_str()));
    assert_eq!(v.dedup_key, format!("hookgate:standard:{id}"));
    assert!(v.deduplicated);
    task.abort();
}

#[tokio::test]
async fn the_extractor_without_the_layer_is_500() {
    let srv = serve(
        VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
        vec![Action::Status(200)],
    )
    .await;
    let res = client()
        .post(format!("http://{}/unlayered", srv.addr))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(
        problem_type(res).await,
        "https://hookgate.dev/problems/missing_verify_layer"
    );
}

#[tokio::test]
async fn a_store_failure_after_the_handler_ran_still_returns_its_response() {
    for status in [201, 500] {
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)).with_store(
            LostAfterClaim {
                inner: MemoryStore::default(),
            },
        );
        let srv = serve(layer, vec![Action::Status(status)]).await;
        let id = random_id("msg");
        let res = post(
            &client(),
            &srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(res.status(), status, "the handler's own status");
        assert_eq!(
            res.text().await.unwrap(),
            "handled 0",
            "the handler's own body"
        );
        assert_eq!(srv.calls(), 1);
    }
}
