//! The fleet on the command line: `run --nats ...` (the flags, flattened
//! into `run`) and `wavault fleet status` (who runs which bot, read from
//! the owners bucket; no vault needed).

use super::durations::{parse_age, parse_period};
use super::{print_json, Global};
use crate::error::{Error, Result};
use crate::fleet::FleetConfig;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS (shared by `run` and `fleet status`).
#[derive(Debug, Args, Clone, Default)]
pub struct NatsArgs {
    /// Join a fleet over NATS JetStream at URL (nats://HOST:4222, tls://...;
    /// comma-separated for several servers); without it, nothing changes
    /// [else $WAVAULT_NATS_URL, read once and removed from the environment]
    #[arg(long = "nats", value_name = "URL")]
    pub url: Option<String>,
    /// NATS credentials file (JWT and NKey seed, as `nsc` writes them)
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// Trust these root certificates (PEM) for TLS to NATS (and require TLS)
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to NATS (with --nats-tls-key)
    #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS to NATS (with --nats-tls-cert)
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Prefix of the subjects, streams and bucket on NATS [default: wavault]
    #[arg(long, value_name = "PREFIX", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub nats_prefix: Option<String>,
}

/// The fleet flags of `run`.
#[derive(Debug, Args, Clone)]
pub struct FleetArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// This host's name in the fleet [default: the machine's hostname]
    #[arg(long, value_name = "ID")]
    pub host_id: Option<String>,
    /// A bot's owner key outlives its host's last renewal by this long (the
    /// bucket's TTL, the same on every host); renewed every third of it, a
    /// host that cannot renew stops the bot after two thirds (3s to 1d) [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_period)]
    pub nats_owner_ttl: Option<Duration>,
    /// Replicas of the streams and the bucket when wavault creates them (1 to 5) [default: 1]
    #[arg(long, value_name = "N")]
    pub nats_replicas: Option<usize>,
    /// Age limit of the events stream when wavault creates it (60s to 3650d) [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub nats_max_age: Option<Duration>,
}

impl NatsArgs {
    /// Any connection option besides the URL.
    fn given(&self) -> bool {
        self.nats_creds.is_some()
            || self.nats_tls_ca.is_some()
            || self.nats_tls_cert.is_some()
            || self.nats_prefix.is_some()
    }

    /// The connection part of a fleet configuration (`None` without `--nats`).
    fn config(&self, host_id: String) -> Option<FleetConfig> {
        let url = self
            .url
            .clone()
            .or_else(|| crate::passphrase::env_text(crate::passphrase::NATS_URL_VAR))?;
        let mut c = FleetConfig::new(url, host_id);
        c.creds = self.nats_creds.clone();
        c.tls_ca = self.nats_tls_ca.clone();
        c.tls_client = self.nats_tls_cert.clone().zip(self.nats_tls_key.clone());
        if let Some(p) = &self.nats_prefix {
            c.prefix = p.clone();
        }
        Some(c)
    }
}

impl FleetArgs {
    /// The fleet of `run`, checked (`None` without `--nats`).
    pub fn plan(&self) -> Result<Option<FleetConfig>> {
        let host = self
            .host_id
            .clone()
            .unwrap_or_else(crate::fleet::default_host_id);
        let Some(mut c) = self.nats.config(host) else {
            let given = self.host_id.is_some()
                || self.nats_owner_ttl.is_some()
                || self.nats_replicas.is_some()
                || self.nats_max_age.is_some()
                || self.nats.given();
            if given {
                return Err(Error::Usage(
                    "the fleet's options (--host-id, --nats-...) need --nats URL (or $WAVAULT_NATS_URL)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        c.owner_ttl = self.nats_owner_ttl.unwrap_or(c.owner_ttl);
        c.replicas = self.nats_replicas.unwrap_or(c.replicas);
        c.events_max_age = self.nats_max_age.unwrap_or(c.events_max_age);
        c.check()?;
        for f in [&c.creds, &c.tls_ca].into_iter().flatten() {
            if !f.is_file() {
                return Err(Error::Usage(format!("{}: no such file", f.display())));
            }
        }
        Ok(Some(c))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Every bot in the fleet's owners bucket: the host that runs it, since when
    Status {
        #[command(flatten)]
        nats: NatsArgs,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

pub fn fleet(_g: &Global, cmd: FleetCommand) -> Result<()> {
    let FleetCommand::Status { nats, json } = cmd;
    let Some(cfg) = nats.config(crate::fleet::default_host_id()) else {
        return Err(Error::Usage(
            "fleet status: give the NATS server with --nats URL (or $WAVAULT_NATS_URL)".into(),
        ));
    };
    cfg.check()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let owners = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), crate::fleet::owners(&cfg))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "NATS at {} did not answer within 15s",
                    cfg.shown_url()
                ))
            })?
    })?;
    if json {
        return print_json(&owners);
    }
    use crate::table::{Align::*, Table};
    if owners.is_empty() {
        println!(
            "no bot is held by any host (bucket {})",
            cfg.owners_bucket()
        );
        return Ok(());
    }
    let mut t = Table::new(&[("BOT", Left), ("HOST", Left), ("SINCE", Left)]);
    for o in &owners {
        t.row([
            o.bot.clone(),
            o.host.clone(),
            crate::status::fmt_time(Some(o.since)),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
