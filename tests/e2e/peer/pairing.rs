//! The phone's half of QR pairing.
//!
//! Why it exists: a companion only accepts a `pair-success` whose signed
//! device identity checks out (wacore/src/pair.rs `do_pair_crypto`): an HMAC
//! keyed with the ADV secret that travelled in the QR code, and an account
//! signature over the companion's identity key. This module plays the primary
//! phone: it reads the QR string, builds that identity with a phone account
//! key, and afterwards checks the companion's own device signature in its
//! `pair-device-sign` answer, so a pairing is only recorded when both sides
//! signed correctly.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use whatsapp_rust::anyhow::{self, anyhow, bail, Context as _};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PublicKey};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

use super::stanza::{attr, bytes_of, child};

const ACCOUNT_SIGNATURE_PREFIX: &[u8] = &[6, 0];
const DEVICE_SIGNATURE_PREFIX: &[u8] = &[6, 1];

/// The fields of a pairing QR code:
/// `ref,b64(noise pub),b64(identity pub),b64(adv secret),client type`.
#[derive(Debug, Clone)]
pub struct QrCode {
    pub pairing_ref: String,
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub adv_secret: [u8; 32],
}

fn b64_key(field: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(field)
        .with_context(|| format!("QR {what} is not base64"))?;
    raw.try_into()
        .map_err(|raw: Vec<u8>| anyhow!("QR {what} must be 32 bytes, got {}", raw.len()))
}

impl QrCode {
    pub fn parse(code: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = code.split(',').collect();
        if parts.len() < 4 || parts.iter().take(4).any(|p| p.is_empty()) {
            bail!("QR code must have at least 4 non-empty comma-separated fields");
        }
        Ok(Self {
            pairing_ref: parts[0].to_string(),
            noise_pub: b64_key(parts[1], "noise key")?,
            identity_pub: b64_key(parts[2], "identity key")?,
            adv_secret: b64_key(parts[3], "adv secret")?,
        })
    }
}

/// A device identity the phone signed for one companion, kept until the
/// companion countersigns it.
pub(crate) struct SignedIdentity {
    /// `ADVSignedDeviceIdentityHMAC`, the bytes of `<device-identity>`.
    pub(crate) container: Vec<u8>,
    /// The encoded `ADVDeviceIdentity` both signatures cover.
    pub(crate) details: Vec<u8>,
    pub(crate) account_pub: Vec<u8>,
    pub(crate) key_index: u32,
}

/// Builds the `<device-identity>` payload for `qr`, signed by `account`.
pub(crate) fn sign_device_identity(
    account: &KeyPair,
    qr: &QrCode,
    key_index: u32,
) -> anyhow::Result<SignedIdentity> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(rand::random::<u32>()),
        timestamp: Some(super::stanza::unix_now()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();

    let mut signed_msg = Vec::with_capacity(2 + details.len() + 32);
    signed_msg.extend_from_slice(ACCOUNT_SIGNATURE_PREFIX);
    signed_msg.extend_from_slice(&details);
    signed_msg.extend_from_slice(&qr.identity_pub);
    let account_signature = account
        .private_key
        .calculate_signature(&signed_msg, &mut rand::rng())
        .map_err(|e| anyhow!("account signature failed: {e}"))?;

    let account_pub = account.public_key.public_key_bytes().to_vec();
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details.clone()),
        account_signature_key: Some(account_pub.clone()),
        account_signature: Some(account_signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();

    let mut mac = Hmac::<Sha256>::new_from_slice(&qr.adv_secret)
        .map_err(|e| anyhow!("HMAC key rejected: {e}"))?;
    mac.update(&signed);
    let container = wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();

    Ok(SignedIdentity {
        container,
        details,
        account_pub,
        key_index,
    })
}

/// Checks the companion's `<pair-device-sign>` answer: same details and
/// account key as sent, and a valid device signature by `identity_pub`.
pub(crate) fn verify_pair_device_sign(
    answer: &Node,
    sent: &SignedIdentity,
    identity_pub: &[u8; 32],
) -> anyhow::Result<()> {
    let identity_node = child(answer, "pair-device-sign")
        .and_then(|n| child(n, "device-identity"))
        .ok_or_else(|| anyhow!("answer has no pair-device-sign/device-identity"))?;
    let key_index = attr(identity_node, "key-index")
        .and_then(|k| k.parse::<u32>().ok())
        .ok_or_else(|| anyhow!("device-identity without a numeric key-index"))?;
    if key_index != sent.key_index {
        bail!("key-index {key_index} differs from {}", sent.key_index);
    }
    let bytes = bytes_of(identity_node).ok_or_else(|| anyhow!("device-identity is empty"))?;
    let signed = wa::ADVSignedDeviceIdentity::decode_from_slice(bytes)
        .context("decoding the companion's ADVSignedDeviceIdentity")?;
    if signed.details.as_deref() != Some(sent.details.as_slice()) {
        bail!("companion changed the identity details");
    }
    if signed.account_signature_key.as_deref() != Some(sent.account_pub.as_slice()) {
        bail!("companion changed the account signature key");
    }
    let device_signature = signed
        .device_signature
        .ok_or_else(|| anyhow!("companion sent no device signature"))?;
    let mut msg = Vec::with_capacity(2 + sent.details.len() + 64);
    msg.extend_from_slice(DEVICE_SIGNATURE_PREFIX);
    msg.extend_from_slice(&sent.details);
    msg.extend_from_slice(identity_pub);
    msg.extend_from_slice(&sent.account_pub);
    let identity =
        PublicKey::from_djb_public_key_bytes(identity_pub).context("companion identity key")?;
    if !identity.verify_signature(&msg, &device_signature) {
        bail!("companion device signature does not verify");
    }
    Ok(())
}
