//! The streams and the bucket of a fleet, and what goes through them.
//!
//! - `<prefix>-events` (subjects `<prefix>.events.>` and `<prefix>.sent.>`):
//!   file storage, limits retention, `--nats-max-age`, a duplicate window
//!   of [`super::DEDUPE_WINDOW`], `--nats-replicas`. Events are published
//!   with `Nats-Msg-Id` = the event id, so a republished event within the
//!   window is dropped by the server.
//! - `<prefix>-sends` (subject `<prefix>.send.>`): work-queue retention (a
//!   send is removed once acknowledged). One durable pull consumer per bot,
//!   `send-<bot>`, one message in flight at a time (sends keep their
//!   order), pulled by whichever host owns the bot: its progress lives on
//!   the server, so a moved bot goes on where it was.
//! - `<prefix>-owners`: the key-value bucket of [`super::owners`], its max
//!   age the owner TTL. An existing bucket with another TTL is refused (the
//!   hosts' deadlines are computed from the TTL they were given).
//!
//! Existing streams are used as they are, so an operator may tune them.

use super::{Conn, FleetConfig, DEDUPE_WINDOW, REQUEST_TIMEOUT};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use bytes::Bytes;

/// The owners bucket, created if missing.
pub(crate) async fn ensure_owners(
    cfg: &FleetConfig,
    js: &jetstream::Context,
) -> Result<kv::Store, String> {
    let name = cfg.owners_bucket();
    // The bucket's stream, made as the key-value convention has it
    // (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value per key, rollups,
    // direct gets). Not `create_key_value`: it first asks for the account's
    // info, which nats-server 2.9 answers in a shape async-nats 0.51 cannot read.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some("wavault: which host runs which bot".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_bytes: -1,
        max_messages: -1,
        max_message_size: -1,
        max_consumers: -1,
        max_age: cfg.owner_ttl,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        format!("the owners bucket {name}: {e} (is JetStream enabled: nats-server -js?)")
    })?;
    let store = js
        .get_key_value(&name)
        .await
        .map_err(|e| format!("the owners bucket {name}: {e}"))?;
    let status = store
        .status()
        .await
        .map_err(|e| format!("reading the owners bucket {name}: {e}"))?;
    if status.max_age() != cfg.owner_ttl {
        return Err(format!(
            "the owners bucket {name} has a TTL of {:?}, this host was given {:?}: every host of a \
             fleet must run with the bucket's TTL (--nats-owner-ttl {}s)",
            status.max_age(),
            cfg.owner_ttl,
            status.max_age().as_secs()
        ));
    }
    Ok(store)
}

/// The events stream, created if missing.
pub(crate) async fn ensure_events(
    cfg: &FleetConfig,
    js: &jetstream::Context,
) -> Result<stream::Stream, String> {
    let name = cfg.events_stream();
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        description: Some("wavault: bot events and send results".into()),
        subjects: vec![
            format!("{}.events.>", cfg.prefix),
            format!("{}.sent.>", cfg.prefix),
        ],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: cfg.events_max_age,
        duplicate_window: DEDUPE_WINDOW,
        num_replicas: cfg.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("the events stream {name}: {e} (is JetStream enabled: nats-server -js?)"))
}

/// The sends stream, created if missing.
pub(crate) async fn ensure_sends(
    cfg: &FleetConfig,
    js: &jetstream::Context,
) -> Result<stream::Stream, String> {
    let name = cfg.sends_stream();
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        description: Some("wavault: messages for bots to send".into()),
        subjects: vec![format!("{}.send.>", cfg.prefix)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DEDUPE_WINDOW,
        num_replicas: cfg.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("the sends stream {name}: {e} (is JetStream enabled: nats-server -js?)"))
}

/// Publishes `body` on `subject` with `Nats-Msg-Id` = `id` and waits for
/// JetStream's acknowledgement (the message is stored).
pub async fn publish(conn: &Conn, subject: String, id: &str, body: Bytes) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    let ack = tokio::time::timeout(REQUEST_TIMEOUT, async {
        conn.js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("no acknowledgement from JetStream within {REQUEST_TIMEOUT:?}"))?;
    ack.map(|_| ())
}

/// Publishes a bot's hook event: `<prefix>.events.<bot>.<kind>`.
pub async fn publish_event(
    conn: &Conn,
    cfg: &FleetConfig,
    bot: &str,
    kind: &str,
    id: &str,
    body: &str,
) -> Result<(), String> {
    let subject = cfg.event_subject(bot, kind);
    publish(conn, subject, id, Bytes::from(body.to_owned())).await
}

/// The durable consumer of a bot's sends, created if missing.
pub async fn send_consumer(
    conn: &Conn,
    cfg: &FleetConfig,
    bot: &str,
) -> Result<pull::Stream, String> {
    let name = format!("send-{bot}");
    let consumer: jetstream::consumer::PullConsumer = conn
        .sends
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("wavault: sends of bot {bot}")),
                filter_subject: cfg.send_subject(bot),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: std::time::Duration::from_secs(120),
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("the send consumer {name}: {e}"))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("pulling from the send consumer {name}: {e}"))
}
