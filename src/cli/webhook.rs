//! `webhook secret show|rotate`: the secrets webhooks are signed with
//! (`messaging::signing`), through the running `run` when it holds the vault.

use std::time::Duration;

use clap::Subcommand;

use super::{perform, print_json, unexpected, Global};
use crate::botid::BotId;
use crate::error::Result;
use crate::ops::{Request, Response};

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// The secrets webhook POSTs are signed with (Standard Webhooks)
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print the secret a bot's webhooks are signed with (without --bot: the `run` default); made on first use
    Show {
        /// The bot (its own secret, or the default it signs with)
        #[arg(long, value_name = "ID")]
        bot: Option<BotId>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Replace the secret; the old one keeps signing beside it for the grace period
    Rotate {
        /// The bot (one with its own webhook; a bot on the `run` default webhook signs with the default secret: rotate that); without it: the `run` default
        #[arg(long, value_name = "ID")]
        bot: Option<BotId>,
        /// How long the old secret keeps signing (0s: stops at once)
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration, default_value = "24h")]
        grace: Duration,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

pub fn webhook(g: &Global, cmd: WebhookCommand) -> Result<()> {
    let WebhookCommand::Secret(cmd) = cmd;
    let (req, json) = match cmd {
        SecretCommand::Show { bot, json } => (Request::WebhookSecretShow { bot }, json),
        SecretCommand::Rotate { bot, grace, json } => (
            Request::WebhookSecretRotate {
                bot,
                grace_secs: grace.as_secs(),
            },
            json,
        ),
    };
    let Response::WebhookSecret(s) = perform(g, req, Vec::new())?.resp else {
        return Err(unexpected("webhook secret"));
    };
    if json {
        print_json(&s)
    } else {
        println!("{}", s.secret);
        Ok(())
    }
}
