//! The trait semantics that are easy to get wrong: atomic take, tc-token and
//! message-secret merges, pre-key flags that must not resurrect rows, the
//! pre-key id watermark, device creation, credential states, wiping, and
//! which writes are durable before they return.

use crate::common::*;
use std::sync::Arc;
use wacore::store::traits::*;
use wacore::store::Device;
use wavault::store::{self, kinds, VaultBackend};
use wavault::vault::Kind;
use whatsapp_rust::bytes::Bytes;

fn is_backend<T: Backend>() {}

#[test]
fn vault_backend_is_a_whatsapp_rust_backend() {
    is_backend::<VaultBackend>();
}

fn entry(chat: &str, id: &str, secret: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from("sender@s.whatsapp.net"),
        msg_id: Arc::from(id),
        secret: [secret; 32],
        expires_at,
        message_ts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn take_sent_message_is_an_atomic_read_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    for round in 0..20 {
        let id = format!("M{round}");
        b.store_sent_message("chat@g.us", &id, b"payload")
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let b = b.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                b.take_sent_message("chat@g.us", &id).await.unwrap()
            }));
        }
        let mut got = 0;
        for t in tasks {
            if let Some(p) = t.await.unwrap() {
                assert_eq!(p, b"payload");
                got += 1;
            }
        }
        assert_eq!(got, 1, "round {round}: exactly one taker gets the message");
        assert_eq!(b.take_sent_message("chat@g.us", &id).await.unwrap(), None);
    }
}

#[tokio::test]
async fn tc_token_merges_keep_each_writers_field() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");

    b.touch_tc_token_sender_timestamp("u1", 1000).await.unwrap();
    let e = b.get_tc_token("u1").await.unwrap().unwrap();
    assert!(e.token.is_empty());
    assert_eq!((e.token_timestamp, e.sender_timestamp), (1000, Some(1000)));

    // A placeholder never blocks the first real token, even an older one.
    b.store_received_tc_token("u1", &[1, 2, 3], 900)
        .await
        .unwrap();
    let e = b.get_tc_token("u1").await.unwrap().unwrap();
    assert_eq!(e.token, vec![1, 2, 3]);
    assert_eq!((e.token_timestamp, e.sender_timestamp), (900, Some(1000)));

    // Stale received token loses; newer wins; the sender bucket survives both.
    b.store_received_tc_token("u1", &[9], 800).await.unwrap();
    assert_eq!(
        b.get_tc_token("u1").await.unwrap().unwrap().token,
        vec![1, 2, 3]
    );
    b.store_received_tc_token("u1", &[4], 950).await.unwrap();
    let e = b.get_tc_token("u1").await.unwrap().unwrap();
    assert_eq!(
        (e.token, e.token_timestamp, e.sender_timestamp),
        (vec![4], 950, Some(1000))
    );

    // The sender bucket only moves forward and never touches the token.
    b.touch_tc_token_sender_timestamp("u1", 500).await.unwrap();
    b.touch_tc_token_sender_timestamp("u1", 2000).await.unwrap();
    let e = b.get_tc_token("u1").await.unwrap().unwrap();
    assert_eq!(
        (e.token, e.token_timestamp, e.sender_timestamp),
        (vec![4], 950, Some(2000))
    );

    // Expiry keeps a row while either window is live.
    b.put_tc_token(
        "dead",
        &TcTokenEntry {
            token: vec![1],
            token_timestamp: 1,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(b.delete_expired_tc_tokens(100, 1500).await.unwrap(), 1);
    assert!(b.get_tc_token("dead").await.unwrap().is_none());
    assert!(b.get_tc_token("u1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tc_token_writers_converge() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                b.touch_tc_token_sender_timestamp("c", 10_000 + i).await
            } else {
                b.store_received_tc_token("c", &i.to_be_bytes(), 5_000 + i)
                    .await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let e = b.get_tc_token("c").await.unwrap().unwrap();
    assert_eq!(e.sender_timestamp, Some(10_038), "largest touch wins");
    assert_eq!(e.token_timestamp, 5_039, "newest received token wins");
    assert_eq!(e.token, 39i64.to_be_bytes().to_vec());
}

#[tokio::test]
async fn msg_secret_merge_rules() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");

    // In one batch: the later row replaces the secret and merges the times.
    let n = b
        .put_msg_secrets(vec![
            entry("c", "M1", 1, 100, 50),
            entry("c", "M1", 2, 200, 0),
            entry("c", "M2", 3, 300, 0),
        ])
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        b.get_msg_secret_with_ts("c", "sender@s.whatsapp.net", "M1")
            .await
            .unwrap(),
        Some((vec![2; 32], 50)),
        "a 0 message_ts never clobbers a known one"
    );

    // Across batches: a shorter deadline never shrinks the window; 0 = never wins.
    b.put_msg_secrets(vec![entry("c", "M1", 4, 150, 60)])
        .await
        .unwrap();
    b.put_msg_secrets(vec![entry("c", "M2", 5, 0, 0)])
        .await
        .unwrap();
    assert_eq!(b.delete_expired_msg_secrets(199).await.unwrap(), 0);
    assert_eq!(
        b.get_msg_secret_with_ts("c", "sender@s.whatsapp.net", "M1")
            .await
            .unwrap(),
        Some((vec![4; 32], 60))
    );
    // M1 expires at 200 (max(200, 150)); M2 never.
    assert_eq!(b.delete_expired_msg_secrets(200).await.unwrap(), 1);
    assert!(b
        .get_msg_secret("c", "sender@s.whatsapp.net", "M1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        b.get_msg_secret("c", "sender@s.whatsapp.net", "M2")
            .await
            .unwrap(),
        Some(vec![5; 32])
    );
    assert_eq!(b.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 0);
}

#[tokio::test]
async fn prekeys_watermark_and_uploaded_flag_never_resurrect() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    assert_eq!(
        b.get_max_prekey_id().await.unwrap(),
        0,
        "empty store reports 0"
    );

    let keys: Vec<(u32, Bytes)> = (1..=5)
        .map(|i| (i, Bytes::from(vec![i as u8; 3])))
        .collect();
    b.store_prekeys_batch(&keys, false).await.unwrap();
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 5);

    b.remove_prekey(5).await.unwrap();
    b.remove_prekey(2).await.unwrap();
    b.mark_prekeys_uploaded(&[1, 2, 3, 5]).await.unwrap();
    assert!(
        b.load_prekey(2).await.unwrap().is_none(),
        "removed stays removed"
    );
    assert!(
        b.load_prekey(5).await.unwrap().is_none(),
        "removed stays removed"
    );
    assert_eq!(
        b.load_prekey(1).await.unwrap().unwrap(),
        Bytes::from(vec![1u8; 3])
    );
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 4);
    let batch = b.load_prekeys_batch(&[1, 2, 3, 4, 5, 6]).await.unwrap();
    assert_eq!(batch.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_uploaded_racing_removal_never_resurrects() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    let keys: Vec<(u32, Bytes)> = (1..=200).map(|i| (i, Bytes::from_static(b"k"))).collect();
    b.store_prekeys_batch(&keys, false).await.unwrap();
    let ids: Vec<u32> = (1..=200).collect();
    let marker = {
        let b = b.clone();
        let ids = ids.clone();
        tokio::spawn(async move { b.mark_prekeys_uploaded(&ids).await })
    };
    for id in (1..=200).step_by(2) {
        b.remove_prekey(id).await.unwrap();
    }
    marker.await.unwrap().unwrap();
    for id in ids {
        assert_eq!(
            b.load_prekey(id).await.unwrap().is_some(),
            id % 2 == 0,
            "pre-key {id}"
        );
    }
}

#[tokio::test]
async fn create_persists_a_device_and_credentials_state_follows() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    assert_eq!(
        store::credentials_state(b.view()).map(|c| c.as_str()),
        Some("unpaired")
    );
    assert!(!b.exists().await.unwrap());
    assert!(b.load().await.unwrap().is_none());

    b.create().await.unwrap();
    assert!(b.exists().await.unwrap(), "create() makes exists() true");
    let first = b.load().await.unwrap().expect("created device");
    assert!(first.pn.is_none());
    assert_eq!(
        store::credentials_state(b.view()).map(|c| c.as_str()),
        Some("incomplete")
    );

    b.create().await.unwrap();
    let again = b.load().await.unwrap().unwrap();
    assert_eq!(
        again.identity_key.public_key, first.identity_key.public_key,
        "create() never replaces an existing device"
    );

    let mut paired = again.clone();
    paired.pn = Some("15550001234@s.whatsapp.net".parse().unwrap());
    paired.push_name = "Sales".into();
    paired.next_pre_key_id = 812;
    b.save(&paired).await.unwrap();
    drop(b);
    drop(v);

    let v = open(dir.path());
    let b = backend(&v, "a");
    let loaded = b.load().await.unwrap().unwrap();
    assert_eq!(loaded.pn, paired.pn);
    assert_eq!(loaded.push_name, "Sales");
    assert_eq!(loaded.next_pre_key_id, 812);
    assert_eq!(loaded.registration_id, paired.registration_id);
    assert_eq!(loaded.noise_key.public_key, paired.noise_key.public_key);
    assert_eq!(
        loaded.signed_pre_key_signature,
        paired.signed_pre_key_signature
    );
    assert_eq!(loaded.adv_secret_key, paired.adv_secret_key);
    assert_eq!(
        *loaded.device_props,
        wacore::store::device::DEVICE_PROPS.clone(),
        "runtime-only device props are restored on load"
    );
    assert_eq!(
        store::credentials_state(b.view()).map(|c| c.as_str()),
        Some("paired")
    );

    // An unreadable device record is "incomplete", not "paired".
    b.view()
        .put(kinds::DEVICE, b"device", b"\x01garbage")
        .unwrap();
    assert_eq!(
        store::credentials_state(b.view()).map(|c| c.as_str()),
        Some("incomplete")
    );
    assert!(b.load().await.is_err());
}

#[tokio::test]
async fn device_codec_round_trips_a_fresh_device() {
    let d = Device::new();
    let bytes = store::encode_device(&d);
    assert_eq!(
        bytes[0],
        wavault::codec::CODEC_V1,
        "encoded through wavault::codec"
    );
    let back = store::decode_device(&bytes).unwrap();
    assert_eq!(store::encode_device(&back), bytes);
}

#[tokio::test]
async fn wipe_deletes_every_backend_record_and_keeps_the_vaults_own() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    b.create().await.unwrap();
    b.put_session("x@s.whatsapp.net.0", b"s").await.unwrap();
    b.store_prekey(1, b"p", false).await.unwrap();
    b.put_msg_secrets(vec![entry("c", "m", 1, 0, 0)])
        .await
        .unwrap();
    b.store_sent_message("c", "m", b"x").await.unwrap();
    b.view()
        .put(Kind::SESSION_META, b"meta", b"keep me")
        .unwrap();

    let n = b.wipe().await.unwrap();
    assert!(n >= 5, "{n}");
    let left = b.view().kinds().unwrap();
    assert_eq!(
        left.keys().copied().collect::<Vec<_>>(),
        [Kind::SESSION_META]
    );
    assert!(!b.exists().await.unwrap());
    assert_eq!(
        store::credentials_state(b.view()).map(|c| c.as_str()),
        Some("unpaired")
    );

    b.put_session("x@s.whatsapp.net.0", b"s").await.unwrap();
    assert_eq!(
        store::clear_credentials(b.view()).unwrap(),
        2,
        "session + user marker"
    );
    assert_eq!(
        b.view().get(Kind::SESSION_META, b"meta").unwrap().unwrap(),
        b"keep me"
    );
}

#[tokio::test]
async fn critical_writes_wait_for_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    let addr = "1555@s.whatsapp.net.0";
    let before = v.flush_count();
    b.put_session(addr, b"s").await.unwrap();
    let after_session = v.flush_count();
    assert!(after_session > before, "put_session flushed");
    b.put_sender_key("g:s", b"k").await.unwrap();
    b.delete_session(addr).await.unwrap();
    b.delete_sender_key("g:s").await.unwrap();
    b.store_prekeys_batch(&[(1, Bytes::from_static(b"p"))], false)
        .await
        .unwrap();
    b.remove_prekey(1).await.unwrap();
    b.store_pending_inbound_batch(&[PendingInboundRow {
        chat: "c",
        sender: "s",
        id: "i",
        message: b"m",
    }])
    .await
    .unwrap();
    b.save(&Device::new()).await.unwrap();
    // Each of the 7 calls above waited for a flush that started after its write.
    assert!(
        v.flush_count() >= after_session + 7,
        "{} {}",
        v.flush_count(),
        after_session
    );
}

#[tokio::test]
async fn lid_mappings_keep_first_created_at_and_follow_remaps() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    let m = |lid: &str, pn: &str, created: i64, updated: i64| LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: created,
        updated_at: updated,
        learning_source: "usync".into(),
    };
    b.put_lid_mapping(&m("L1", "P", 10, 10)).await.unwrap();
    b.put_lid_mapping(&m("L2", "P", 20, 20)).await.unwrap();
    assert_eq!(b.get_pn_mapping("P").await.unwrap().unwrap().lid, "L2");
    // L2 moves to another phone: P falls back to L1 (the SQLite store's answer).
    b.put_lid_mappings(&[m("L2", "Q", 99, 30)]).await.unwrap();
    assert_eq!(b.get_pn_mapping("P").await.unwrap().unwrap().lid, "L1");
    let l2 = b.get_pn_mapping("Q").await.unwrap().unwrap();
    assert_eq!(
        (l2.lid.as_str(), l2.created_at, l2.updated_at),
        ("L2", 20, 30)
    );
    assert_eq!(
        b.get_lid_mapping("L2").await.unwrap().unwrap().phone_number,
        "Q"
    );
    let mut all: Vec<String> = b
        .get_all_lid_mappings()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.lid)
        .collect();
    all.sort();
    assert_eq!(all, ["L1", "L2"]);
}

#[tokio::test]
async fn pending_inbound_buffer_round_trip_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["a"]);
    let b = backend(&v, "a");
    b.store_pending_inbound("c", "s", "1", b"one")
        .await
        .unwrap();
    b.store_pending_inbound_batch(&[
        PendingInboundRow {
            chat: "c",
            sender: "s",
            id: "2",
            message: b"two",
        },
        PendingInboundRow {
            chat: "c",
            sender: "t",
            id: "2",
            message: b"other sender",
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        b.get_pending_inbound("c", "s", "2").await.unwrap().unwrap(),
        b"two"
    );
    assert_eq!(
        b.get_pending_inbound("c", "t", "2").await.unwrap().unwrap(),
        b"other sender"
    );
    b.delete_pending_inbound_batch(&[PendingInboundKey {
        chat: "c",
        sender: "s",
        id: "2",
    }])
    .await
    .unwrap();
    assert!(b
        .get_pending_inbound("c", "s", "2")
        .await
        .unwrap()
        .is_none());
    let now = wavault::vault::now();
    assert_eq!(
        b.delete_expired_pending_inbound(now - 3600).await.unwrap(),
        0
    );
    assert_eq!(
        b.delete_expired_pending_inbound(now + 3600).await.unwrap(),
        2
    );
}

#[test]
fn kind_names_cover_every_backend_kind() {
    for (k, name) in kinds::ALL {
        assert_eq!(store::kind_name(*k), Some(*name));
    }
    assert_eq!(store::kind_name(Kind::SESSION_META), None);
    assert_eq!(store::kind_name(Kind(0x7f)), None);
}
