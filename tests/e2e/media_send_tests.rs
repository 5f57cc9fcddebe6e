//! Outbound media (issue 14): the bot sends images and documents by
//! `wavault send --file` (the real CLI through the control socket), by the
//! API (multipart and JSON base64) and by a hook's `send_file` answer
//! (base64, a path under `--media-dir`, a URL on the allow-list); the
//! contact downloads and decrypts them byte-identical. A hook's file from
//! a URL off the allow-list or a path outside `--media-dir` is refused.
//!
//! Why it exists: whatsapp-rust's real media crypto runs both ways (the
//! peer stores the encrypted blob, the contact decrypts it and checks the
//! hashes), and a hook must never make wavault read files or fetch URLs
//! the operator did not allow.

use std::time::Duration;

use serde_json::{json, Value};
use wavault::messaging::hook::Target;
use wavault::runner::{Runner, RunnerEvent};

use crate::hook_server::{HookServer, Mode};
use crate::live_tests::{cli, ok};
use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
use crate::peer::{Contact, Peer};
use crate::runner_tests::{bot, new_vault, next_event, synth_paired};

const DEADLINE: Duration = Duration::from_secs(60);
/// This module's numbers (4918200… only).
const BOT_PHONE: u64 = 4_918_200_000_001;

/// A small JPEG-looking image and a PDF-looking document (their magic
/// bytes make the kind; the rest is arbitrary, bytes of every value).
fn image(tag: u8) -> Vec<u8> {
    let mut b = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0".to_vec();
    b.extend((0..=255u8).map(|i| i ^ tag).cycle().take(3000));
    b
}

fn document(tag: u8) -> Vec<u8> {
    let mut b = b"%PDF-1.7\n".to_vec();
    b.extend((0..=255u8).rev().map(|i| i ^ tag).cycle().take(5000));
    b
}

/// Serves `body` to one GET on a loopback port (bound here, kept by the
/// serving thread); returns `http://127.0.0.1:PORT`.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let mut s = s;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body);
    });
    base
}

/// Waits for the message `id` at `contact` and returns its decrypted media:
/// (kind, mimetype, caption, file name, bytes).
async fn media_of(
    contact: &Contact,
    id: &str,
) -> (String, String, Option<String>, Option<String>, Vec<u8>) {
    let got = contact
        .wait_received("a media message", DEADLINE, |r| {
            r.iter().any(|m| m.id == id && m.media.is_some())
        })
        .await
        .unwrap_or_else(|e| panic!("message {id} with its media: {e}"));
    let m = got.into_iter().find(|m| m.id == id).unwrap();
    let md = m.media.unwrap();
    (md.kind, md.mimetype, md.caption, md.file_name, md.bytes)
}

/// The media messages `contact` got, as (kind, caption, bytes), in order.
async fn wait_media(
    contact: &Contact,
    what: &str,
    n: usize,
) -> Vec<(String, Option<String>, Vec<u8>)> {
    let got = contact
        .wait_received(what, DEADLINE, |r| {
            r.iter().filter(|m| m.media.is_some()).count() >= n
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    got.into_iter()
        .filter_map(|m| m.media)
        .map(|m| (m.kind, m.caption, m.bytes))
        .collect()
}

/// A multipart POST of `fields` (name, filename, bytes) with an optional
/// Idempotency-Key.
async fn post_multipart(
    url: String,
    token: &str,
    key: Option<&str>,
    fields: Vec<(&'static str, Option<&'static str>, Vec<u8>)>,
) -> (u16, Value) {
    let boundary = "wavault-test-7d1c";
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(f) = filename {
            body.extend(
                format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").bytes(),
            );
        }
        body.extend(b"\r\n\r\n");
        body.extend(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    let (token, key) = (token.to_owned(), key.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut req = agent
            .post(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header(
                "content-type",
                &format!("multipart/form-data; boundary={boundary}"),
            );
        if let Some(k) = &key {
            req = req.header("idempotency-key", k);
        }
        let mut resp = req.send(&body[..]).expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    })
    .await
    .unwrap()
}

async fn post_json(url: String, token: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let (code, text) = crate::messaging_tests::post_json_with(url, token, key, body).await;
    (code, serde_json::from_str(&text).unwrap_or(json!(text)))
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The entries waiting in the bot's queue (as `queue list` shows them).
fn queue_rows(runner: &Runner) -> Vec<wavault::ops::proto::QueueRow> {
    let req = wavault::ops::Request::Queue {
        bot: bot("filer"),
        action: wavault::ops::proto::QueueAction::List,
    };
    match wavault::ops::execute(&*runner.service(), req, Vec::new())
        .unwrap()
        .0
    {
        wavault::ops::Response::QueueList(rows) => rows,
        other => panic!("{other:?}"),
    }
}

/// Every way of sending a file, against one bot: the contact decrypts each
/// byte-identical with its kind, caption and file name; the same
/// idempotency key with another file is refused; a hook's URL off the
/// allow-list and a path outside the media folder are refused (skipped with
/// an `action_refused` alert saying why; the message leaves the queue) and
/// nothing is uploaded or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_out_by_cli_api_and_hook_and_arrive_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let media = scratch.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let vault = new_vault(dir.path(), &["filer"]);
    let phone = synth_paired(&vault, "filer", BOT_PHONE).await;
    let files = serve_once(image(7));
    let hook = HookServer::start(Mode::Reply(String::new())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    c.media_out.dir = Some(media.clone());
    c.media_out.url_allow = vec![
        "https://files.example.invalid/ok/".into(),
        format!("{files}/ok/"),
    ];
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "filer").await;
    wait_prekeys(&peer, &phone).await;
    let alice = peer.contact("4918200000002");

    // `send --file` through the control socket: an image with a caption,
    // a document with its file name.
    let jpg = scratch.path().join("photo.jpg");
    std::fs::write(&jpg, image(1)).unwrap();
    let pdf = scratch.path().join("invoice 7.pdf");
    std::fs::write(&pdf, document(1)).unwrap();
    let jpg_s = jpg.to_str().unwrap();
    let pdf_s = pdf.to_str().unwrap();
    let id = ok(&cli(
        dir.path(),
        &[
            "send",
            "filer",
            alice.phone(),
            "--file",
            jpg_s,
            "--caption",
            "a photo",
        ],
    )
    .await);
    let (kind, mime, caption, _, bytes) = media_of(&alice, id.trim()).await;
    assert_eq!((kind.as_str(), mime.as_str()), ("image", "image/jpeg"));
    assert_eq!(caption.as_deref(), Some("a photo"));
    assert!(bytes == image(1), "the CLI's image arrives byte-identical");
    let id = ok(&cli(
        dir.path(),
        &["send", "filer", alice.phone(), "--file", pdf_s],
    )
    .await);
    let (kind, mime, _, name, bytes) = media_of(&alice, id.trim()).await;
    assert_eq!(
        (kind.as_str(), mime.as_str()),
        ("document", "application/pdf")
    );
    assert_eq!(name.as_deref(), Some("invoice 7.pdf"));
    assert!(
        bytes == document(1),
        "the CLI's document arrives byte-identical"
    );

    // The API: multipart and JSON base64, an image and a document each.
    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let url = format!("{base}/api/bots/filer/messages");
    let to = alice.phone().as_bytes().to_vec();
    let (code, a) = post_multipart(
        url.clone(),
        &token,
        Some("mp-1"),
        vec![
            ("to", None, to.clone()),
            ("caption", None, b"multipart image".to_vec()),
            ("file", Some("p.jpg"), image(2)),
        ],
    )
    .await;
    assert_eq!(code, 200, "{a}");
    let (kind, _, caption, _, bytes) = media_of(&alice, a["id"].as_str().unwrap()).await;
    assert_eq!(
        (kind.as_str(), caption.as_deref()),
        ("image", Some("multipart image"))
    );
    assert!(
        bytes == image(2),
        "the multipart image arrives byte-identical"
    );
    // The same key with another file: refused, nothing sent.
    let (code, e) = post_multipart(
        url.clone(),
        &token,
        Some("mp-1"),
        vec![
            ("to", None, to.clone()),
            ("caption", None, b"multipart image".to_vec()),
            ("file", Some("p.jpg"), image(3)),
        ],
    )
    .await;
    assert_eq!(code, 400, "same key, different file: {e}");
    assert!(
        e["error"].as_str().unwrap().contains("another message"),
        "{e}"
    );
    let (code, a) = post_multipart(
        url.clone(),
        &token,
        None,
        vec![
            ("to", None, to.clone()),
            ("as", None, b"document".to_vec()),
            ("file", Some("report.pdf"), document(2)),
        ],
    )
    .await;
    assert_eq!(code, 200, "{a}");
    let (kind, _, _, name, bytes) = media_of(&alice, a["id"].as_str().unwrap()).await;
    assert_eq!(
        (kind.as_str(), name.as_deref()),
        ("document", Some("report.pdf"))
    );
    assert!(
        bytes == document(2),
        "the multipart document arrives byte-identical"
    );
    let (code, a) = post_json(
        url.clone(),
        &token,
        None,
        json!({"to": alice.phone(), "file": {"base64": b64(&image(4))}, "caption": "json image"}),
    )
    .await;
    assert_eq!(code, 200, "{a}");
    let (kind, _, caption, _, bytes) = media_of(&alice, a["id"].as_str().unwrap()).await;
    assert_eq!(
        (kind.as_str(), caption.as_deref()),
        ("image", Some("json image"))
    );
    assert!(bytes == image(4), "the JSON image arrives byte-identical");
    let (code, a) = post_json(
        url.clone(),
        &token,
        None,
        json!({"to": alice.phone(), "file": {"base64": b64(&document(4)), "file_name": "j.pdf", "mimetype": "application/pdf"}}),
    )
    .await;
    assert_eq!(code, 200, "{a}");
    let (kind, mime, _, name, bytes) = media_of(&alice, a["id"].as_str().unwrap()).await;
    assert_eq!(
        (kind.as_str(), mime.as_str(), name.as_deref()),
        ("document", "application/pdf", Some("j.pdf"))
    );
    assert!(
        bytes == document(4),
        "the JSON document arrives byte-identical"
    );
    let (code, e) = post_json(
        url.clone(),
        &token,
        None,
        json!({"to": alice.phone(), "file": {"base64": "not base64!"}}),
    )
    .await;
    assert_eq!(code, 400, "{e}");

    // A hook's answer: base64, a path under --media-dir, an allowed URL.
    std::fs::write(media.join("menu.pdf"), document(5)).unwrap();
    hook.set_mode(Mode::Answer(json!({"actions": [
        {"send_file": {"base64": b64(&image(5)), "caption": "from the hook"}},
        {"send_file": {"path": "menu.pdf", "file_name": "menu.pdf"}},
        {"send_file": {"url": format!("{files}/ok/pic.jpg")}},
    ]})));
    let bob = peer.contact("4918200000003");
    bob.send_text(&phone, "the menu, please").await.unwrap();
    let got = wait_media(&bob, "the hook's three files", 3).await;
    assert_eq!(got[0].0, "image");
    assert_eq!(got[0].1.as_deref(), Some("from the hook"));
    assert!(
        got[0].2 == image(5),
        "the hook's base64 image arrives byte-identical"
    );
    assert_eq!(got[1].0, "document");
    assert!(
        got[1].2 == document(5),
        "the hook's file arrives byte-identical"
    );
    assert_eq!(got[2].0, "image");
    assert!(
        got[2].2 == image(7),
        "the allowed URL's image arrives byte-identical"
    );
    let uploads = peer
        .seen()
        .media_uploads
        .iter()
        .filter(|u| u.by == "bot")
        .count();
    assert_eq!(uploads, 9, "one upload per file sent");

    // Refused: a URL off the allow-list, a path outside the media folder
    // (the vault itself). Each action is skipped with an `action_refused`
    // alert saying why, and its message leaves the queue (the chat's later
    // messages do not wait behind an answer that would be refused again);
    // nothing is sent.
    let secret = dir.path().join("vault.header");
    std::fs::write(scratch.path().join("outside.pdf"), document(6)).unwrap();
    let cases = [
        (
            "4918200000004",
            json!({"send_file": {"url": "https://elsewhere.example.invalid/x.png"}}),
            "allow-list",
        ),
        (
            "4918200000005",
            json!({"send_file": {"path": "../outside.pdf"}}),
            "not a file under the media folder",
        ),
        (
            "4918200000006",
            json!({"send_file": {"path": secret.to_str().unwrap()}}),
            "not a file under the media folder",
        ),
    ];
    for (contact, action, says) in cases {
        hook.set_mode(Mode::Answer(json!({"actions": [action]})));
        let mut events = runner.subscribe();
        let carol = peer.contact(contact);
        carol.send_text(&phone, "send me something").await.unwrap();
        let reason = next_event(
            &mut events,
            DEADLINE,
            "an action_refused alert",
            |e| match e {
                RunnerEvent::Alert(a) if a.kind == "action_refused" => Some(a.reason.clone()),
                _ => None,
            },
        )
        .await;
        assert!(reason.contains(says), "{contact}: {reason}");
        // Every delivery that ends is a `Traffic` event: wait for the one
        // that leaves this chat's queue empty.
        while queue_rows(&runner)
            .iter()
            .any(|r| r.chat.starts_with(contact))
        {
            next_event(
                &mut events,
                DEADLINE,
                "the refused message to leave the queue",
                |e| matches!(e, RunnerEvent::Traffic { .. }).then_some(()),
            )
            .await;
        }
        assert!(carol.received().is_empty(), "{contact}: nothing sent");
    }
    assert_eq!(
        peer.seen()
            .media_uploads
            .iter()
            .filter(|u| u.by == "bot")
            .count(),
        uploads,
        "nothing uploaded"
    );
    runner.shutdown().await.unwrap();
}

/// With no `run` (`send_once`, what `send --file` does alone): a voice note
/// goes out as an AudioMessage with `ptt`, its Ogg/Opus mimetype sniffed,
/// and the contact decrypts it byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_sent_without_run_arrives_as_ptt() {
    use wavault::messaging::attach::MediaKind;
    use wavault::messaging::outbox::{OutFile, Outgoing};
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["alone"]);
    synth_paired(&vault, "alone", BOT_PHONE + 10).await;
    let peer = Peer::new();
    let dave = peer.contact("4918200000012");
    let mut ogg = b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01\x13OpusHead".to_vec();
    ogg.extend((0..=255u8).cycle().take(4000));
    let msg = Outgoing {
        file: Some(OutFile {
            kind: Some(MediaKind::Voice),
            bytes: std::sync::Arc::new(ogg.clone()),
            ..Default::default()
        }),
        ..Outgoing::text(dave.phone(), "")
    };
    let id = wavault::runner::send_once(vault.clone(), cfg(&peer), &bot("alone"), &msg, DEADLINE)
        .await
        .unwrap();
    let got = dave
        .wait_received("the voice note", DEADLINE, |r| {
            r.iter().any(|m| m.id == id && m.media.is_some())
        })
        .await
        .unwrap();
    let m = got.into_iter().find(|m| m.id == id).unwrap();
    let audio = m
        .message
        .audio_message
        .as_option()
        .expect("an AudioMessage");
    assert_eq!(audio.ptt, Some(true), "a voice note");
    let md = m.media.unwrap();
    assert_eq!(
        (md.kind.as_str(), md.mimetype.as_str()),
        ("audio", "audio/ogg; codecs=opus")
    );
    assert!(md.bytes == ogg, "the voice note arrives byte-identical");
}
