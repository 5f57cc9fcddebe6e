//! A bot's worth of realistic Signal state, written through the
//! whatsapp-rust backend API (so every record is what a real bot stores):
//! a paired device, 100 one-time pre-keys, a signed pre-key, 30 sessions
//! (1.5 KB each, about what a ratcheted session weighs), 30 identities and
//! 5 group sender keys (600 B). About 66 KB of records. Shared by the
//! backup tests and benchmarks (included with `#[path]`).

use std::sync::Arc;
use wacore::store::traits::Backend;

/// Deterministic filler bytes for `(seed, n)`.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes the state for bot number `n` (its phone number derives from `n`).
pub async fn fill(backend: &Arc<dyn Backend>, n: u64) {
    let mut device = wacore::store::Device::new();
    let phone = 4_915_100_000_000u64 + n;
    device.pn = Some(format!("{phone}:1@s.whatsapp.net").parse().unwrap());
    device.lid = Some(
        format!("{}:1@lid", 100_000_000_000_000u64 + n)
            .parse()
            .unwrap(),
    );
    device.push_name = format!("bot {n}");
    backend.save(&device).await.unwrap();
    for id in 1..=100u32 {
        backend
            .store_prekey(id, &filler(n * 1000 + u64::from(id), 150), id <= 50)
            .await
            .unwrap();
    }
    backend
        .store_signed_prekey(1, &filler(n, 120))
        .await
        .unwrap();
    for c in 0..30u64 {
        let addr = format!("{}.0:0", 4_917_000_000_000u64 + c);
        backend
            .put_session(&addr, &filler(n ^ (c << 20), 1500))
            .await
            .unwrap();
        let mut key = [0u8; 32];
        key.copy_from_slice(&filler(n + c, 32));
        backend.put_identity(&addr, key).await.unwrap();
    }
    for g in 0..5u64 {
        let addr = format!("1203630{g:05}@g.us::{phone}::0");
        backend
            .put_sender_key(&addr, &filler(n * 7 + g, 600))
            .await
            .unwrap();
    }
}
