//! Server (responder) side of the WhatsApp Noise handshake, and the transport
//! ciphers that follow it.
//!
//! Why it exists: whatsapp-rust only ships the initiator. To let the real
//! client connect in memory the peer must answer its `ClientHello` the way
//! the WhatsApp edge does: full XX for unpaired devices and first logins, IK
//! (0-RTT) once the client has cached the peer's static key, and XXfallback
//! when an IK hello was sealed for a static key this peer does not own (for
//! example a backend paired against another `Peer` instance).
//!
//! The cert chain is the zero-signed one from
//! `wacore_noise::test_util::build_cert_chain_bytes`; the client accepts it
//! only because the tests enable `danger-skip-cert-chain-verify`.

use whatsapp_rust::anyhow::{self, anyhow, Context as _};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::framing::encode_frame;
use whatsapp_rust::wacore::handshake::NoiseHandshake;
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::noise::NoiseCipher;
use whatsapp_rust::wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use whatsapp_rust::waproto::whatsapp as wa;

/// Which Noise pattern a connection used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Full handshake: unpaired devices, and the first login after pairing.
    Xx,
    /// Resumed handshake with the cached server static key.
    Ik,
    /// IK hello the peer could not open (unknown static key); answered with
    /// XXfallback, which the client finishes like XX.
    XxFallback,
}

/// The peer's long-lived Noise identity: static key pair and cert chain.
pub(crate) struct ServerIdentity {
    keypair: KeyPair,
    static_pub: [u8; 32],
    cert_chain: Vec<u8>,
}

impl ServerIdentity {
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let keypair = KeyPair::generate(&mut rand::rng());
        let static_pub: [u8; 32] = keypair
            .public_key
            .public_key_bytes()
            .try_into()
            .map_err(|_| anyhow!("X25519 public key is not 32 bytes"))?;
        let cert_chain = wacore_noise::test_util::build_cert_chain_bytes(&static_pub);
        Ok(Self {
            keypair,
            static_pub,
            cert_chain,
        })
    }
}

/// A finished handshake: who the client is and the transport ciphers.
pub(crate) struct NoiseSession {
    pub(crate) kind: HandshakeKind,
    /// The client's static Noise public key (the `noise` field of its QR).
    pub(crate) client_static: [u8; 32],
    pub(crate) payload: wa::ClientPayload,
    pub(crate) transport: NoiseTransport,
}

/// What to do after the client's first handshake message.
pub(crate) enum HelloReply {
    /// XX or XXfallback: send `server_hello`, then feed the ClientFinish to
    /// [`PendingFinish::finish`].
    AwaitFinish {
        server_hello: Vec<u8>,
        pending: Box<PendingFinish>,
    },
    /// IK accepted: send `server_hello`; the session is ready.
    Done {
        server_hello: Vec<u8>,
        session: Box<NoiseSession>,
    },
}

/// Responder state between ServerHello and ClientFinish.
pub(crate) struct PendingFinish {
    noise: NoiseHandshake,
    server_ephemeral: KeyPair,
    kind: HandshakeKind,
}

fn key32(bytes: Vec<u8>, what: &str) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow!("{what} must be 32 bytes, got {}", b.len()))
}

fn encode_server_hello(ephemeral: &[u8], static_ct: Option<Vec<u8>>, payload: Vec<u8>) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: whatsapp_rust::buffa::MessageField::some(
            wa::handshake_message::ServerHello {
                ephemeral: Some(ephemeral.to_vec()),
                r#static: static_ct,
                payload: Some(payload),
                ..Default::default()
            },
        ),
        ..Default::default()
    }
    .encode_to_vec()
}

fn decode_client_payload(bytes: &[u8]) -> anyhow::Result<wa::ClientPayload> {
    wa::ClientPayload::decode_from_slice(bytes).context("decoding ClientPayload")
}

impl ServerIdentity {
    /// Answers the client's first handshake frame (the ClientHello).
    pub(crate) fn respond_to_hello(&self, hello: &[u8]) -> anyhow::Result<HelloReply> {
        let msg = wa::HandshakeMessage::decode_from_slice(hello).context("decoding ClientHello")?;
        let ch = msg
            .client_hello
            .into_option()
            .ok_or_else(|| anyhow!("handshake message without client_hello"))?;
        let client_eph = key32(
            ch.ephemeral
                .ok_or_else(|| anyhow!("ClientHello without ephemeral"))?,
            "client ephemeral",
        )?;
        match (ch.r#static, ch.payload) {
            (Some(enc_static), Some(enc_payload)) => {
                match self.try_ik(client_eph, &enc_static, &enc_payload)? {
                    Some(reply) => Ok(reply),
                    // Sealed for a static key we do not own: XXfallback keeps
                    // the ephemeral already on the wire.
                    None => self.xx_server_hello(client_eph, HandshakeKind::XxFallback),
                }
            }
            _ => self.xx_server_hello(client_eph, HandshakeKind::Xx),
        }
    }

    fn xx_server_hello(
        &self,
        client_eph: [u8; 32],
        kind: HandshakeKind,
    ) -> anyhow::Result<HelloReply> {
        let pattern = match kind {
            HandshakeKind::XxFallback => NOISE_PATTERN_XXFALLBACK,
            _ => NOISE_PATTERN_XX,
        };
        let mut noise = NoiseHandshake::new(pattern, &WA_CONN_HEADER)?;
        // -> e
        noise.authenticate(&client_eph);
        // <- e, ee, s, es, payload(cert chain)
        let server_ephemeral = KeyPair::generate(&mut rand::rng());
        let server_eph_pub = server_ephemeral.public_key.public_key_bytes().to_vec();
        noise.authenticate(&server_eph_pub);
        noise.mix_shared_secret(server_ephemeral.private_key.serialize(), &client_eph)?;
        let enc_static = noise.encrypt(&self.static_pub)?;
        noise.mix_shared_secret(self.keypair.private_key.serialize(), &client_eph)?;
        let enc_cert = noise.encrypt(&self.cert_chain)?;
        Ok(HelloReply::AwaitFinish {
            server_hello: encode_server_hello(&server_eph_pub, Some(enc_static), enc_cert),
            pending: Box::new(PendingFinish {
                noise,
                server_ephemeral,
                kind,
            }),
        })
    }

    /// IK responder. `Ok(None)` when the client's static cannot be opened,
    /// i.e. the hello was sealed for another server key.
    fn try_ik(
        &self,
        client_eph: [u8; 32],
        enc_static: &[u8],
        enc_payload: &[u8],
    ) -> anyhow::Result<Option<HelloReply>> {
        let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
        // pre-message <- s, then -> e, es
        noise.authenticate(&self.static_pub);
        noise.authenticate(&client_eph);
        noise.mix_shared_secret(self.keypair.private_key.serialize(), &client_eph)?;
        // -> s
        let Ok(client_static) = noise.decrypt(enc_static) else {
            return Ok(None);
        };
        let client_static = key32(client_static, "client static")?;
        // ss, then the 0-RTT payload
        noise.mix_shared_secret(self.keypair.private_key.serialize(), &client_static)?;
        let payload = decode_client_payload(&noise.decrypt(enc_payload)?)?;
        // <- e, ee, se, payload(cert chain)
        let server_ephemeral = KeyPair::generate(&mut rand::rng());
        let server_eph_pub = server_ephemeral.public_key.public_key_bytes().to_vec();
        noise.authenticate(&server_eph_pub);
        noise.mix_shared_secret(server_ephemeral.private_key.serialize(), &client_eph)?;
        noise.mix_shared_secret(server_ephemeral.private_key.serialize(), &client_static)?;
        let enc_cert = noise.encrypt(&self.cert_chain)?;
        let (initiator_write, initiator_read) = noise.finish()?;
        Ok(Some(HelloReply::Done {
            server_hello: encode_server_hello(&server_eph_pub, None, enc_cert),
            session: Box::new(NoiseSession {
                kind: HandshakeKind::Ik,
                client_static,
                payload,
                transport: NoiseTransport::new(initiator_write, initiator_read),
            }),
        }))
    }
}

impl PendingFinish {
    /// Processes the ClientFinish: opens the client static, mixes
    /// DH(server ephemeral, client static), opens the ClientPayload.
    pub(crate) fn finish(
        mut self: Box<Self>,
        client_finish: &[u8],
    ) -> anyhow::Result<NoiseSession> {
        let msg = wa::HandshakeMessage::decode_from_slice(client_finish)
            .context("decoding ClientFinish")?;
        let cf = msg
            .client_finish
            .into_option()
            .ok_or_else(|| anyhow!("handshake message without client_finish"))?;
        let enc_static = cf
            .r#static
            .ok_or_else(|| anyhow!("ClientFinish without static"))?;
        let enc_payload = cf
            .payload
            .ok_or_else(|| anyhow!("ClientFinish without payload"))?;
        let client_static = key32(self.noise.decrypt(&enc_static)?, "client static")?;
        self.noise.mix_shared_secret(
            self.server_ephemeral.private_key.serialize(),
            &client_static,
        )?;
        let payload = decode_client_payload(&self.noise.decrypt(&enc_payload)?)?;
        let (initiator_write, initiator_read) = self.noise.finish()?;
        Ok(NoiseSession {
            kind: self.kind,
            client_static,
            payload,
            transport: NoiseTransport::new(initiator_write, initiator_read),
        })
    }
}

/// Post-handshake AES-GCM transport, seen from the server: it opens with the
/// initiator's write key and seals with the initiator's read key. Each
/// direction counts frames from 0.
pub(crate) struct NoiseTransport {
    open_key: NoiseCipher,
    seal_key: NoiseCipher,
    open_counter: u32,
    seal_counter: u32,
}

impl NoiseTransport {
    fn new(initiator_write: NoiseCipher, initiator_read: NoiseCipher) -> Self {
        Self {
            open_key: initiator_write,
            seal_key: initiator_read,
            open_counter: 0,
            seal_counter: 0,
        }
    }

    /// Decrypts one client frame (without its length prefix).
    pub(crate) fn open(&mut self, frame: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut buf = frame.to_vec();
        self.open_key
            .decrypt_in_place_with_counter(self.open_counter, &mut buf)
            .context("decrypting client frame")?;
        self.open_counter = self
            .open_counter
            .checked_add(1)
            .ok_or_else(|| anyhow!("read counter exhausted"))?;
        Ok(buf)
    }

    /// Encrypts one plaintext and returns it framed (3-byte length prefix).
    pub(crate) fn seal_framed(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let ciphertext = self
            .seal_key
            .encrypt_with_counter(self.seal_counter, plaintext)
            .context("encrypting server frame")?;
        self.seal_counter = self
            .seal_counter
            .checked_add(1)
            .ok_or_else(|| anyhow!("write counter exhausted"))?;
        encode_frame(&ciphertext, None)
    }
}
