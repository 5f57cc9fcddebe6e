//! A real Signal conversation: Alice's state lives in the vault (through
//! whatsapp-rust's own `SignalProtocolStoreAdapter` and `SignalStoreCache`,
//! as the client drives them), Bob's in the reference in-memory store. They
//! exchange pairwise and group messages; Alice's vault is closed and
//! reopened between messages, and decryption never fails.

use crate::common::*;
use rand::SeedableRng;
use std::path::Path;
use std::sync::Arc;
use wacore::libsignal::protocol::{
    create_sender_key_distribution_message, group_decrypt, group_encrypt, message_decrypt,
    message_encrypt, process_prekey_bundle, process_sender_key_distribution_message,
    CiphertextMessage, IdentityKey, KeyPair, PreKeyBundle, PreKeyRecord, PreKeySignalMessage,
    PreKeyStore, ProtocolAddress, SenderKeyName, SignalMessage, UsePQRatchet,
};
use wacore::store::traits::*;
use wacore::store::InMemoryBackend;
use wavault::Vault;
use whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter;
use whatsapp_rust::store::signal_cache::SignalStoreCache;
use whatsapp_rust::store::Device;

const ALICE: &str = "15550001111";
const BOB: &str = "15550002222";
const GROUP: &str = "120363000000000001@g.us";
const ONE_TIME_PREKEY: u32 = 31;

/// One side of the conversation, wired like the client wires its device.
struct Party {
    backend: Arc<dyn Backend>,
    cache: Arc<SignalStoreCache>,
    stores: SignalProtocolStoreAdapter,
    device: wacore::store::Device,
}

impl Party {
    /// Loads (or first creates) the device, as `PersistenceManager::new` does.
    async fn new(backend: Arc<dyn Backend>) -> Party {
        if !backend.exists().await.expect("exists") {
            backend.create().await.expect("create");
        }
        let core = backend.load().await.expect("load").expect("device");
        let mut device = Device::new(backend.clone());
        device.load_from_serializable(core.clone());
        let cache = Arc::new(SignalStoreCache::new());
        let stores = SignalProtocolStoreAdapter::new(
            Arc::new(async_lock::RwLock::new(device)),
            cache.clone(),
        );
        Party {
            backend,
            cache,
            stores,
            device: core,
        }
    }

    /// Persists the cache, as the client does before a send reaches the wire.
    async fn flush(&self) {
        self.cache
            .flush(self.backend.as_ref())
            .await
            .expect("flush signal cache to the backend");
    }

    fn bundle(&self, prekey: &KeyPair) -> PreKeyBundle {
        PreKeyBundle::new(
            self.device.registration_id,
            1u32.into(),
            Some((ONE_TIME_PREKEY.into(), prekey.public_key)),
            self.device.signed_pre_key_id.into(),
            self.device.signed_pre_key.public_key,
            self.device.signed_pre_key_signature.to_vec(),
            IdentityKey::new(self.device.identity_key.public_key),
        )
        .expect("pre-key bundle")
    }

    async fn encrypt(&mut self, to: &ProtocolAddress, text: &str) -> CiphertextMessage {
        let s = &mut self.stores;
        let ct = message_encrypt(
            text.as_bytes(),
            to,
            &mut s.session_store,
            &mut s.identity_store,
        )
        .await
        .expect("encrypt");
        self.flush().await;
        wire(ct)
    }

    async fn decrypt(
        &mut self,
        from: &ProtocolAddress,
        ct: &CiphertextMessage,
        rng: &mut rand::rngs::StdRng,
    ) -> String {
        let s = &mut self.stores;
        let out = message_decrypt(
            ct,
            from,
            &mut s.session_store,
            &mut s.identity_store,
            &mut s.pre_key_store,
            &s.signed_pre_key_store,
            rng,
            UsePQRatchet::No,
        )
        .await
        .unwrap_or_else(|e| panic!("decrypt from {from}: {e}"));
        if let Some(id) = out.consumed_prekey_id {
            s.pre_key_store.buffer_consumed_prekey(id, from).await;
        }
        self.flush().await;
        String::from_utf8(out.plaintext).expect("utf-8 plaintext")
    }
}

/// Through bytes and back, as on the wire (no state shared by accident).
fn wire(ct: CiphertextMessage) -> CiphertextMessage {
    let bytes = ct.serialize().to_vec();
    match ct {
        CiphertextMessage::PreKeySignalMessage(_) => CiphertextMessage::PreKeySignalMessage(
            PreKeySignalMessage::try_from(bytes.as_slice()).expect("pkmsg"),
        ),
        CiphertextMessage::SignalMessage(_) => CiphertextMessage::SignalMessage(
            SignalMessage::try_from(bytes.as_slice()).expect("msg"),
        ),
        other => panic!("unexpected ciphertext type {:?}", other.message_type()),
    }
}

fn alice_in(v: &Vault) -> Arc<dyn Backend> {
    backend(v, "alice")
}

/// Closes Alice's vault and opens it again: nothing of her survives in memory.
async fn reopen_alice(alice: Party, vault: Vault, dir: &Path) -> (Party, Vault) {
    drop(alice);
    drop(vault);
    let vault = open(dir);
    let alice = Party::new(alice_in(&vault)).await;
    (alice, vault)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_continues_across_vault_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EA1);
    let alice_addr = ProtocolAddress::new(ALICE, 1u32.into());
    let bob_addr = ProtocolAddress::new(BOB, 1u32.into());

    // Alice registers: device and a one-time pre-key in the vault.
    let vault = new_vault(dir.path(), &["alice"]);
    let mut alice = Party::new(alice_in(&vault)).await;
    let identity_before = alice.device.identity_key.public_key;
    let prekey = KeyPair::generate(&mut rng);
    alice
        .stores
        .pre_key_store
        .save_pre_key(
            ONE_TIME_PREKEY.into(),
            &PreKeyRecord::new(ONE_TIME_PREKEY.into(), &prekey),
        )
        .await
        .expect("save one-time pre-key");
    let bundle = alice.bundle(&prekey);
    let (a, vault) = reopen_alice(alice, vault, dir.path()).await;
    alice = a;
    assert_eq!(
        alice.device.identity_key.public_key, identity_before,
        "identity survives the reopen"
    );

    // Bob starts a session from Alice's bundle and writes first.
    let mut bob = Party::new(Arc::new(InMemoryBackend::new())).await;
    {
        let s = &mut bob.stores;
        process_prekey_bundle(
            &alice_addr,
            &mut s.session_store,
            &mut s.identity_store,
            &bundle,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .expect("Bob processes Alice's bundle");
    }
    let first = bob.encrypt(&alice_addr, "hello Alice").await;
    assert!(matches!(first, CiphertextMessage::PreKeySignalMessage(_)));
    assert_eq!(
        alice.decrypt(&bob_addr, &first, &mut rng).await,
        "hello Alice"
    );
    assert!(
        alice
            .backend
            .load_prekey(ONE_TIME_PREKEY)
            .await
            .unwrap()
            .is_none(),
        "the consumed one-time pre-key is deleted with the session flush"
    );
    let (a, mut vault) = reopen_alice(alice, vault, dir.path()).await;
    alice = a;

    // Group: Alice hands Bob her sender key (over the pairwise session in
    // real life), then writes to the group.
    let alice_in_group = SenderKeyName::from_parts(GROUP, alice_addr.as_str());
    let skdm = create_sender_key_distribution_message(
        &alice_in_group,
        &mut alice.stores.sender_key_store,
        &mut rng,
    )
    .await
    .expect("sender key distribution");
    alice.flush().await;
    process_sender_key_distribution_message(
        &alice_in_group,
        &skdm,
        &mut bob.stores.sender_key_store,
    )
    .await
    .expect("Bob stores Alice's sender key");

    let mut exchanged = 1;
    for round in 1..=6 {
        // Reopen between every message Alice sends or receives.
        let (a, v) = reopen_alice(alice, vault, dir.path()).await;
        alice = a;
        vault = v;
        let text = format!("round {round}: hi Bob");
        let ct = alice.encrypt(&bob_addr, &text).await;
        assert_eq!(bob.decrypt(&alice_addr, &ct, &mut rng).await, text);

        let (a, v) = reopen_alice(alice, vault, dir.path()).await;
        alice = a;
        vault = v;
        for k in 0..2 {
            let text = format!("round {round}.{k}: hi Alice");
            let ct = bob.encrypt(&alice_addr, &text).await;
            assert_eq!(alice.decrypt(&bob_addr, &ct, &mut rng).await, text);
        }

        let (a, v) = reopen_alice(alice, vault, dir.path()).await;
        alice = a;
        vault = v;
        let text = format!("round {round}: hi group");
        let skm = group_encrypt(
            &mut alice.stores.sender_key_store,
            &alice_in_group,
            text.as_bytes(),
            &mut rng,
        )
        .await
        .expect("group encrypt");
        alice.flush().await;
        let plain = group_decrypt(
            skm.serialized(),
            &mut bob.stores.sender_key_store,
            &alice_in_group,
        )
        .await
        .expect("Bob decrypts Alice's group message");
        assert_eq!(plain, text.as_bytes());
        exchanged += 4;
    }
    assert_eq!(exchanged, 25);

    // What Alice holds is in the vault, and names are not in clear on disk.
    assert!(alice
        .backend
        .get_session(bob_addr.as_str())
        .await
        .unwrap()
        .is_some());
    assert!(alice
        .backend
        .get_sender_key(alice_in_group.cache_key())
        .await
        .unwrap()
        .is_some());
    drop(alice);
    vault.flush().expect("flush");
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).expect("read vault file");
        for needle in [BOB.as_bytes(), GROUP.as_bytes(), b"hi Alice".as_slice()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} appears in clear in {}",
                String::from_utf8_lossy(needle),
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("list vault folder") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
