//! A binary whose whatsapp-rust skips the server certificate check refuses
//! to connect to WhatsApp, and says so in `--version`.
//!
//! The binary these tests run is such a build: the e2e tests turn on
//! whatsapp-rust's `danger-skip-cert-chain-verify` through the
//! dev-dependencies, and cargo unifies it into `target/*/wavault`. `.ci/run`
//! checks the other direction on a plain `cargo build` of the binary
//! (`--version` says "verification: on").

use crate::cli::{init, spawn_run};
use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn version_says_whether_the_server_certificate_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(wavault(tmp.path()).arg("--version"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("server certificate verification: OFF"),
        "{}",
        stdout(&out)
    );
    let out = run(wavault(tmp.path()).arg("-V"));
    assert_eq!(
        stdout(&out).trim(),
        format!("wavault {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_build_without_the_check_refuses_every_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    let out = run(wavault(dir).args(["bot", "add", "probe"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (mut child, ready) = spawn_run(dir);
    ready
        .recv_timeout(Duration::from_secs(30))
        .expect("run reports it is running");
    // Every attempt of the enabled bot fails with the refusal, recorded as
    // its last error (the refusal happens before any socket is opened).
    let deadline = Instant::now() + Duration::from_secs(30);
    let last_error = loop {
        let out = run(wavault(dir).args(["status", "--json"]));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let err = rows[0]["last_connection_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !err.is_empty() || Instant::now() > deadline {
            break err;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(
        last_error.contains("refusing to connect to WhatsApp")
            && last_error.contains("danger-skip-cert-chain-verify"),
        "last error: {last_error:?}"
    );
    assert!(status.success(), "{status:?}");
}
