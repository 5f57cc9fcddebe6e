//! The messaging commands as a user meets them: hook settings on `bot add`
//! and `bot set`, `send`, `queue list|retry|drop`.

use crate::cli::{init, spawn_run};
use crate::common::*;
use std::time::Duration;
use wavault::messaging::hook::keys;
use wavault::messaging::queue::{NewMessage, Queue};

fn config(dir: &std::path::Path, id: &str) -> wavault::vault::BotConfig {
    let v = wavault::Vault::open(dir, PASS).unwrap();
    v.bot_config(&bot(id)).unwrap()
}

#[test]
fn hook_settings_on_bot_add_and_bot_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    let out = run(wavault(dir).args(["bot", "add", "a", "--webhook", "ftp://x/"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("http:// or https://"),
        "{}",
        stderr(&out)
    );
    let out = run(wavault(dir).args([
        "bot",
        "add",
        "a",
        "--webhook",
        "http://x/",
        "--on-message",
        "cat",
    ]));
    assert_eq!(
        code(&out),
        2,
        "webhook and command conflict: {}",
        stderr(&out)
    );
    let out = run(wavault(dir).args([
        "bot",
        "add",
        "a",
        "--webhook",
        "http://127.0.0.1:9/h",
        "--hook-timeout",
        "2s",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let c = config(dir, "a");
    assert_eq!(c.webhook.as_deref(), Some("http://127.0.0.1:9/h"));
    assert_eq!(
        c.extra.get(keys::TIMEOUT_MS).map(String::as_str),
        Some("2000")
    );

    let out = run(wavault(dir).args([
        "bot",
        "set",
        "a",
        "--on-message",
        "cat >/dev/null",
        "--queue-max",
        "5",
        "--queue-max-age",
        "1h",
        "--hook-concurrency",
        "2",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("hook command"), "{}", stdout(&out));
    let c = config(dir, "a");
    assert_eq!(c.webhook, None, "a command replaces the webhook");
    assert_eq!(
        c.extra.get(keys::ON_MESSAGE).map(String::as_str),
        Some("cat >/dev/null")
    );
    assert_eq!(c.extra.get(keys::QUEUE_MAX).map(String::as_str), Some("5"));
    assert_eq!(
        c.extra.get(keys::QUEUE_MAX_AGE_SECS).map(String::as_str),
        Some("3600")
    );
    assert_eq!(
        c.extra.get(keys::CONCURRENCY).map(String::as_str),
        Some("2")
    );
    assert_eq!(
        c.extra.get(keys::TIMEOUT_MS).map(String::as_str),
        Some("2000"),
        "kept"
    );

    let out = run(wavault(dir).args(["bot", "set", "a", "--no-hook"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let c = config(dir, "a");
    assert!(c.webhook.is_none() && !c.extra.contains_key(keys::ON_MESSAGE));
    assert_eq!(
        c.extra.get(keys::QUEUE_MAX).map(String::as_str),
        Some("5"),
        "limits kept"
    );

    let out = run(wavault(dir).args(["bot", "set", "nobody", "--queue-max", "3"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let out = run(wavault(dir).args(["bot", "set", "a", "--hook-concurrency", "0"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn send_needs_a_valid_recipient_and_the_running_bot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    assert_eq!(code(&run(wavault(dir).args(["bot", "add", "b"]))), 0);
    let out = run(wavault(dir).args(["send", "b", "12", "hi"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid recipient"),
        "{}",
        stderr(&out)
    );
    // No `run`: `send` would connect the bot alone, but it is not paired.
    let out = run(wavault(dir).args(["send", "b", "4915112345678", "hi"]));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("not paired"), "{}", stderr(&out));
    let out = run(wavault(dir).args(["send", "nobody", "4915112345678", "hi"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));

    // With `run` holding the vault: the bot runs but cannot reach WhatsApp
    // here, so it is not connected; an unknown bot is not found.
    let (mut child, ready) = spawn_run(dir);
    let started = ready.recv_timeout(Duration::from_secs(30));
    let results = started.map(|()| {
        (
            run(wavault(dir).args(["send", "b", "4915112345678", "hi"])),
            run(wavault(dir).args(["send", "nobody", "4915112345678", "hi"])),
            run(wavault(dir).args(["queue", "list", "b", "--json"])),
            run(wavault(dir).args(["bot", "set", "b", "--queue-max", "9"])),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let (not_connected, unknown, list, set) = results.expect("run reports it is running");
    assert_eq!(code(&not_connected), 7, "{}", stderr(&not_connected));
    assert!(
        stderr(&not_connected).contains("not connected"),
        "{}",
        stderr(&not_connected)
    );
    assert_eq!(code(&unknown), 6, "{}", stderr(&unknown));
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    assert_eq!(stdout(&list).trim(), "[]");
    assert_eq!(
        code(&set),
        0,
        "bot set through the runner: {}",
        stderr(&set)
    );
    assert_eq!(
        config(dir, "b")
            .extra
            .get(keys::QUEUE_MAX)
            .map(String::as_str),
        Some("9")
    );
}

#[test]
fn queue_list_retry_and_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let v = new_vault(dir);
        add_bot(&v, "q");
        let q = Queue::new(v.view(&bot("q")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = wavault::vault::now();
        let msg = |id: &str| NewMessage {
            chat: "4915112345678@s.whatsapp.net".into(),
            sender: "4915112345678@s.whatsapp.net".into(),
            id: id.into(),
            summary: "{}".into(),
        };
        rt.block_on(async {
            q.enqueue(&[msg("OLD1"), msg("OLD2")], 100, now - 10 * 86_400)
                .await
                .unwrap()
                .unwrap();
            q.enqueue(&[msg("NEW1")], 100, now).await.unwrap().unwrap();
        });
        assert_eq!(
            rt.block_on(q.expire(Duration::from_secs(7 * 86_400), now))
                .unwrap()
                .len(),
            2
        );
        v.flush().unwrap();
    }
    let list = |dir: &std::path::Path| -> Vec<(String, String)> {
        let out = run(wavault(dir).args(["queue", "list", "q", "--json"]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let held = |id: &str| (id.to_owned(), "held".to_owned());
    let waiting = |id: &str| (id.to_owned(), "waiting".to_owned());
    assert_eq!(list(dir), [held("OLD1"), held("OLD2"), waiting("NEW1")]);
    let out = run(wavault(dir).args(["status", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["messages"]["queued"], 3);
    assert_eq!(rows[0]["messages"]["held"], 2);
    assert_eq!(rows[0]["messages"]["expired"], 2);
    let out = run(wavault(dir).args(["queue", "list", "q"]));
    assert!(
        stdout(&out).contains("3 message(s) queued"),
        "{}",
        stdout(&out)
    );
    let out = run(wavault(dir).args(["queue", "retry", "q"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 held message(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        list(dir),
        [waiting("OLD1"), waiting("OLD2"), waiting("NEW1")]
    );
    // Hold one again, then drop the held ones only.
    {
        let v = wavault::Vault::open(dir, PASS).unwrap();
        let q = Queue::new(v.view(&bot("q")));
        let later = wavault::vault::now() + 8 * 86_400;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(q.expire(Duration::from_secs(7 * 86_400), later))
                .unwrap()
                .len(),
            3
        );
    }
    // Without a terminal to ask, dropping needs --yes: nothing changes.
    let out = run(wavault(dir).args(["queue", "drop", "q"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(list(dir).len(), 3);
    let out = run(wavault(dir).args(["queue", "drop", "q", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("dropped 3"), "{}", stdout(&out));
    assert!(list(dir).is_empty());
    // The automatic backup taken first holds the three messages: restored,
    // they are back (held).
    let backup = stdout(&out)
        .split("automatic backup first: ")
        .nth(1)
        .map(|s| s.trim().trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no automatic backup named: {}", stdout(&out)));
    let out = run(wavault(dir).args(["restore", "--force", &backup]).env(
        "WAVAULT_BACKUP_PASSPHRASE",
        std::str::from_utf8(PASS).unwrap(),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(list(dir).len(), 3, "the backup holds the dropped messages");
    let out = run(wavault(dir).args(["queue", "list", "nobody"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
}

/// `send --idempotency-key/--reply-to` and `--send-rate` refuse what they
/// do not take (exit 2, naming the accepted form) before anything runs;
/// `bot set --send-rate` stores the bot's own rate (or `off`).
#[test]
fn send_key_reply_to_and_send_rate_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    assert_eq!(code(&run(wavault(dir).args(["bot", "add", "b"]))), 0);
    let long = "k".repeat(256);
    for (args, says) in [
        (vec!["--idempotency-key", ""], "printable ASCII"),
        (vec!["--idempotency-key", long.as_str()], "printable ASCII"),
        (vec!["--idempotency-key", "tab\there"], "printable ASCII"),
        (vec!["--reply-to", "not an id"], "id of a message"),
    ] {
        let mut argv = vec!["send", "b", "4917300000003", "hi"];
        argv.extend(args);
        let out = run(wavault(dir).args(&argv));
        assert_eq!(code(&out), 2, "{argv:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{argv:?}: {}", stderr(&out));
    }
    for rate in ["0/min", "abc", "60", "1001/min"] {
        for cmd in [&["bot", "set", "b"][..], &["run"]] {
            let mut argv = cmd.to_vec();
            argv.extend(["--send-rate", rate]);
            let out = run(wavault(dir).args(&argv));
            assert_eq!(code(&out), 2, "{argv:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("N/min"), "{argv:?}: {}", stderr(&out));
        }
    }
    let rate = |dir| config(dir, "b").extra.get(keys::SEND_RATE).cloned();
    assert_eq!(
        code(&run(wavault(dir).args([
            "bot",
            "set",
            "b",
            "--send-rate",
            "20/min"
        ]))),
        0
    );
    assert_eq!(rate(dir).as_deref(), Some("20/min"));
    assert_eq!(
        code(&run(wavault(dir).args([
            "bot",
            "set",
            "b",
            "--send-rate",
            "off"
        ]))),
        0
    );
    assert_eq!(rate(dir).as_deref(), Some("off"));
}

/// `media get` usage errors and lookups, with no `run`: a missing `-o`, a
/// bad message id, a folder that does not exist or a folder as FILE, and
/// absurd sizes are exit 2 before anything is fetched; an unknown bot is
/// exit 6, an unknown message of a known bot too; `run` refuses absurd
/// `--media-max` / `--media-inline-max` values before opening the vault.
#[test]
fn media_get_usage_errors_and_unknown_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    assert_eq!(code(&run(wavault(dir).args(["bot", "add", "b"]))), 0);
    let missing = dir.join("no-such-folder").join("f.jpg");
    let folder = dir.to_str().unwrap();
    for (args, says) in [
        (vec!["media", "get", "b", "3EB0AA"], "--output"),
        (
            vec!["media", "get", "b", "not an id", "-o", "-"],
            "id of a message",
        ),
        (
            vec![
                "media",
                "get",
                "b",
                "3EB0AA",
                "-o",
                missing.to_str().unwrap(),
            ],
            "does not exist",
        ),
        (
            vec!["media", "get", "b", "3EB0AA", "-o", folder],
            "is a folder",
        ),
        (
            vec!["media", "get", "b", "3EB0AA", "-o", "-", "--media-max", "0"],
            "--media-max",
        ),
        (
            vec![
                "media",
                "get",
                "b",
                "3EB0AA",
                "-o",
                "-",
                "--media-max",
                "12parsecs",
            ],
            "unknown size unit",
        ),
    ] {
        let out = run(wavault(dir).args(&args));
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = run(wavault(dir).args(["media", "get", "nobody", "3EB0AA", "-o", "-"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let out = run(wavault(dir).args(["media", "get", "b", "3EB0AA", "-o", "-"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("media of message 3EB0AA"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    for args in [
        vec!["run", "--media-max", "3GiB"],
        vec!["run", "--media-inline-max", "0"],
        vec!["run", "--media-max", "1MiB", "--media-inline-max", "2MiB"],
    ] {
        let out = run(wavault(dir).args(&args));
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("media"), "{args:?}: {}", stderr(&out));
    }
}

/// `send --file` usage errors, each exit 2 with a clear message, before
/// the vault is needed: a missing file, a folder, a file over 64 MiB (a
/// sparse file: nothing is read), an unknown `--as`, a TEXT with `--file`,
/// `--caption` without `--file`.
#[test]
fn send_file_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    assert_eq!(code(&run(wavault(dir).args(["bot", "add", "b"]))), 0);
    let big = dir.join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let pdf = dir.join("a.pdf");
    std::fs::write(&pdf, b"%PDF-1.4").unwrap();
    let (big, pdf, folder) = (
        big.to_str().unwrap().to_owned(),
        pdf.to_str().unwrap().to_owned(),
        dir.to_str().unwrap().to_owned(),
    );
    let to = "4918200000009";
    for (args, says) in [
        (
            vec!["--file", "/nonexistent/x.pdf"],
            "cannot read /nonexistent/x.pdf",
        ),
        (vec!["--file", folder.as_str()], "not a regular file"),
        (
            vec!["--file", big.as_str()],
            "the limit for sending is 64.0 MiB",
        ),
        (
            vec!["--file", pdf.as_str(), "--as", "gif"],
            "unknown media kind",
        ),
        (vec!["--file", pdf.as_str(), "hello"], "cannot be used with"),
        (vec!["--caption", "c", "hello"], "--file"),
    ] {
        let out = run(wavault(dir).args(["send", "b", to]).args(&args));
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
