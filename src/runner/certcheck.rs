//! Is the Noise server-certificate check compiled in?
//!
//! whatsapp-rust verifies the server's certificate chain against WhatsApp's
//! root key during the Noise handshake, unless the crate was built with its
//! `danger-skip-cert-chain-verify` feature. wavault's tests enable that
//! feature (the in-process peer cannot sign as WhatsApp), and cargo unifies
//! dev-dependency features into every binary built in the same invocation:
//! after `cargo test` or `cargo bench`, `target/*/wavault` accepts any
//! server. Rather than trust the build, the binary asks the library at run
//! time: it feeds the verifier a structurally valid chain with zeroed
//! signatures. A build that verifies refuses it; a build that accepts it
//! would accept anyone, and then [`super::net::Net::production`] refuses to
//! connect to WhatsApp at all.

use wacore::noise::HandshakeUtils;

/// Whether whatsapp-rust checks the server's certificate chain in this build.
pub fn server_cert_verification_active() -> bool {
    let key = [0x5a; 32];
    HandshakeUtils::verify_server_cert(&zero_signed_chain(&key), &key).is_err()
}

/// What `wavault --version` and the refusal say about the check.
pub fn describe() -> &'static str {
    if server_cert_verification_active() {
        "server certificate verification: on"
    } else {
        "server certificate verification: OFF (test build: this binary refuses to connect to WhatsApp)"
    }
}

/// Why a connection to WhatsApp is refused in a build without the check.
pub const REFUSAL: &str = "refusing to connect to WhatsApp: this wavault binary was built with \
    whatsapp-rust's danger-skip-cert-chain-verify feature (cargo unifies it in from the test \
    dependencies after `cargo test` or `cargo bench`), so it would accept any server; rebuild \
    with `cargo build --release --locked` or `cargo install --locked --path .`";

/// A `CertChain` protobuf: intermediate (serial 1, issued by 0) and leaf
/// (serial 2, issued by 1, key `key`), both with 64 zero bytes as signature.
fn zero_signed_chain(key: &[u8; 32]) -> Vec<u8> {
    let intermediate = details(1, 0, &[0xcc; 32]);
    let leaf = details(2, 1, key);
    let cert = |d: &[u8]| [bytes_field(1, d), bytes_field(2, &[0u8; 64])].concat();
    [
        bytes_field(1, &cert(&leaf)),
        bytes_field(2, &cert(&intermediate)),
    ]
    .concat()
}

/// `NoiseCertificate.Details { serial = 1, issuerSerial = 2, key = 3, notBefore = 4, notAfter = 5 }`.
fn details(serial: u64, issuer: u64, key: &[u8]) -> Vec<u8> {
    [
        varint_field(1, serial),
        varint_field(2, issuer),
        bytes_field(3, key),
        varint_field(4, 1_700_000_000),
        varint_field(5, 4_000_000_000),
    ]
    .concat()
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(field: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(field << 3, &mut out);
    varint(v, &mut out);
    out
}

fn bytes_field(field: u64, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((field << 3) | 2, &mut out);
    varint(b.len() as u64, &mut out);
    out.extend_from_slice(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe chain parses: with verification skipped (this test build,
    /// where the dev-dependencies turn the danger feature on) it is
    /// accepted, so a rejection in a release build can only come from the
    /// signature check, not from a malformed probe.
    #[test]
    fn probe_chain_is_well_formed_and_test_builds_skip_the_check() {
        let key = [7u8; 32];
        let chain = zero_signed_chain(&key);
        let r = HandshakeUtils::verify_server_cert(&chain, &key);
        assert!(r.is_ok(), "{r:?}");
        assert!(!server_cert_verification_active());
        // A chain whose leaf names another key fails even here: the probe
        // is read field by field.
        assert!(HandshakeUtils::verify_server_cert(&chain, &[8u8; 32]).is_err());
        assert!(describe().contains("OFF"));
    }
}
