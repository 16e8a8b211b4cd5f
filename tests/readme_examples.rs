//! The README's Rust examples compile as a user's own crate would build
//! them: a fresh package that depends on `hookgate` with its default
//! features (plus tokio and axum), one binary per example. The doc tests
//! compile the same blocks too, but with this workspace's dev-dependencies
//! and all features, which would hide a feature the README forgets to
//! mention.
//!
//! The package lives under `target/readme-examples/` with its own target
//! directory (the first build compiles the dependencies once) and reuses
//! this workspace's `Cargo.lock`, offline.

use std::{path::Path, process::Command};

fn rust_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match &mut current {
            None if line.starts_with("```rust") && !line.contains("ignore") => {
                current = Some(String::new())
            }
            Some(block) if line.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                // rustdoc's hidden lines (`# ...`) are part of the example.
                let line = line.strip_prefix("# ").unwrap_or(line);
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn readme_examples_build_in_a_fresh_crate_with_default_features() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "the README's receiver and sender examples"
    );

    let dir = root.join("target/readme-examples");
    let bins = dir.join("src/bin");
    let _ = std::fs::remove_dir_all(&bins);
    std::fs::create_dir_all(&bins).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "readme-examples"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
hookgate = {{ path = {root:?} }}
tokio = {{ version = "1", features = ["macros", "rt-multi-thread", "net", "time"] }}
axum = {{ version = "0.8", default-features = false, features = ["tokio", "http1"] }}
"#,
            root = root.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        std::fs::write(bins.join(format!("example_{i}.rs")), block).unwrap();
    }
    let out = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--bins", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "a README example does not build with hookgate's default features:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
