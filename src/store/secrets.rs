//! `MsgSecretStore` for [`VaultBackend`]: per-message secrets keyed by
//! (chat, sender, message id).
//!
//! A batch is merged row by row against what is stored (and against earlier
//! rows of the same batch) with whatsapp-rust's own merge rules, then written
//! as one atomic batch under the bot's write lock:
//! the secret is replaced, `expires_at` goes through
//! [`merge_msg_secret_expiry`] (0 = never wins, else the later deadline) and
//! `message_ts` through [`merge_msg_secret_message_ts`] (a known time is never
//! clobbered by 0).

use super::backend::VaultBackend;
use super::kinds;
use super::rows::{self, MsgSecretRow};
use crate::codec;
use crate::vault::BatchOp;
use async_trait::async_trait;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{
    merge_msg_secret_expiry, merge_msg_secret_message_ts, MsgSecretEntry, MsgSecretStore,
};

fn name(chat: &str, sender: &str, msg_id: &str) -> Vec<u8> {
    rows::composite(&[chat.as_bytes(), sender.as_bytes(), msg_id.as_bytes()])
}

impl VaultBackend {
    fn msg_secret_row(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<MsgSecretRow>> {
        match self.get(kinds::MSG_SECRET, &name(chat, sender, msg_id))? {
            Some(b) => Ok(Some(rows::decode("message secret", &b)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl MsgSecretStore for VaultBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        if stored == 0 {
            return Ok(0);
        }
        let _g = self.lock.lock().await;
        let mut txn = self.txn();
        for e in entries {
            let n = name(&e.chat, &e.sender, &e.msg_id);
            let old: Option<MsgSecretRow> = match txn.get(kinds::MSG_SECRET, &n)? {
                Some(b) => Some(rows::decode("message secret", &b)?),
                None => None,
            };
            let row = match old {
                Some(o) => MsgSecretRow {
                    secret: e.secret.to_vec(),
                    expires_at: merge_msg_secret_expiry(o.expires_at, e.expires_at),
                    message_ts: merge_msg_secret_message_ts(o.message_ts, e.message_ts),
                },
                None => MsgSecretRow {
                    secret: e.secret.to_vec(),
                    expires_at: e.expires_at,
                    message_ts: e.message_ts,
                },
            };
            txn.put(kinds::MSG_SECRET, &n, codec::encode(&row));
        }
        txn.commit()?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.msg_secret_row(chat, sender, msg_id)?.map(|r| r.secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        Ok(self
            .msg_secret_row(chat, sender, msg_id)?
            .map(|r| (r.secret, r.message_ts)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let _g = self.lock.lock().await;
        let mut ops = Vec::new();
        for (n, data) in self.scan(kinds::MSG_SECRET)? {
            let row: MsgSecretRow = rows::decode("message secret", &data)?;
            if row.expires_at != 0 && row.expires_at <= cutoff_timestamp {
                ops.push(BatchOp::Delete {
                    kind: kinds::MSG_SECRET,
                    name: n,
                });
            }
        }
        self.apply(&ops)?;
        u32::try_from(ops.len()).map_err(|_| StoreError::Validation("too many rows".into()))
    }
}
