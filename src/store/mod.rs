//! The whatsapp-rust storage backend over the vault (one bot = one view).

use crate::vault::{BotView, Kind};

/// The name of a record kind owned by the backend, if it is one.
pub fn kind_name(_kind: Kind) -> Option<&'static str> {
    None
}

/// Whether a bot's stored credentials are complete: `paired`, `unpaired` or
/// `incomplete`. `None` when the backend layer cannot tell.
pub fn credentials_state(_view: &BotView) -> Option<String> {
    None
}

// TEMPORARY until the vault backend lands: an in-memory backend per call.
impl crate::vault::Vault {
    /// The whatsapp-rust backend of one bot.
    pub fn bot_backend(
        &self,
        bot: &crate::BotId,
    ) -> crate::Result<std::sync::Arc<wacore::store::InMemoryBackend>> {
        self.bot_config(bot)?;
        Ok(std::sync::Arc::new(wacore::store::InMemoryBackend::new()))
    }
}
