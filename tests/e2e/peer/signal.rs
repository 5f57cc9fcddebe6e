//! Signal state of a contact, and the bots' pre-key bundles as the server
//! keeps them.
//!
//! Why it exists: a contact (a WhatsApp user the peer plays) must encrypt
//! to and decrypt from the real client with the real Signal protocol, so it
//! needs an identity, pre-keys and sessions. [`ContactSignal`] is that state
//! in memory: the four libsignal store traits over hash maps (trust on first
//! use, like a fresh phone) plus the keys the server hands out as the
//! contact's bundle. [`BotBundle`] is what a bot uploaded at login
//! (`<iq xmlns="encrypt" type="set">`): the server keeps it so a contact can
//! start a session with a bot that is offline, consuming one one-time
//! pre-key per new session like the real server.

use std::collections::HashMap;

use whatsapp_rust::anyhow::{self, anyhow, Context as _};
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::libsignal::protocol::{
    message_decrypt, message_encrypt, process_prekey_bundle, CiphertextMessage, DeviceId,
    Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore,
    ProtocolAddress, PublicKey, SessionRecord, SessionStore, SignalMessage, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore, Timestamp, UsePQRatchet,
};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::Node;

use super::stanza::{attr, bytes_of, child};

type SignalResult<T> = Result<T, SignalProtocolError>;

/// One-time pre-keys a contact starts with (each new session from a bot
/// consumes one; afterwards the bundle carries only the signed pre-key).
const CONTACT_ONE_TIME_KEYS: u32 = 8;
const SIGNED_PRE_KEY_ID: u32 = 1;

struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<ProtocolAddress, IdentityKey>,
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        match self.known.insert(address.clone(), *identity) {
            Some(old) if old != *identity => Ok(IdentityChange::ReplacedExisting),
            _ => Ok(IdentityChange::NewOrUnchanged),
        }
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        // A re-paired bot has a new identity: trust it, as a phone would
        // after showing "security code changed".
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(address).copied())
    }
}

#[derive(Default)]
struct Sessions(HashMap<ProtocolAddress, SessionRecord>);

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(address).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(address))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.clone(), record);
        Ok(())
    }
}

#[derive(Default)]
struct PreKeys(HashMap<u32, PreKeyRecord>);

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(prekey_id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(prekey_id.into(), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

struct SignedPreKeys(HashMap<u32, SignedPreKeyRecord>);

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(id.into(), record.clone());
        Ok(())
    }
}

/// A contact's Signal identity, keys and sessions (one per bot device).
pub(crate) struct ContactSignal {
    identities: Identities,
    sessions: Sessions,
    pre_keys: PreKeys,
    signed_pre_keys: SignedPreKeys,
    signed_public: PublicKey,
    signed_signature: Vec<u8>,
    /// One-time pre-keys the server has not handed out yet.
    unclaimed: Vec<(u32, PublicKey)>,
    /// Sessions this contact started from a bot's bundle.
    pub(crate) sessions_started: usize,
}

impl ContactSignal {
    pub(crate) fn generate() -> Self {
        let mut rng = rand::rng();
        let pair = IdentityKeyPair::generate(&mut rng);
        let registration_id = rand::random::<u32>() % 16_380 + 1;
        let signed = KeyPair::generate(&mut rng);
        let signed_signature = pair
            .private_key()
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .expect("signing with a fresh key")
            .to_vec();
        let record = SignedPreKeyRecord::new(
            SIGNED_PRE_KEY_ID.into(),
            Timestamp::from_epoch_millis(super::stanza::unix_now() * 1000),
            &signed,
            &signed_signature,
        );
        let mut pre_keys = PreKeys::default();
        let mut unclaimed = Vec::new();
        for id in 1..=CONTACT_ONE_TIME_KEYS {
            let key = KeyPair::generate(&mut rng);
            pre_keys.0.insert(id, PreKeyRecord::new(id.into(), &key));
            unclaimed.push((id, key.public_key));
        }
        Self {
            identities: Identities {
                pair,
                registration_id,
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            pre_keys,
            signed_pre_keys: SignedPreKeys(HashMap::from([(SIGNED_PRE_KEY_ID, record)])),
            signed_public: signed.public_key,
            signed_signature,
            unclaimed,
            sessions_started: 0,
        }
    }

    /// The `<user>` node of a pre-key fetch answer for this contact
    /// (consumes one one-time pre-key, if any is left).
    pub(crate) fn bundle_node(&mut self, jid: &str) -> Node {
        let mut children = vec![
            NodeBuilder::new("registration")
                .bytes(self.identities.registration_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5]).build(),
            NodeBuilder::new("identity")
                .bytes(
                    self.identities
                        .pair
                        .public_key()
                        .public_key_bytes()
                        .to_vec(),
                )
                .build(),
            key_node(
                "skey",
                SIGNED_PRE_KEY_ID,
                &self.signed_public,
                Some(&self.signed_signature),
            ),
        ];
        if !self.unclaimed.is_empty() {
            let (id, public) = self.unclaimed.remove(0);
            children.push(key_node("key", id, &public, None));
        }
        NodeBuilder::new("user")
            .attr("jid", jid)
            .children(children)
            .build()
    }

    /// The registration id a retry receipt carries.
    pub(crate) fn registration_id(&self) -> u32 {
        self.identities.registration_id
    }

    /// Device of an existing session with bot `phone`, if any.
    pub(crate) fn session_device(&self, phone: &str) -> Option<u16> {
        self.sessions
            .0
            .keys()
            .find(|a| a.name() == phone)
            .and_then(|a| u16::try_from(u32::from(a.device_id())).ok())
    }

    pub(crate) fn has_session(&self, bot: &ProtocolAddress) -> bool {
        self.sessions.0.contains_key(bot)
    }

    /// Starts a session with a bot device from its uploaded bundle.
    pub(crate) async fn start_session(
        &mut self,
        bot: &ProtocolAddress,
        bundle: &PreKeyBundle,
    ) -> anyhow::Result<()> {
        process_prekey_bundle(
            bot,
            &mut self.sessions,
            &mut self.identities,
            bundle,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
            UsePQRatchet::No,
        )
        .await
        .context("processing the bot's pre-key bundle")?;
        self.sessions_started += 1;
        Ok(())
    }

    /// Encrypts padded plaintext; returns (`pkmsg`|`msg`, ciphertext).
    pub(crate) async fn encrypt(
        &mut self,
        bot: &ProtocolAddress,
        padded: &[u8],
    ) -> anyhow::Result<(&'static str, Vec<u8>)> {
        let message = message_encrypt(padded, bot, &mut self.sessions, &mut self.identities)
            .await
            .context("encrypting for the bot")?;
        let (kind, _, bytes) = whatsapp_rust::wacore::send::extract_ciphertext(message)
            .ok_or_else(|| anyhow!("unexpected ciphertext type"))?;
        Ok((kind, bytes.into_vec()))
    }

    /// Decrypts one `<enc>` payload from a bot device (padded plaintext).
    pub(crate) async fn decrypt(
        &mut self,
        bot: &ProtocolAddress,
        kind: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let message = match kind {
            "pkmsg" => CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(bytes).context("parsing pkmsg")?,
            ),
            "msg" => CiphertextMessage::SignalMessage(
                SignalMessage::try_from(bytes).context("parsing msg")?,
            ),
            other => anyhow::bail!("unsupported enc type {other:?}"),
        };
        let result = message_decrypt(
            &message,
            bot,
            &mut self.sessions,
            &mut self.identities,
            &mut self.pre_keys,
            &self.signed_pre_keys,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
            UsePQRatchet::No,
        )
        .await
        .with_context(|| format!("decrypting {kind} from {bot}"))?;
        if let Some(used) = result.consumed_prekey_id {
            self.pre_keys.0.remove(&u32::from(used));
        }
        Ok(result.plaintext)
    }
}

fn key_node(tag: &'static str, id: u32, public: &PublicKey, signature: Option<&[u8]>) -> Node {
    let mut children = vec![
        NodeBuilder::new("id")
            .bytes(id.to_be_bytes()[1..].to_vec())
            .build(),
        NodeBuilder::new("value")
            .bytes(public.public_key_bytes().to_vec())
            .build(),
    ];
    if let Some(sig) = signature {
        children.push(NodeBuilder::new("signature").bytes(sig.to_vec()).build());
    }
    NodeBuilder::new(tag).children(children).build()
}

/// The Signal address a contact keeps for a bot device.
pub(crate) fn bot_address(phone: &str, device: u16) -> ProtocolAddress {
    ProtocolAddress::new(phone, DeviceId::from(u32::from(device)))
}

/// A bot's pre-key upload as the server keeps it.
#[derive(Clone)]
pub(crate) struct BotBundle {
    pub(crate) device: u16,
    registration_id: u32,
    identity: IdentityKey,
    signed_id: u32,
    signed_public: PublicKey,
    signed_signature: Vec<u8>,
    one_time: Vec<(u32, PublicKey)>,
}

fn key_id(node: &Node) -> anyhow::Result<u32> {
    let bytes = child(node, "id")
        .and_then(bytes_of)
        .ok_or_else(|| anyhow!("<{}> without <id>", node.tag))?;
    Ok(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

fn key_value(node: &Node) -> anyhow::Result<PublicKey> {
    let bytes = child(node, "value")
        .and_then(bytes_of)
        .ok_or_else(|| anyhow!("<{}> without <value>", node.tag))?;
    PublicKey::from_djb_public_key_bytes(bytes).map_err(|e| anyhow!("bad key: {e}"))
}

impl BotBundle {
    /// Parses `<iq xmlns="encrypt" type="set">` with a full upload
    /// (`registration`, `identity`, `list` of keys, `skey`); `None` for
    /// other encrypt sets (e.g. a signed pre-key rotation).
    pub(crate) fn from_upload(iq: &Node, device: u16) -> Option<anyhow::Result<Self>> {
        let registration = child(iq, "registration").and_then(bytes_of)?;
        Some(Self::parse(iq, registration, device))
    }

    fn parse(iq: &Node, registration: &[u8], device: u16) -> anyhow::Result<Self> {
        let registration_id = u32::from_be_bytes(
            registration
                .try_into()
                .map_err(|_| anyhow!("registration id is not 4 bytes"))?,
        );
        let identity = child(iq, "identity")
            .and_then(bytes_of)
            .ok_or_else(|| anyhow!("upload without <identity>"))?;
        let identity = IdentityKey::new(
            PublicKey::from_djb_public_key_bytes(identity)
                .map_err(|e| anyhow!("bad identity: {e}"))?,
        );
        let skey = child(iq, "skey").ok_or_else(|| anyhow!("upload without <skey>"))?;
        let signed_signature = child(skey, "signature")
            .and_then(bytes_of)
            .ok_or_else(|| anyhow!("<skey> without <signature>"))?
            .to_vec();
        let one_time = child(iq, "list")
            .and_then(Node::children)
            .unwrap_or_default()
            .iter()
            .filter(|k| k.tag == "key")
            .map(|k| Ok((key_id(k)?, key_value(k)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            device,
            registration_id,
            identity,
            signed_id: key_id(skey)?,
            signed_public: key_value(skey)?,
            signed_signature,
            one_time,
        })
    }

    /// A libsignal bundle for a new session, consuming one one-time key.
    pub(crate) fn claim(&mut self) -> anyhow::Result<PreKeyBundle> {
        let one_time = (!self.one_time.is_empty()).then(|| self.one_time.remove(0));
        PreKeyBundle::new(
            self.registration_id,
            DeviceId::from(u32::from(self.device)),
            one_time.map(|(id, key)| (PreKeyId::from(id), key)),
            SignedPreKeyId::from(self.signed_id),
            self.signed_public,
            self.signed_signature.clone(),
            self.identity,
        )
        .map_err(|e| anyhow!("building the bot's bundle: {e}"))
    }
}

/// `attr` that must be present.
pub(crate) fn need(node: &Node, key: &str) -> anyhow::Result<String> {
    attr(node, key).ok_or_else(|| anyhow!("<{}> without {key}", node.tag))
}
