//! Two bots in one vault never see each other's data, under the same names,
//! and wiping one leaves the other whole.

use crate::common::*;
use std::sync::Arc;
use wacore::store::traits::*;
use wacore::store::Device;
use wavault::store::VaultBackend;
use whatsapp_rust::bytes::Bytes;

const ADDR: &str = "15550001111@s.whatsapp.net.0";

/// Writes one value of every kind, tagged with `tag`.
async fn write_all(b: &VaultBackend, tag: u8) {
    let mut d = Device::new();
    d.push_name = format!("bot {tag}");
    b.save(&d).await.unwrap();
    b.put_identity(ADDR, [tag; 32]).await.unwrap();
    b.put_session(ADDR, &[tag]).await.unwrap();
    b.store_prekeys_batch(&[(7, Bytes::from(vec![tag]))], true)
        .await
        .unwrap();
    b.store_signed_prekey(1, &[tag]).await.unwrap();
    b.put_sender_key("g@g.us::x", &[tag]).await.unwrap();
    b.set_sync_key(
        b"k",
        AppStateSyncKey {
            key_data: vec![tag],
            fingerprint: vec![],
            timestamp: 1,
        },
    )
    .await
    .unwrap();
    b.set_sender_key_status("g@g.us", &[("d:1@s.whatsapp.net", tag.is_multiple_of(2))])
        .await
        .unwrap();
    b.put_lid_mapping(&LidPnMappingEntry {
        lid: "100".into(),
        phone_number: format!("555{tag}"),
        created_at: 1,
        updated_at: 1,
        learning_source: "t".into(),
    })
    .await
    .unwrap();
    b.put_tc_token(
        "100@lid",
        &TcTokenEntry {
            token: vec![tag],
            token_timestamp: 1,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    b.store_sent_message("c", "m", &[tag]).await.unwrap();
    b.put_msg_secret("c", "s", "m", &[tag; 32]).await.unwrap();
    b.store_pending_inbound("c", "s", "m", &[tag])
        .await
        .unwrap();
    b.put_group_metadata("g@g.us", &[tag]).await.unwrap();
}

async fn check_all(b: &VaultBackend, tag: u8) {
    assert_eq!(
        b.load().await.unwrap().unwrap().push_name,
        format!("bot {tag}")
    );
    assert_eq!(b.load_identity(ADDR).await.unwrap(), Some([tag; 32]));
    assert_eq!(
        b.get_session(ADDR).await.unwrap().unwrap(),
        Bytes::from(vec![tag])
    );
    assert_eq!(
        b.load_prekey(7).await.unwrap().unwrap(),
        Bytes::from(vec![tag])
    );
    assert_eq!(b.load_signed_prekey(1).await.unwrap().unwrap(), vec![tag]);
    assert_eq!(
        b.get_sender_key("g@g.us::x").await.unwrap().unwrap(),
        vec![tag]
    );
    assert_eq!(
        b.get_sync_key(b"k").await.unwrap().unwrap().key_data,
        vec![tag]
    );
    assert_eq!(
        b.get_sender_key_devices("g@g.us").await.unwrap(),
        vec![("d:1@s.whatsapp.net".to_string(), tag.is_multiple_of(2))]
    );
    assert_eq!(
        b.get_pn_mapping(&format!("555{tag}"))
            .await
            .unwrap()
            .unwrap()
            .lid,
        "100"
    );
    assert_eq!(
        b.get_tc_token("100@lid").await.unwrap().unwrap().token,
        vec![tag]
    );
    assert_eq!(
        b.get_msg_secret("c", "s", "m").await.unwrap().unwrap(),
        vec![tag; 32]
    );
    assert_eq!(
        b.get_pending_inbound("c", "s", "m").await.unwrap().unwrap(),
        vec![tag]
    );
    assert_eq!(
        b.get_group_metadata("g@g.us").await.unwrap().unwrap(),
        vec![tag]
    );
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 7);
    assert_eq!(b.get_all_tc_token_jids().await.unwrap(), ["100@lid"]);
    assert_eq!(b.get_all_lid_mappings().await.unwrap().len(), 1);
}

#[tokio::test]
async fn two_bots_never_see_each_others_data() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["alpha", "beta", "empty"]);
    let a: Arc<VaultBackend> = backend(&v, "alpha");
    let b = backend(&v, "beta");
    let e = backend(&v, "empty");
    write_all(&a, 1).await;
    write_all(&b, 2).await;
    check_all(&a, 1).await;
    check_all(&b, 2).await;

    // The third bot sees nothing at all.
    assert!(!e.exists().await.unwrap());
    assert!(e.get_session(ADDR).await.unwrap().is_none());
    assert!(!e.has_signal_state_for_user("15550001111").await.unwrap());
    assert_eq!(e.get_max_prekey_id().await.unwrap(), 0);
    assert!(e.get_all_lid_mappings().await.unwrap().is_empty());
    assert!(e.get_all_tc_token_jids().await.unwrap().is_empty());
    assert!(e.load_all_signed_prekeys().await.unwrap().is_empty());
    assert!(e.take_sent_message("c", "m").await.unwrap().is_none());
    assert!(e.view().kinds().unwrap().is_empty());

    // Sweeps and clears of one bot leave the other alone.
    assert_eq!(a.delete_expired_sent_messages(i64::MAX).await.unwrap(), 1);
    a.clear_all_sender_key_devices().await.unwrap();
    a.clear_mutation_macs("regular").await.unwrap();
    a.wipe().await.unwrap();
    assert!(!a.exists().await.unwrap());
    check_all(&b, 2).await;

    // And after a reopen too.
    drop((a, b, e));
    drop(v);
    let v = open(dir.path());
    check_all(&backend(&v, "beta"), 2).await;
    assert!(!backend(&v, "alpha").exists().await.unwrap());
    assert!(v.validate().unwrap().is_sound());
}

#[test]
fn bot_backend_refuses_an_unknown_bot() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path(), &["alpha"]);
    let err = v.bot_backend(&bot("nobody")).unwrap_err();
    assert!(err.to_string().contains("not in this vault"), "{err}");
}
