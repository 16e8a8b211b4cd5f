//! Helpers for the `hookgate send` / `hookgate dlq` tests: run the binary,
//! and a scripted receiver on 127.0.0.1 that verifies signatures and counts.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::VecDeque,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    Router,
};
use hookgate_core::{Scheme, Verifier};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: Option<String>,
    pub body: Bytes,
    pub valid: bool,
    pub status: u16,
}

#[derive(Debug, Default)]
struct State_ {
    script: Mutex<VecDeque<u16>>,
    /// Status once the script is used up.
    fallback: Mutex<u16>,
    seen: Mutex<Vec<Seen>>,
}

/// A Standard Webhooks receiver on 127.0.0.1 answering from a script.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State_>,
}

impl Receiver {
    pub async fn start(script: &[u16], fallback: u16) -> Self {
        let state = Arc::new(State_ {
            script: Mutex::new(script.iter().copied().collect()),
            fallback: Mutex::new(fallback),
            seen: Mutex::default(),
        });
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn set_fallback(&self, status: u16) {
        *self.state.fallback.lock().unwrap() = status;
    }
}

async fn answer(State(state): State<Arc<State_>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let valid = verifier.verify(&headers, &body).is_ok();
    let status = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| *state.fallback.lock().unwrap());
    state.seen.lock().unwrap().push(Seen {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        valid,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Run `hookgate ARGS` (off the async runtime), with optional stdin.
pub async fn hookgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let stdin = stdin.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(&args)
            .env_remove("HOOKGATE_SECRET")
            .env_remove("HOOKGATE_STORE")
            .env_remove("HOOKGATE_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hookgate");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            pipe.write_all(&data).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `HOOKGATE_POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `HOOKGATE_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Skip (print and return `true`) when a server is unreachable; fail under `CI=true`.
pub fn skip_unreachable(what: &str, err: &dyn std::fmt::Display) -> bool {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{what} unreachable under CI=true: {err}"
    );
    eprintln!("skipping: {what} unreachable ({err}); set the URL env var to run this test");
    true
}

/// A fresh namespace name (valid as a Postgres schema and a Redis prefix).
pub fn namespace() -> String {
    format!("hg_cli_{:012x}", rand::random::<u64>() >> 16)
}
