//! `wavault validate`: opens every record and checks its binding.
//!
//! A record is sound when its envelope parses, its term is known, it opens
//! under the associated data of the key it is stored under (so a value moved
//! to another key, bot or vault fails), its contents decode, and its real
//! name blinds to the key it is stored under. Records whose bot tag matches
//! no bot are orphans. Every problem is listed; nothing is changed.

use super::crypto::BLIND_LEN;
use super::db::TreeId;
use super::view::{Kind, KEY_LEN};
use super::{hex, BotConfig, Vault};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One problem found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// `bots` or `records`.
    pub tree: String,
    /// The sled key, hex.
    pub key: String,
    /// The bot the record belongs to, when known.
    pub bot: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Per-bot summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BotSummary {
    pub bot: String,
    pub enabled: bool,
    /// Readable records.
    pub records: usize,
    /// Unreadable records.
    pub damaged: usize,
    /// Record counts by kind name.
    pub kinds: BTreeMap<String, usize>,
    /// Credential state (paired, unpaired, incomplete), filled by the store layer.
    pub credentials: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub vault_id: String,
    pub slots: usize,
    pub active_term: u32,
    pub retiring_terms: Vec<u32>,
    pub bots: Vec<BotSummary>,
    pub records: usize,
    pub orphans: usize,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A human name for a record kind: the vault's own, else what `names`
/// (the layer that owns the kind) says, else `kind_XX`.
pub fn kind_name(kind: Kind, names: Names<'_>) -> String {
    match kind {
        Kind::SESSION_META => "session_meta".into(),
        Kind::SESSION_HISTORY => "session_history".into(),
        Kind::INBOUND => "inbound_queue".into(),
        Kind::TRAFFIC => "traffic".into(),
        Kind::IDEMPOTENCY => "idempotency_key".into(),
        Kind::WEBHOOK_SECRET => "webhook_secret".into(),
        Kind::MEDIA => "media".into(),
        Kind::TEST => "test".into(),
        other => names(other).map_or_else(|| format!("kind_{:02x}", other.0), str::to_owned),
    }
}

/// Names the kinds the vault does not own (the store layer's).
pub type Names<'a> = &'a dyn Fn(Kind) -> Option<&'static str>;

/// Says what a bot's records make of its credentials (the store layer).
pub type Credentials<'a> = &'a dyn Fn(&super::BotView) -> Option<String>;

impl Vault {
    /// Checks every slot, term and record. Never writes. Kinds the vault
    /// does not own are named `kind_XX` and credentials left unknown:
    /// `crate::store::validate` names them.
    pub fn validate(&self) -> Result<Report> {
        self.validate_with(&|_| None, &|_| None)
    }

    /// [`Vault::validate`], naming other layers' kinds with `names` and
    /// each bot's credentials with `credentials`.
    pub fn validate_with(&self, names: Names<'_>, credentials: Credentials<'_>) -> Result<Report> {
        let h = self.header().clone();
        let mut problems = Vec::new();
        let mut bots: HashMap<Vec<u8>, (BotConfig, BotSummary)> = HashMap::new();
        let mut bot_entries = Vec::new();
        self.db().for_each(TreeId::Bots, |k, v| {
            bot_entries.push((k.to_vec(), v.to_vec()))
        })?;
        for (k, v) in bot_entries {
            match self.decode_bot(&k, &v) {
                Ok(cfg) => {
                    let summary = BotSummary {
                        bot: cfg.id.to_string(),
                        enabled: cfg.enabled,
                        records: 0,
                        damaged: 0,
                        kinds: BTreeMap::new(),
                        credentials: None,
                    };
                    bots.insert(k, (cfg, summary));
                }
                Err(e) => problems.push(Problem {
                    tree: "bots".into(),
                    key: hex(&k),
                    bot: None,
                    reason: e.to_string(),
                }),
            }
        }
        let (mut records, mut orphans) = (0usize, 0usize);
        let mut entries = Vec::new();
        self.db().for_each(TreeId::Records, |k, v| {
            entries.push((k.to_vec(), v.to_vec()))
        })?;
        for (k, v) in entries {
            records += 1;
            let owner = bots.get_mut(&k[..BLIND_LEN.min(k.len())]);
            let bot_name = owner.as_ref().map(|(c, _)| c.id.to_string());
            let reason = self.check_record(&k, &v, owner.as_ref().map(|(c, _)| c));
            match (owner, reason) {
                (Some((_, s)), None) => {
                    s.records += 1;
                    *s.kinds
                        .entry(kind_name(Kind(k[BLIND_LEN]), names))
                        .or_insert(0) += 1;
                }
                (owner, reason) => {
                    if let Some((_, s)) = owner {
                        s.damaged += 1;
                    } else {
                        orphans += 1;
                    }
                    problems.push(Problem {
                        tree: "records".into(),
                        key: hex(&k),
                        bot: bot_name,
                        reason: reason.unwrap_or_else(|| {
                            "orphan record: no bot owns it (run `wavault sweep` to remove orphans)".into()
                        }),
                    });
                }
            }
        }
        let mut summaries: Vec<BotSummary> = bots
            .into_values()
            .map(|(cfg, mut s)| {
                s.credentials = credentials(&self.view(&cfg.id));
                s
            })
            .collect();
        summaries.sort_by(|a, b| a.bot.cmp(&b.bot));
        let retiring: Vec<u32> = self
            .terms()
            .into_iter()
            .filter(|t| t.1)
            .map(|t| t.0)
            .collect();
        let mut warnings = Vec::new();
        if !retiring.is_empty() {
            warnings.push(format!(
                "a data-key rotation was interrupted (terms {retiring:?} still retiring); run `wavault rotate key` again to finish it"
            ));
        }
        Ok(Report {
            vault_id: hex(&h.vault_id),
            slots: h.slots.len(),
            active_term: self.active_term(),
            retiring_terms: retiring,
            bots: summaries,
            records,
            orphans,
            problems,
            warnings,
        })
    }

    /// Why a record is unsound, or `None` when it is sound.
    fn check_record(&self, key: &[u8], stored: &[u8], owner: Option<&BotConfig>) -> Option<String> {
        if key.len() != KEY_LEN {
            return Some(format!("key has {} bytes, expected {KEY_LEN}", key.len()));
        }
        let body = match self.open_value(TreeId::Records, key, stored) {
            Ok(b) => b,
            Err(e) => return Some(e.to_string()),
        };
        let cfg = owner?;
        let expected = self.view(&cfg.id).key(Kind(key[BLIND_LEN]), &body.name);
        (expected != key).then(|| "record name does not match the key it is stored under".into())
    }
}
