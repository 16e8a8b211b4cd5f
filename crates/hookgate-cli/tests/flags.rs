//! The CLI is one CLI: every subcommand's `--help` ends with examples and
//! never prints a credential taken from
//! the environment; durations take bare seconds and humantime alike.

use std::process::{Command, Output};

fn hookgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("hookgate runs")
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SUBCOMMANDS: &[&[&str]] = &[
    &["demo"],
    &["sign"],
    &["verify"],
    &["serve"],
    &["send"],
    &["worker"],
    &["enqueue"],
    &["endpoint", "add"],
    &["endpoint", "show"],
    &["endpoint", "enable"],
    &["dlq"],
    &["endpoint"],
    &["dlq", "list"],
    &["dlq", "show"],
    &["dlq", "replay"],
    &["dlq", "purge"],
];

#[test]
fn help_never_prints_credentials_from_the_environment() {
    let env = [
        ("HOOKGATE_STORE", "postgres://ops:hunter2pw@db.internal/app"),
        ("HOOKGATE_SECRET", "whsec_s3cr3tValueFromEnv"),
        ("HOOKGATE_STORE_CA", "/etc/ssl/private-ca.pem"),
    ];
    for sub in SUBCOMMANDS {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = hookgate(&args, &env);
        assert!(out.status.success(), "{sub:?}: {}", all(&out));
        let text = all(&out);
        assert!(
            !text.contains("hunter2pw"),
            "{sub:?} --help shows the store password:\n{text}"
        );
        assert!(
            !text.contains("s3cr3tValue"),
            "{sub:?} --help shows the secret:\n{text}"
        );
    }
}

#[test]
fn long_running_commands_show_examples() {
    for sub in [
        &["serve"][..],
        &["worker"],
        &["enqueue"],
        &["endpoint", "add"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let text = all(&hookgate(&args, &[]));
        assert!(
            text.contains("Examples:"),
            "{sub:?} --help has no examples:\n{text}"
        );
    }
}

#[test]
fn durations_take_seconds_or_humantime() {
    // Flags parse (the store URL is what fails, after parsing: exit 2 naming it).
    for tolerance in ["300", "5m", "90s"] {
        let out = hookgate(
            &[
                "serve",
                "--scheme",
                "github",
                "--secret",
                "s",
                "--tolerance",
                tolerance,
                "--store",
                "ftp://nowhere",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(
            all(&out).contains("unsupported --store"),
            "{tolerance}: {}",
            all(&out)
        );
    }
    let out = hookgate(
        &[
            "serve",
            "--scheme",
            "github",
            "--secret",
            "s",
            "--tolerance",
            "soon",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(all(&out).contains("invalid value 'soon'"), "{}", all(&out));
    // --prefix still works as the old name of --namespace.
    let out = hookgate(
        &[
            "serve",
            "--scheme",
            "github",
            "--secret",
            "s",
            "--prefix",
            "x",
            "--store",
            "ftp://nowhere",
        ],
        &[],
    );
    assert!(all(&out).contains("unsupported --store"), "{}", all(&out));
}
