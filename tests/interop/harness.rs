//! Runs the providers' own webhook libraries for the interop tests.
//!
//! Included with `#[path]` by `tests/interop.rs` (root package) and by the
//! CLI's interop tests. [`setup`] runs `tests/interop/setup.sh`, which installs
//! pinned versions into `target/interop/` (a Python venv and an npm prefix)
//! idempotently; [`Interop::run`] sends a batch of cases to
//! `py_interop.py` or `node_interop.mjs` as JSON and returns their answers.
//!
//! Without python3 or node the tests print a skip message and pass, except
//! under `CI=true`, where they fail.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

/// Which helper runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `py_interop.py` in the venv: standardwebhooks, stripe, slack_sdk.
    Python,
    /// `node_interop.mjs`: @octokit/webhooks-methods, @shopify/shopify-api.
    Node,
}

/// Installed interop tooling.
#[derive(Debug, Clone)]
pub struct Interop {
    scripts: PathBuf,
    python: PathBuf,
    node_prefix: PathBuf,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Install (once per test binary) and locate the provider libraries.
///
/// Returns `None` after printing a skip message when python3/node are missing
/// or the install failed; panics instead under `CI=true`.
pub fn setup(workspace_root: &Path) -> Option<Interop> {
    static INTEROP: OnceLock<Result<Interop, String>> = OnceLock::new();
    let result = INTEROP.get_or_init(|| install(workspace_root));
    match result {
        Ok(i) => Some(i.clone()),
        Err(why) if ci() => panic!("interop tooling unavailable under CI=true: {why}"),
        Err(why) => {
            // Straight to stderr, past the test harness's output capture.
            let _ = writeln!(std::io::stderr(), "skipping interop test: {why}");
            None
        }
    }
}

fn install(root: &Path) -> Result<Interop, String> {
    let scripts = root.join("tests/interop");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let out = Command::new("bash")
        .arg(scripts.join("setup.sh"))
        .arg(&target)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/interop/setup.sh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dir = target.join("interop");
    Ok(Interop {
        scripts,
        python: dir.join("venv/bin/python"),
        node_prefix: dir.join("node"),
    })
}

impl Interop {
    /// Run `cases` through one helper; one answer per case, in order.
    pub fn run(&self, runtime: Runtime, cases: &[Value]) -> Vec<Value> {
        let mut cmd = match runtime {
            Runtime::Python => {
                let mut c = Command::new(&self.python);
                c.arg(self.scripts.join("py_interop.py"));
                c
            }
            Runtime::Node => {
                let mut c = Command::new("node");
                c.arg(self.scripts.join("node_interop.mjs"))
                    .arg(&self.node_prefix);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {runtime:?} helper: {e}"));
        let input = serde_json::json!({ "cases": cases }).to_string();
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("write cases to helper");
        let out = child.wait_with_output().expect("wait for helper");
        assert!(
            out.status.success(),
            "{runtime:?} helper failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{runtime:?} helper printed no JSON list ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(answers.len(), cases.len(), "one answer per case");
        answers
    }
}

/// The helper and library name that implement `scheme` (by hookgate name).
pub fn provider(scheme: &str) -> (Runtime, &'static str) {
    match scheme {
        "standard" => (Runtime::Python, "standardwebhooks"),
        "stripe" => (Runtime::Python, "stripe"),
        "slack" => (Runtime::Python, "slack"),
        "github" => (Runtime::Node, "octokit"),
        "shopify" => (Runtime::Node, "shopify"),
        other => panic!("no provider library for scheme {other}"),
    }
}

/// A header map as the JSON object the helpers take.
pub fn headers_json<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> Value {
    Value::Object(
        headers
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), Value::String(v.as_ref().to_owned())))
            .collect(),
    )
}

/// The `(name, value)` pairs of a helper's `{"headers": {..}}` answer.
pub fn answer_headers(answer: &Value) -> Vec<(String, String)> {
    answer["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("no headers in {answer}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string header").to_owned()))
        .collect()
}
