//! `hookgate demo` runs the whole story and every promise it checks holds.

use std::process::Command;

#[test]
fn demo_holds_its_promises_for_every_scheme() {
    for scheme in ["standard", "stripe", "github", "slack", "shopify"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["demo", "--scheme", scheme])
            .output()
            .expect("run hookgate demo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "demo --scheme {scheme} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("all promises held."), "{stdout}");
        // The story's landmarks are printed.
        for landmark in [
            "Idempotent-Replayed: true",
            "dead-lettered: exhausted",
            "replayed msg_order_shipped",
            "401 Unauthorized",
        ] {
            assert!(
                stdout.contains(landmark),
                "missing {landmark:?} in:\n{stdout}"
            );
        }
        assert!(!stdout.contains("FAILED"), "{stdout}");
    }
}
