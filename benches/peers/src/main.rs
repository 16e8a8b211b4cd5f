//! hookgate-core against the peer crates, Standard Webhooks, one secret,
//! an `http::HeaderMap`, same message for everyone, at 1 KiB, 64 KiB and
//! 1 MiB. The implementations take turns batch by batch (interleaved), so a
//! noisy neighbour on the machine slows all of them alike; each keeps its
//! fastest batch. Also timed: raw SHA-256 over the same body — the floor,
//! since HMAC-SHA256 hashes the body once.
//!
//! Prints a Markdown table: ns per verification, hookgate's speed-up over
//! each peer, and each implementation's share of raw SHA-256 speed.
//!
//! Usage: `cargo run --release -- [--rounds N] [--budget-ms MS]`

use std::{hint::black_box, time::Instant};

use http::{HeaderMap, HeaderValue};
use sha2::{Digest as _, Sha256};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";

fn body(len: usize) -> Vec<u8> {
    let mut b = br#"{"id":"evt_1NkXbench","object":"event","data":""#.to_vec();
    b.resize(len.saturating_sub(2), b'x');
    b.extend_from_slice(b"\"}");
    b.truncate(len);
    b
}

/// Nanoseconds per call of `f`, the fastest of `rounds` batches sized to
/// take about `budget_ns` each.
struct Timer {
    best: f64,
    batch: u64,
}

impl Timer {
    fn new(f: &mut dyn FnMut(), budget_ns: f64) -> Self {
        // Size the batch from a short calibration run.
        let mut n = 1u64;
        loop {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            let el = t.elapsed().as_nanos() as f64;
            if el > budget_ns / 10.0 || n > 1 << 30 {
                let per = el / n as f64;
                return Self { best: f64::INFINITY, batch: ((budget_ns / per) as u64).max(1) };
            }
            n *= 2;
        }
    }

    fn round(&mut self, f: &mut dyn FnMut()) {
        let t = Instant::now();
        for _ in 0..self.batch {
            f();
        }
        let per = t.elapsed().as_nanos() as f64 / self.batch as f64;
        self.best = self.best.min(per);
    }
}

fn main() {
    let mut rounds = 30usize;
    let mut budget_ms = 20.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--budget-ms" => budget_ms = args.next().and_then(|v| v.parse().ok()).expect("--budget-ms MS"),
            _ => {
                eprintln!("usage: hookgate-peer-bench [--rounds N] [--budget-ms MS]");
                std::process::exit(2);
            }
        }
    }
    let budget_ns = budget_ms * 1e6;

    let hookgate = hookgate_core::Verifier::from_secret_strings(hookgate_core::Scheme::StandardWebhooks, [SECRET]).unwrap();
    let svix = svix::webhooks::Webhook::new(SECRET).unwrap();
    let standard = standardwebhooks::Webhook::new(SECRET).unwrap();

    println!("| body | hookgate-core | svix 2.9.1 | standardwebhooks 1.0.1 | raw SHA-256 | vs svix | vs standardwebhooks | hookgate / SHA-256 | svix / SHA-256 | standardwebhooks / SHA-256 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (len, label) in [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1024 * 1024, "1 MiB")] {
        let body = body(len);
        // The peers check the timestamp against the real clock: sign "now".
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let signer = hookgate_core::Signer::new(
            hookgate_core::Scheme::StandardWebhooks,
            hookgate_core::Scheme::StandardWebhooks.secret(SECRET).unwrap(),
        );
        let mut headers = HeaderMap::new();
        for (name, value) in signer.sign(ID, now, &body) {
            headers.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        // Every implementation accepts the message, and rejects a changed byte.
        let mut bad = body.clone();
        bad[len / 2] ^= 1;
        assert!(hookgate.verify_at(&headers, &body, now).is_ok());
        assert!(svix.verify(&body, &headers).is_ok());
        assert!(standard.verify(&body, &headers).is_ok());
        assert!(hookgate.verify_at(&headers, &bad, now).is_err());
        assert!(svix.verify(&bad, &headers).is_err());
        assert!(standard.verify(&bad, &headers).is_err());

        let mut runs: Vec<(&str, Box<dyn FnMut()>)> = vec![
            ("hookgate", Box::new(|| { black_box(hookgate.verify_at(black_box(&headers), black_box(&body), now).unwrap()); })),
            ("svix", Box::new(|| svix.verify(black_box(&body), black_box(&headers)).unwrap())),
            ("standardwebhooks", Box::new(|| standard.verify(black_box(&body), black_box(&headers)).unwrap())),
            ("sha256", Box::new(|| { black_box(Sha256::digest(black_box(&body))); })),
        ];
        let mut timers: Vec<Timer> = runs.iter_mut().map(|(_, f)| Timer::new(f.as_mut(), budget_ns)).collect();
        for _ in 0..rounds {
            for ((_, f), t) in runs.iter_mut().zip(timers.iter_mut()) {
                t.round(f.as_mut());
            }
        }
        let [h, s, w, sha] = [timers[0].best, timers[1].best, timers[2].best, timers[3].best];
        println!(
            "| {label} | {} | {} | {} | {} | {:.1}x | {:.1}x | {:.0} % | {:.0} % | {:.0} % |",
            fmt_ns(h), fmt_ns(s), fmt_ns(w), fmt_ns(sha),
            s / h, w / h, 100.0 * sha / h, 100.0 * sha / s, 100.0 * sha / w,
        );
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
