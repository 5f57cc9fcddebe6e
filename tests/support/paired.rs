//! A device record as a finished pairing leaves it (fresh keys, phone JID,
//! LID). Written into a bot's vault backend, it makes the runner take its
//! no-QR path without a 10 s pairing. The in-process peer refuses logins of
//! devices it does not know, and of known ones presenting another Noise
//! key: writing the record also seeds the peer's account database with this
//! device's Noise static public key (`peer::seed_device`), as the pairing
//! would have. Shared by the e2e tests and the benchmarks (included with
//! `#[path]`, next to the peer module).

use wacore::store::traits::DeviceStore;
use wavault::{BotId, Vault};

/// Writes `bot`'s device record as paired to `phone` (device 1), flushes,
/// and registers the device's Noise key with every peer of this process.
/// Returns that key. Each phone must be used by one test only.
pub async fn write_paired_device(
    vault: &Vault,
    bot: &BotId,
    phone: u64,
    push_name: &str,
) -> [u8; 32] {
    let mut device = wacore::store::Device::new();
    device.pn = Some(format!("{phone}:1@s.whatsapp.net").parse().unwrap());
    device.lid = Some(
        format!("{}:1@lid", phone + 100_000_000_000_000)
            .parse()
            .unwrap(),
    );
    device.push_name = push_name.into();
    vault.bot_backend(bot).unwrap().save(&device).await.unwrap();
    vault.flush().unwrap();
    let noise_pub: [u8; 32] = device
        .noise_key
        .public_key
        .public_key_bytes()
        .try_into()
        .expect("X25519 public keys are 32 bytes");
    crate::peer::seed_device(&phone.to_string(), 1, noise_pub);
    noise_pub
}
