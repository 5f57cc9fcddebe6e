//! `DeviceStore` for [`VaultBackend`]: the bot's own credentials (the
//! whatsapp-rust `Device`: noise key, identity key, signed pre-key, `pn`...).
//!
//! The `Device` is stored as itself through [`crate::codec`], behind a layout
//! number naming the whatsapp-rust struct shape that wrote it (bincode is not
//! self-describing, so a future whatsapp-rust with a different `Device` needs
//! a migration keyed on this number). Runtime-only fields the struct does not
//! serialize (`device_props`, `client_profile`) are restored on load to the
//! library's defaults, as whatsapp-rust's SQLite store does.
//!
//! `save` and `create` are durable before they return. `create` persists a
//! fresh `Device` (new keys, no `pn`) so `exists()` is true afterwards; it
//! never replaces a device that is already there.

use super::backend::VaultBackend;
use super::kinds;
use super::rows;
use crate::codec;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wacore::store::error::Result;
use wacore::store::traits::DeviceStore;
use wacore::store::Device;

/// Name of the single device record.
pub const DEVICE_NAME: &[u8] = b"device";
/// Layout of the stored `Device`: the struct of whatsapp-rust/wacore 0.7.
pub const DEVICE_LAYOUT_WACORE_0_7: u16 = 1;
/// The id `create` reports (one backend = one device).
pub const DEVICE_ID: i32 = 1;

#[derive(Serialize)]
struct DeviceRecordRef<'a> {
    layout: u16,
    device: &'a Device,
}

#[derive(Deserialize)]
struct DeviceRecord {
    layout: u16,
    device: Device,
}

/// Encodes a `Device` the way the backend stores it.
pub fn encode_device(device: &Device) -> Vec<u8> {
    codec::encode(&DeviceRecordRef {
        layout: DEVICE_LAYOUT_WACORE_0_7,
        device,
    })
}

/// Decodes a stored `Device`, restoring its runtime-only fields.
pub fn decode_device(bytes: &[u8]) -> Result<Device> {
    let rec: DeviceRecord = rows::decode("device", bytes)?;
    if rec.layout != DEVICE_LAYOUT_WACORE_0_7 {
        return Err(rows::malformed(
            "device",
            format!(
                "layout {} is not one this wavault reads (written by a newer wavault?)",
                rec.layout
            ),
        ));
    }
    let mut device = rec.device;
    device.device_props = Arc::new(wacore::store::device::DEVICE_PROPS.clone());
    device.client_profile = wacore::client_profile::ClientProfile::web();
    Ok(device)
}

#[async_trait]
impl DeviceStore for VaultBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        self.put(kinds::DEVICE, DEVICE_NAME, &encode_device(device))?;
        self.durable().await
    }

    async fn load(&self) -> Result<Option<Device>> {
        match self.get(kinds::DEVICE, DEVICE_NAME)? {
            Some(b) => Ok(Some(decode_device(&b)?)),
            None => Ok(None),
        }
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get(kinds::DEVICE, DEVICE_NAME)?.is_some())
    }

    async fn create(&self) -> Result<i32> {
        {
            let _g = self.lock.lock().await;
            if self.get(kinds::DEVICE, DEVICE_NAME)?.is_none() {
                // Key generation happens here, off any hot path (once per bot).
                self.put(kinds::DEVICE, DEVICE_NAME, &encode_device(&Device::new()))?;
            }
        }
        self.durable().await?;
        Ok(DEVICE_ID)
    }
}
