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
