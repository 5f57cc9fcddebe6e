//! A device record as a finished pairing leaves it (fresh keys, phone JID,
//! LID). Written into a bot's vault backend, it makes the runner take its
//! no-QR path without a 10 s pairing; the in-process peer accepts a login
//! from any paired device. Shared by the e2e tests and the benchmarks
//! (included with `#[path]`).

use wacore::store::traits::DeviceStore;
use wavault::{BotId, Vault};

/// Writes `bot`'s device record as paired to `phone` (device 1) and flushes.
pub async fn write_paired_device(vault: &Vault, bot: &BotId, phone: u64, push_name: &str) {
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
}
