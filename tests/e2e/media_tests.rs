//! Media messages: the peer's media host with whatsapp-rust's real media
//! crypto both ways, and wavault's inbound media (the hook event's `media`
//! object, `GET /api/bots/{id}/media/{message_id}`, `wavault media get`).
//!
//! Why it exists: media never travel inside a message; a bot that handles
//! receipts, voice notes and PDFs depends on the key and hashes reaching
//! the right place, on the blob being fetched and verified, and on a
//! forged blob being refused rather than handed on.

use std::sync::Arc;
use std::time::Duration;

use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::Jid;

use crate::peer::{
    is_connected, BotOptions, MediaKind, OutMedia, Peer, RunningBot, LOGIN_DEADLINE, MEDIA_HOST,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Bytes that look like nothing in particular (a counter through a
/// multiplicative hash), `n` of them.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A plain whatsapp-rust bot logged in as `phone` (a device record seeded
/// into an in-memory store: no 10 s pairing).
async fn plain_bot(peer: &Peer, phone: u64) -> RunningBot {
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let mut device = whatsapp_rust::wacore::store::Device::new();
    device.pn = Some(format!("{phone}:1@s.whatsapp.net").parse().unwrap());
    device.lid = Some(
        format!("{}:1@lid", phone + 100_000_000_000_000)
            .parse()
            .unwrap(),
    );
    device.push_name = "media-e2e".into();
    backend.save(&device).await.unwrap();
    let noise_pub: [u8; 32] = device
        .noise_key
        .public_key
        .public_key_bytes()
        .try_into()
        .unwrap();
    crate::peer::seed_device(&phone.to_string(), 1, noise_pub);
    let bot = peer
        .start_bot(
            backend,
            BotOptions {
                push_name: "media-e2e".into(),
                auto_pair: false,
            },
        )
        .await
        .unwrap();
    bot.events
        .wait_for("Connected", LOGIN_DEADLINE, is_connected)
        .await
        .unwrap();
    let p = phone.to_string();
    peer.wait_for("pre-key upload", DEADLINE, |log| log.has_prekey_bundle(&p))
        .await
        .unwrap();
    bot
}

/// The peer's media host with the real client: a contact's image reaches
/// the bot, which downloads and decrypts it byte-identical (the media_conn
/// IQ answered, the blob served over the HTTP stub); served tampered, the
/// same download fails its MAC check; a document the bot uploads and sends
/// is fetched and decrypted by the contact byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_media_host_round_trips_with_the_real_client() {
    let peer = Peer::new();
    let phone = 4_918_100_000_001u64;
    let bot = plain_bot(&peer, phone).await;
    let client = bot.client().unwrap();
    let contact = peer.contact("4918100000101");

    let photo = pattern(70_000, 1);
    let mut out = OutMedia::new(MediaKind::Image, photo.clone(), "image/jpeg");
    out.caption = Some("receipt".into());
    out.width = Some(640);
    out.height = Some(480);
    let id = contact.send_media(&phone.to_string(), out).await.unwrap();
    let messages = bot
        .events
        .wait_messages("the image", DEADLINE, |m| m.iter().any(|m| m.info.id == id))
        .await
        .unwrap();
    let m = messages.iter().find(|m| m.info.id == id).unwrap();
    let image = m
        .message
        .image_message
        .as_option()
        .expect("an image message");
    assert_eq!(image.caption.as_deref(), Some("receipt"));
    assert_eq!(image.file_length, Some(photo.len() as u64));
    let got = client.download(image).await.unwrap();
    assert!(
        got == photo,
        "the bot decrypts the contact's image byte-identical"
    );
    let path = image.direct_path.clone().unwrap();
    let log = peer.seen();
    assert!(log.received_iqs("w:m").next().is_some(), "media_conn asked");
    assert!(log.http_requests.is_empty(), "{:?}", log.http_requests);
    assert_eq!(log.media_upload(&path).unwrap().kind, "image");
    assert_eq!(log.bot_media_downloads(&path).count(), 1);

    assert!(image
        .url
        .as_deref()
        .unwrap()
        .starts_with(&format!("https://{MEDIA_HOST}/")));

    peer.tamper_all_media(true);
    let err = match client.download(image).await {
        Ok(b) => panic!("a tampered blob was decrypted ({} bytes)", b.len()),
        Err(e) => e,
    };
    assert!(format!("{err:#}").contains("MAC"), "{err:#}");
    assert!(peer.seen().bot_media_downloads(&path).any(|d| d.tampered));
    peer.tamper_all_media(false);
    let again = client.download(image).await.unwrap();
    assert!(again == photo, "untampered again");

    let pdf = pattern(120_000, 2);
    let up = client
        .upload(pdf.clone(), MediaType::Document, Default::default())
        .await
        .unwrap();
    let doc = wa::Message {
        document_message: whatsapp_rust::buffa::MessageField::some(wa::message::DocumentMessage {
            url: Some(up.url.clone()),
            mimetype: Some("application/pdf".into()),
            file_name: Some("r.pdf".into()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_length: Some(up.file_length),
            media_key: Some(up.media_key.to_vec()),
            direct_path: Some(up.direct_path.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let to: Jid = contact.jid().parse().unwrap();
    let sent = client.send_message(to, doc).await.unwrap();
    let received = contact
        .wait_received("the document", DEADLINE, |m| {
            m.iter().any(|m| m.id == sent.message_id)
        })
        .await
        .unwrap();
    let media = received
        .iter()
        .find(|m| m.id == sent.message_id)
        .and_then(|m| m.media.clone())
        .unwrap_or_else(|| panic!("no media: {:?}", peer.seen().contact_media_errors));
    assert_eq!(media.kind, "document");
    assert_eq!(media.file_name.as_deref(), Some("r.pdf"));
    assert_eq!(media.mimetype, "application/pdf");
    assert_eq!(media.caption, None);
    assert!(
        media.bytes == pdf,
        "the contact decrypts the bot's document"
    );
    let log = peer.seen();
    let upload = log.media_upload(&up.direct_path).unwrap();
    assert_eq!(
        (upload.kind.as_str(), upload.by.as_str()),
        ("document", "bot")
    );
    assert!(log.contact_media_errors.is_empty());
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;
}

/// One GET with the API token: (status, content type, body).
async fn get(url: String, token: &str) -> (u16, String, Vec<u8>) {
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .header("authorization", &auth)
            .call()
            .expect("request");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (resp.status().as_u16(), ct, body)
    })
    .await
    .unwrap()
}

/// Files in `dir` (names).
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A contact sends a bot run by wavault an image, a voice note and a 5 MB
/// document: the hook gets three `message` events with the media fields
/// (kind, mimetype, size, sha256, caption, file name, seconds, dimensions,
/// url; base64 for the two under `--media-inline-max`), never the media key
/// or path; the API and `wavault media get` (the real CLI through the
/// control socket) return byte-identical files. A blob tampered at the
/// peer is refused by both (502 hash mismatch, exit 5): nothing served,
/// nothing written. A file announced larger than `--media-max` is refused
/// (413) without a download; an unknown message is 404 / exit 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_media_reach_the_hook_the_api_and_media_get_and_tampering_is_refused() {
    use base64::Engine as _;
    use serde_json::Value;
    use wavault::messaging::hook::Target;
    use wavault::runner::Runner;

    use crate::hook_server::{HookServer, Mode};
    use crate::live_tests::{cli, ok};
    use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
    use crate::runner_tests::{new_vault, synth_paired, web_with_token};

    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["media"]);
    let phone = synth_paired(&vault, "media", 4_918_100_001_001).await;
    let hook = HookServer::start(Mode::Reply(String::new())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    c.media_inline_max = Some(100_000);
    c.media_max = 6_000_000;
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "media").await;
    wait_prekeys(&peer, &phone).await;
    let (base, token) = web_with_token(&runner, &vault, Duration::ZERO).await;
    let alice = peer.contact("4918100001101");

    let photo = pattern(50_000, 3);
    let mut image = OutMedia::new(MediaKind::Image, photo.clone(), "image/jpeg");
    image.caption = Some("the receipt".into());
    image.width = Some(800);
    image.height = Some(600);
    let voice_bytes = pattern(30_000, 4);
    let mut voice = OutMedia::new(
        MediaKind::Audio,
        voice_bytes.clone(),
        "audio/ogg; codecs=opus",
    );
    voice.ptt = true;
    voice.seconds = Some(7);
    let pdf = pattern(5_000_000, 5);
    let mut doc = OutMedia::new(MediaKind::Document, pdf.clone(), "application/pdf");
    doc.file_name = Some("statement.pdf".into());
    doc.caption = Some("March".into());
    let ids = [
        alice.send_media(&phone, image).await.unwrap(),
        alice.send_media(&phone, voice).await.unwrap(),
        alice.send_media(&phone, doc).await.unwrap(),
    ];
    let seen = hook
        .wait("three media events", DEADLINE, |s| {
            ids.iter()
                .all(|id| s.accepted.iter().any(|e| e["id"] == id.as_str()))
        })
        .await;
    let event = |id: &str| -> Value {
        seen.accepted.iter().find(|e| e["id"] == id).unwrap()["media"].clone()
    };
    let sha = |b: &[u8]| {
        wavault::messaging::media::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(b),
        ))
    };
    let (ei, ev, ed) = (event(&ids[0]), event(&ids[1]), event(&ids[2]));
    assert_eq!(ei["kind"], "image");
    assert_eq!(ei["mimetype"], "image/jpeg");
    assert_eq!(ei["size"], 50_000);
    assert_eq!(ei["sha256"], sha(&photo));
    assert_eq!(ei["caption"], "the receipt");
    assert_eq!(
        (ei["width"].clone(), ei["height"].clone()),
        (800.into(), 600.into())
    );
    assert_eq!(ei["url"], format!("/api/bots/media/media/{}", ids[0]));
    let inline = base64::engine::general_purpose::STANDARD
        .decode(ei["base64"].as_str().expect("inline image"))
        .unwrap();
    assert!(inline == photo, "inline image is the file");
    assert_eq!(ev["kind"], "voice");
    assert_eq!(ev["seconds"], 7);
    assert_eq!(ev["mimetype"], "audio/ogg; codecs=opus");
    assert!(ev["base64"].is_string());
    assert_eq!(ed["kind"], "document");
    assert_eq!(ed["file_name"], "statement.pdf");
    assert_eq!(ed["caption"], "March");
    assert_eq!(ed["size"], 5_000_000);
    assert_eq!(ed["sha256"], sha(&pdf));
    assert!(ed.get("base64").is_none(), "over --media-inline-max");
    // Neither the media key nor the path in any event.
    let uploads = peer.seen().media_uploads;
    let all = serde_json::to_string(&seen.accepted).unwrap();
    for u in &uploads {
        assert!(!all.contains(&u.direct_path), "path in an event");
    }
    assert!(!all.contains("mediaKey") && !all.contains("media_key"));

    // The API and `media get` give the same bytes.
    for (id, bytes, ct) in [
        (&ids[0], &photo, "image/jpeg"),
        (&ids[1], &voice_bytes, "audio/ogg; codecs=opus"),
        (&ids[2], &pdf, "application/pdf"),
    ] {
        let (status, got_ct, body) = get(format!("{base}/api/bots/media/media/{id}"), &token).await;
        assert_eq!((status, got_ct.as_str()), (200, ct));
        assert!(body == *bytes, "API bytes of {id}");
        let file = out.path().join(format!("{id}.bin"));
        ok(&cli(
            dir.path(),
            &["media", "get", "media", id, "-o", file.to_str().unwrap()],
        )
        .await);
        assert!(
            std::fs::read(&file).unwrap() == *bytes,
            "media get bytes of {id}"
        );
    }
    let piped = cli(dir.path(), &["media", "get", "media", &ids[1], "-o", "-"]).await;
    assert_eq!(piped.status.code(), Some(0));
    assert!(
        piped.stdout == voice_bytes,
        "-o - writes the file to stdout"
    );

    // Tampered at the peer: refused, nothing served or written.
    let doc_path = uploads
        .iter()
        .find(|u| u.kind == "document")
        .unwrap()
        .direct_path
        .clone();
    peer.tamper_media(&doc_path);
    let (status, ct, body) = get(format!("{base}/api/bots/media/media/{}", ids[2]), &token).await;
    assert_eq!(status, 502);
    assert!(ct.starts_with("application/json"), "{ct}");
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "hash_mismatch", "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("hash mismatch"),
        "{err}"
    );
    let before = names(out.path());
    let target = out.path().join("tampered.pdf");
    let refused = cli(
        dir.path(),
        &[
            "media",
            "get",
            "media",
            &ids[2],
            "-o",
            target.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("hash mismatch"));
    assert_eq!(
        names(out.path()),
        before,
        "nothing written, no temporary file left"
    );
    assert!(peer
        .seen()
        .bot_media_downloads(&doc_path)
        .any(|d| d.tampered));

    // Announced larger than --media-max: refused before any download.
    let huge = whatsapp_rust::waproto::whatsapp::Message {
        document_message: whatsapp_rust::buffa::MessageField::some(wa::message::DocumentMessage {
            mimetype: Some("application/zip".into()),
            file_length: Some(7_000_000),
            file_sha256: Some(vec![1; 32]),
            file_enc_sha256: Some(vec![2; 32]),
            media_key: Some(vec![3; 32]),
            direct_path: Some("/v/t62.peer-document/never-uploaded".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let huge_id = alice.send_message(&phone, &huge).await.unwrap();
    hook.wait("the large file's event", DEADLINE, |s| {
        s.accepted.iter().any(|e| e["id"] == huge_id.as_str())
    })
    .await;
    let (status, _, body) = get(format!("{base}/api/bots/media/media/{huge_id}"), &token).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("--media-max"));
    let log = peer.seen();
    assert_eq!(
        log.bot_media_downloads("/v/t62.peer-document/never-uploaded")
            .count(),
        0
    );

    // A video and a sticker: their kinds and fields, and the sticker's bytes.
    let mut video = OutMedia::new(MediaKind::Video, pattern(20_000, 6), "video/mp4");
    video.seconds = Some(3);
    video.width = Some(320);
    let sticker_bytes = pattern(9_000, 7);
    let sticker = OutMedia::new(MediaKind::Sticker, sticker_bytes.clone(), "image/webp");
    let vid = alice.send_media(&phone, video).await.unwrap();
    let sid = alice.send_media(&phone, sticker).await.unwrap();
    let seen = hook
        .wait("video and sticker events", DEADLINE, |s| {
            [&vid, &sid]
                .iter()
                .all(|id| s.accepted.iter().any(|e| e["id"] == id.as_str()))
        })
        .await;
    let media_of =
        |id: &str| seen.accepted.iter().find(|e| e["id"] == id).unwrap()["media"].clone();
    let (mv, ms) = (media_of(&vid), media_of(&sid));
    assert_eq!(
        (
            mv["kind"].clone(),
            mv["seconds"].clone(),
            mv["width"].clone()
        ),
        ("video".into(), 3.into(), 320.into())
    );
    assert_eq!(
        (ms["kind"].clone(), ms["mimetype"].clone()),
        ("sticker".into(), "image/webp".into())
    );
    let (status, _, body) = get(format!("{base}/api/bots/media/media/{sid}"), &token).await;
    assert_eq!(status, 200);
    assert!(body == sticker_bytes, "sticker bytes");

    // Unknown message and bot.
    let (status, _, _) = get(format!("{base}/api/bots/media/media/3EB0FFFF"), &token).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(format!("{base}/api/bots/nosuch/media/{}", ids[0]), &token).await;
    assert_eq!(status, 404);
    let unknown = cli(dir.path(), &["media", "get", "nosuch", &ids[0], "-o", "-"]).await;
    assert_eq!(unknown.status.code(), Some(6));
    assert!(log.contact_media_errors.is_empty());
    runner.shutdown().await.unwrap();
}

/// `media get` with no `run` holding the vault (`runner::media_once`, what
/// the CLI calls then): the bot connects alone, the file comes back
/// byte-identical, and the bot is stopped again; an unknown message is
/// refused before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_get_without_run_connects_the_bot_alone() {
    use wavault::messaging::hook::Target;
    use wavault::runner::{media_once, Runner};

    use crate::hook_server::{HookServer, Mode};
    use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
    use crate::runner_tests::{bot, new_vault, synth_paired};

    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["alone"]);
    let phone = synth_paired(&vault, "alone", 4_918_100_001_002).await;
    let hook = HookServer::start(Mode::Reply(String::new())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, "alone").await;
    wait_prekeys(&peer, &phone).await;
    let bytes = pattern(40_000, 8);
    let id = peer
        .contact("4918100001102")
        .send_media(
            &phone,
            OutMedia::new(MediaKind::Document, bytes.clone(), "text/csv"),
        )
        .await
        .unwrap();
    hook.wait("the document's event", DEADLINE, |s| {
        s.accepted.iter().any(|e| e["id"] == id.as_str())
    })
    .await;
    runner.shutdown().await.unwrap();

    let file = media_once(vault.clone(), c.clone(), &bot("alone"), &id, DEADLINE)
        .await
        .unwrap();
    assert!(file.bytes == bytes, "the file, fetched by the bot alone");
    assert_eq!(file.content_type, "text/csv");
    let e = media_once(vault.clone(), c, &bot("alone"), "3EB0BBBB", DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
}
