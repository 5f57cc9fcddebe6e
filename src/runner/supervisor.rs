//! One bot's supervisor: after its start delay, runs the bot (in a fleet,
//! only while this host holds its owner key: `runner::fleet`), and records
//! a failure to start (status `error`, alert `start_failed`).

use super::alert::{raise, AlertKind};
use super::meta::Meta;
use super::{RunnerEvent, Shared, StopSignal};
use crate::sessions::Status;
use crate::vault::BotConfig;
use std::sync::Arc;
use std::time::Duration;

/// Runs one bot until shutdown or a permanent failure.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    cfg: BotConfig,
    delay: Duration,
    mut stop: StopSignal,
) {
    let bot = cfg.id.clone();
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.wait() => true,
    };
    if !stopped {
        let ran = match shared.fleet.clone() {
            Some(fleet) => super::fleet::owned(&shared, fleet, &cfg, &mut stop).await,
            None => super::bot::run(&shared, &cfg, &mut stop).await,
        };
        if let Err(e) = ran {
            tracing::error!(bot = %bot, "the bot failed to start: {e}");
            let meta = Meta::detached(&shared, &bot);
            meta.error(e.to_string());
            meta.status(Status::Error, Some("failed to start"));
            raise(&shared, &bot, AlertKind::StartFailed, e.to_string()).await;
        }
    }
    shared.emit(RunnerEvent::Stopped { bot });
}
