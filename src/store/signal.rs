//! `SignalStore` for [`VaultBackend`]: identities, sessions, pre-keys, signed
//! pre-keys, sender keys and the pending-inbound buffer.
//!
//! Every write that gates ciphertext on the wire or an acknowledgement to the
//! server (sessions, sender keys, identities, pre-keys, the pending-inbound
//! buffer) waits for [`VaultBackend::durable`] before returning `Ok`. Batches
//! are one `BotView::apply`: all rows or none.

use super::backend::VaultBackend;
use super::kinds;
use super::rows::{self, PreKeyRow};
use crate::codec;
use crate::vault::BatchOp;
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::Arc;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{PendingInboundKey, PendingInboundRow, SignalStore};
use whatsapp_rust::bytes::Bytes;

/// Every `user` for which `address` counts as Signal state in
/// `has_signal_state_for_user`: each prefix that ends right before an `@` or
/// a `:` (addresses look like `user@server.0` or `user:dev@server.0`).
fn users_of(address: &str) -> impl Iterator<Item = &str> {
    address
        .char_indices()
        .filter(|&(i, c)| (c == '@' || c == ':') && i > 0)
        .map(move |(i, _)| &address[..i])
}

impl VaultBackend {
    /// Puts for the user markers of `addresses` not yet stored.
    fn user_marker_ops<'a>(
        &self,
        addresses: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<BatchOp>> {
        let mut users = BTreeSet::new();
        for a in addresses {
            users.extend(users_of(a));
        }
        let mut ops = Vec::new();
        for u in users {
            if self.get(kinds::SIGNAL_USER, u.as_bytes())?.is_none() {
                ops.push(BatchOp::Put {
                    kind: kinds::SIGNAL_USER,
                    name: u.as_bytes().to_vec(),
                    data: Vec::new(),
                });
            }
        }
        Ok(ops)
    }

    /// Puts records named by Signal address (sessions, identities) with
    /// their user markers, in one atomic batch, durably.
    async fn put_addressed(&self, kind: crate::vault::Kind, items: &[(&str, &[u8])]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut ops = self.user_marker_ops(items.iter().map(|(a, _)| *a))?;
        ops.extend(items.iter().map(|(a, data)| BatchOp::Put {
            kind,
            name: a.as_bytes().to_vec(),
            data: data.to_vec(),
        }));
        self.apply(&ops)?;
        self.durable().await
    }

    fn pending_name(chat: &str, sender: &str, id: &str) -> Vec<u8> {
        rows::composite(&[chat.as_bytes(), sender.as_bytes(), id.as_bytes()])
    }
}

#[async_trait]
impl SignalStore for VaultBackend {
    // --- identities ---

    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_addressed(kinds::IDENTITY, &[(address, &key[..])])
            .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let items: Vec<(&str, &[u8])> = identities
            .iter()
            .map(|(a, k)| (a.as_ref(), &k[..]))
            .collect();
        self.put_addressed(kinds::IDENTITY, &items).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get(kinds::IDENTITY, address.as_bytes())? {
            Some(b) => Ok(Some(b.as_slice().try_into().map_err(|_| {
                rows::malformed("identity key", format!("{} bytes", b.len()))
            })?)),
            None => Ok(None),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete(kinds::IDENTITY, address.as_bytes())?;
        self.durable().await
    }

    // --- sessions ---

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get(kinds::SESSION, address.as_bytes())?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_addressed(kinds::SESSION, &[(address, session)])
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let items: Vec<(&str, &[u8])> = sessions
            .iter()
            .map(|(a, s)| (a.as_ref(), s.as_ref()))
            .collect();
        self.put_addressed(kinds::SESSION, &items).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete(kinds::SESSION, address.as_bytes())?;
        self.durable().await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        Ok(self.get(kinds::SESSION, address.as_bytes())?.is_some())
    }

    /// Answered from markers written with every session and identity. A
    /// marker outlives the state it stands for, so after every session and
    /// identity of a user is deleted this may still say `true`: the safe
    /// direction (the caller then scans, as with the trait's default).
    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        Ok(self.get(kinds::SIGNAL_USER, user.as_bytes())?.is_some())
    }

    // --- pre-keys ---

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        let row = PreKeyRow {
            record: record.to_vec(),
            uploaded,
        };
        self.put(kinds::PREKEY, &rows::id_name(id), &codec::encode(&row))?;
        self.durable().await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let ops: Vec<BatchOp> = keys
            .iter()
            .map(|(id, record)| BatchOp::Put {
                kind: kinds::PREKEY,
                name: rows::id_name(*id).to_vec(),
                data: codec::encode(&PreKeyRow {
                    record: record.to_vec(),
                    uploaded,
                }),
            })
            .collect();
        self.apply(&ops)?;
        self.durable().await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        match self.get(kinds::PREKEY, &rows::id_name(id))? {
            Some(b) => {
                let row: PreKeyRow = rows::decode("pre-key", &b)?;
                Ok(Some(Bytes::from(row.record)))
            }
            None => Ok(None),
        }
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(record) = self.load_prekey(id).await? {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// A compare-and-swap per id that never inserts: a pre-key removed
    /// meanwhile stays removed.
    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            let mut bad = None;
            self.view
                .update(kinds::PREKEY, &rows::id_name(id), |old| {
                    bad = None;
                    let old = old?;
                    match codec::decode::<PreKeyRow>(old) {
                        Ok(mut row) if !row.uploaded => {
                            row.uploaded = true;
                            Some(codec::encode(&row))
                        }
                        Ok(_) => Some(old.to_vec()),
                        Err(e) => {
                            bad = Some(e.to_string());
                            Some(old.to_vec())
                        }
                    }
                })
                .map_err(super::backend::store_err)?;
            if let Some(e) = bad {
                return Err(rows::malformed("pre-key", e));
            }
        }
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.delete(kinds::PREKEY, &rows::id_name(id))?;
        self.durable().await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let mut max = 0;
        for (name, _) in self.scan(kinds::PREKEY)? {
            max = max.max(rows::parse_id(&name)?);
        }
        Ok(max)
    }

    // --- signed pre-keys ---

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put(kinds::SIGNED_PREKEY, &rows::id_name(id), record)?;
        self.durable().await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get(kinds::SIGNED_PREKEY, &rows::id_name(id))
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut out = self
            .scan(kinds::SIGNED_PREKEY)?
            .into_iter()
            .map(|(name, data)| Ok((rows::parse_id(&name)?, data)))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete(kinds::SIGNED_PREKEY, &rows::id_name(id))?;
        self.durable().await
    }

    // --- sender keys ---

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(kinds::SENDER_KEY, address.as_bytes(), record)?;
        self.durable().await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        if sender_keys.is_empty() {
            return Ok(());
        }
        let ops: Vec<BatchOp> = sender_keys
            .iter()
            .map(|(a, r)| BatchOp::Put {
                kind: kinds::SENDER_KEY,
                name: a.as_bytes().to_vec(),
                data: r.to_vec(),
            })
            .collect();
        self.apply(&ops)?;
        self.durable().await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get(kinds::SENDER_KEY, address.as_bytes())
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete(kinds::SENDER_KEY, address.as_bytes())?;
        self.durable().await
    }
}

/// The pending-inbound buffer lives in `ProtocolStore` in the trait; its
/// implementation is here beside the other durable inbound state.
impl VaultBackend {
    pub(crate) async fn pending_store(&self, rows_in: &[PendingInboundRow<'_>]) -> Result<()> {
        if rows_in.is_empty() {
            return Ok(());
        }
        let ops: Vec<BatchOp> = rows_in
            .iter()
            .map(|r| BatchOp::Put {
                kind: kinds::PENDING_INBOUND,
                name: Self::pending_name(r.chat, r.sender, r.id),
                data: r.message.to_vec(),
            })
            .collect();
        {
            // Excludes the expiry sweep between its scan and its delete.
            let _g = self.lock.lock().await;
            self.apply(&ops)?;
        }
        self.durable().await
    }

    pub(crate) fn pending_get(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.get(
            kinds::PENDING_INBOUND,
            &Self::pending_name(chat, sender, id),
        )
    }

    pub(crate) async fn pending_delete(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        let ops: Vec<BatchOp> = keys
            .iter()
            .map(|k| BatchOp::Delete {
                kind: kinds::PENDING_INBOUND,
                name: Self::pending_name(k.chat, k.sender, k.id),
            })
            .collect();
        let _g = self.lock.lock().await;
        self.apply(&ops)
    }

    /// Deletes rows of `kind` first written before `cutoff` (unix seconds).
    pub(crate) async fn sweep_written_before(
        &self,
        kind: crate::vault::Kind,
        cutoff: i64,
    ) -> Result<u32> {
        let _g = self.lock.lock().await;
        let ops: Vec<BatchOp> = self
            .view
            .scan_records(kind)
            .map_err(super::backend::store_err)?
            .into_iter()
            .filter(|r| r.written_at < cutoff)
            .map(|r| BatchOp::Delete { kind, name: r.name })
            .collect();
        self.apply(&ops)?;
        u32::try_from(ops.len()).map_err(|_| StoreError::Validation("too many rows".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::users_of;

    #[test]
    fn users_of_addresses() {
        let u: Vec<_> = users_of("15550001:3@s.whatsapp.net.0").collect();
        assert_eq!(u, ["15550001", "15550001:3"]);
        let u: Vec<_> = users_of("100000012345678@lid.0").collect();
        assert_eq!(u, ["100000012345678"]);
        assert_eq!(users_of("bob.1").count(), 0);
    }
}
