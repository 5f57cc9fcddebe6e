//! `ProtocolStore` for [`VaultBackend`]: sender-key distribution status,
//! LID/phone mappings, base keys, device lists, group metadata, trusted
//! contact tokens, the sent-message store and the pending-inbound buffer.
//!
//! Semantics worth knowing:
//! - `take_sent_message` is an atomic read-and-delete (`BotView::take`).
//! - tc-token merges (`touch_tc_token_sender_timestamp`,
//!   `store_received_tc_token`) are compare-and-swap updates of the row, so
//!   they are atomic with `put_tc_token`.
//! - Expiry sweeps of sent messages and pending inbound messages use the time
//!   the row was written (kept by the vault in every record).
//! - A LID mapping keeps the `created_at` of its first write (the SQLite
//!   store's rule); `get_pn_mapping` answers the mapping with the latest
//!   `updated_at` among the LIDs currently mapped to that phone number.
//! - The sent-message store has no count cap (the in-memory store caps at
//!   4096 to bound RAM; on disk the keepalive sweep bounds it).

use super::backend::{Txn, VaultBackend};
use super::kinds;
use super::rows::{
    self, DeviceInfoRow, DeviceListRow, LidRow, PnIndexRow, SenderKeyDevicesRow, TcTokenRow,
};
use crate::codec;
use crate::vault::BatchOp;
use async_trait::async_trait;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow,
    ProtocolStore, TcTokenEntry,
};

fn tc_to_row(e: &TcTokenEntry) -> TcTokenRow {
    TcTokenRow {
        token: e.token.clone(),
        token_timestamp: e.token_timestamp,
        sender_timestamp: e.sender_timestamp,
    }
}

fn tc_from_row(r: TcTokenRow) -> TcTokenEntry {
    TcTokenEntry {
        token: r.token,
        token_timestamp: r.token_timestamp,
        sender_timestamp: r.sender_timestamp,
    }
}

fn lid_from_row(r: LidRow) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: r.lid,
        phone_number: r.phone_number,
        created_at: r.created_at,
        updated_at: r.updated_at,
        learning_source: r.learning_source,
    }
}

fn device_list_to_row(r: &DeviceListRecord) -> DeviceListRow {
    DeviceListRow {
        user: r.user.clone(),
        devices: r
            .devices
            .iter()
            .map(|d| DeviceInfoRow {
                device_id: d.device_id,
                key_index: d.key_index,
                is_hosted: d.is_hosted,
            })
            .collect(),
        timestamp: r.timestamp,
        phash: r.phash.clone(),
        raw_id: r.raw_id,
    }
}

fn device_list_from_row(r: DeviceListRow) -> DeviceListRecord {
    DeviceListRecord {
        user: r.user,
        devices: r
            .devices
            .into_iter()
            .map(|d| DeviceInfo::new(d.device_id, d.key_index).with_hosting(d.is_hosted))
            .collect(),
        timestamp: r.timestamp,
        phash: r.phash,
        raw_id: r.raw_id,
    }
}

fn sent_name(chat: &str, id: &str) -> Vec<u8> {
    rows::composite(&[chat.as_bytes(), id.as_bytes()])
}

fn base_key_name(address: &str, message_id: &str) -> Vec<u8> {
    rows::composite(&[address.as_bytes(), message_id.as_bytes()])
}

fn count(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Validation("too many rows".into()))
}

impl VaultBackend {
    fn tc_get(&self, jid: &str) -> Result<Option<TcTokenRow>> {
        match self.get(kinds::TC_TOKEN, jid.as_bytes())? {
            Some(b) => Ok(Some(rows::decode("tc token", &b)?)),
            None => Ok(None),
        }
    }

    /// A compare-and-swap update of one tc-token row. `f` gets the current
    /// row (if any) and returns the new one (`None` leaves it as it is).
    async fn tc_update(
        &self,
        jid: &str,
        mut f: impl FnMut(Option<TcTokenRow>) -> Option<TcTokenRow>,
    ) -> Result<()> {
        let _g = self.lock.lock().await;
        let mut bad = None;
        self.view
            .update(kinds::TC_TOKEN, jid.as_bytes(), |old| {
                bad = None;
                let current = match old.map(codec::decode::<TcTokenRow>) {
                    None => None,
                    Some(Ok(r)) => Some(r),
                    Some(Err(e)) => {
                        bad = Some(e.to_string());
                        return Some(old?.to_vec());
                    }
                };
                match f(current) {
                    Some(new) => Some(codec::encode(&new)),
                    None => old.map(<[u8]>::to_vec),
                }
            })
            .map_err(super::backend::store_err)?;
        match bad {
            Some(e) => Err(rows::malformed("tc token", e)),
            None => Ok(()),
        }
    }

    fn lid_get(txn: &Txn<'_>, lid: &str) -> Result<Option<LidRow>> {
        match txn.get(kinds::LID_MAPPING, lid.as_bytes())? {
            Some(b) => Ok(Some(rows::decode("LID mapping", &b)?)),
            None => Ok(None),
        }
    }

    fn pn_index_get(txn: &Txn<'_>, phone: &str) -> Result<PnIndexRow> {
        match txn.get(kinds::PN_INDEX, phone.as_bytes())? {
            Some(b) => rows::decode("phone index", &b),
            None => Ok(PnIndexRow::default()),
        }
    }

    fn pn_index_put(txn: &mut Txn<'_>, phone: &str, row: &PnIndexRow) {
        if row.lids.is_empty() {
            txn.delete(kinds::PN_INDEX, phone.as_bytes());
        } else {
            txn.put(kinds::PN_INDEX, phone.as_bytes(), codec::encode(row));
        }
    }

    /// Stages one LID mapping write and its phone-index updates.
    fn stage_lid_mapping(txn: &mut Txn<'_>, entry: &LidPnMappingEntry) -> Result<()> {
        let old = Self::lid_get(txn, &entry.lid)?;
        let created_at = old.as_ref().map_or(entry.created_at, |o| o.created_at);
        if let Some(old) = &old {
            if old.phone_number != entry.phone_number {
                let mut idx = Self::pn_index_get(txn, &old.phone_number)?;
                idx.lids.retain(|l| l != &entry.lid);
                Self::pn_index_put(txn, &old.phone_number, &idx);
            }
        }
        let mut idx = Self::pn_index_get(txn, &entry.phone_number)?;
        idx.lids.retain(|l| l != &entry.lid);
        idx.lids.push(entry.lid.clone());
        Self::pn_index_put(txn, &entry.phone_number, &idx);
        let row = LidRow {
            lid: entry.lid.clone(),
            phone_number: entry.phone_number.clone(),
            created_at,
            updated_at: entry.updated_at,
            learning_source: entry.learning_source.clone(),
        };
        txn.put(
            kinds::LID_MAPPING,
            entry.lid.as_bytes(),
            codec::encode(&row),
        );
        Ok(())
    }

    fn sender_key_devices(&self, group: &str) -> Result<SenderKeyDevicesRow> {
        match self.get(kinds::SENDER_KEY_DEVICES, group.as_bytes())? {
            Some(b) => rows::decode("sender-key device status", &b),
            None => Ok(SenderKeyDevicesRow::default()),
        }
    }
}

#[async_trait]
impl ProtocolStore for VaultBackend {
    // --- sender-key distribution status ---

    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self.sender_key_devices(group_jid)?.devices)
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let _g = self.lock.lock().await;
        let mut row = self.sender_key_devices(group_jid)?;
        for (device, has_key) in entries {
            match row
                .devices
                .binary_search_by(|(d, _)| d.as_str().cmp(device))
            {
                Ok(i) => row.devices[i].1 = *has_key,
                Err(i) => row.devices.insert(i, (device.to_string(), *has_key)),
            }
        }
        self.put(
            kinds::SENDER_KEY_DEVICES,
            group_jid.as_bytes(),
            &codec::encode(&row),
        )
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        self.delete(kinds::SENDER_KEY_DEVICES, group_jid.as_bytes())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let _g = self.lock.lock().await;
        let mut ops = Vec::new();
        for (group, data) in self.scan(kinds::SENDER_KEY_DEVICES)? {
            let mut row: SenderKeyDevicesRow = rows::decode("sender-key device status", &data)?;
            let before = row.devices.len();
            row.devices
                .retain(|(d, _)| !device_jids.contains(&d.as_str()));
            if row.devices.len() != before {
                ops.push(BatchOp::Put {
                    kind: kinds::SENDER_KEY_DEVICES,
                    name: group,
                    data: codec::encode(&row),
                });
            }
        }
        self.apply(&ops)
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        self.view
            .clear(&[kinds::SENDER_KEY_DEVICES])
            .map_err(super::backend::store_err)?;
        Ok(())
    }

    // --- LID / phone mappings ---

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        Ok(Self::lid_get(&self.txn(), lid)?.map(lid_from_row))
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let txn = self.txn();
        let mut best: Option<LidRow> = None;
        for lid in Self::pn_index_get(&txn, phone)?.lids {
            let Some(row) = Self::lid_get(&txn, &lid)? else {
                continue;
            };
            // Later index entries are later writes: they win ties.
            if row.phone_number == phone
                && best.as_ref().is_none_or(|b| row.updated_at >= b.updated_at)
            {
                best = Some(row);
            }
        }
        Ok(best.map(lid_from_row))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _g = self.lock.lock().await;
        let mut txn = self.txn();
        for e in entries {
            Self::stage_lid_mapping(&mut txn, e)?;
        }
        txn.commit()
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.scan(kinds::LID_MAPPING)?
            .into_iter()
            .map(|(_, data)| Ok(lid_from_row(rows::decode("LID mapping", &data)?)))
            .collect()
    }

    // --- base keys ---

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put(
            kinds::BASE_KEY,
            &base_key_name(address, message_id),
            base_key,
        )
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get(kinds::BASE_KEY, &base_key_name(address, message_id))?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.delete(kinds::BASE_KEY, &base_key_name(address, message_id))
    }

    // --- device registry ---

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let ops: Vec<BatchOp> = records
            .iter()
            .map(|r| BatchOp::Put {
                kind: kinds::DEVICE_LIST,
                name: r.user.as_bytes().to_vec(),
                data: codec::encode(&device_list_to_row(r)),
            })
            .collect();
        self.apply(&ops)
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        match self.get(kinds::DEVICE_LIST, user.as_bytes())? {
            Some(b) => Ok(Some(device_list_from_row(rows::decode("device list", &b)?))),
            None => Ok(None),
        }
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete(kinds::DEVICE_LIST, user.as_bytes())
    }

    // --- group metadata ---

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get(kinds::GROUP_METADATA, group_jid.as_bytes())
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(kinds::GROUP_METADATA, group_jid.as_bytes(), blob)
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete(kinds::GROUP_METADATA, group_jid.as_bytes())
    }

    // --- tc tokens ---

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        Ok(self.tc_get(jid)?.map(tc_from_row))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let _g = self.lock.lock().await;
        self.put(
            kinds::TC_TOKEN,
            jid.as_bytes(),
            &codec::encode(&tc_to_row(entry)),
        )
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        self.delete(kinds::TC_TOKEN, jid.as_bytes())
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.scan(kinds::TC_TOKEN)?
            .into_iter()
            .map(|(name, _)| {
                String::from_utf8(name).map_err(|e| rows::malformed("tc token name", e))
            })
            .collect()
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let _g = self.lock.lock().await;
        let mut ops = Vec::new();
        for (name, data) in self.scan(kinds::TC_TOKEN)? {
            let e: TcTokenRow = rows::decode("tc token", &data)?;
            let token_live = !e.token.is_empty() && e.token_timestamp >= token_cutoff;
            let sender_live = e.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
            if !(token_live || sender_live) {
                ops.push(BatchOp::Delete {
                    kind: kinds::TC_TOKEN,
                    name,
                });
            }
        }
        self.apply(&ops)?;
        count(ops.len())
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        self.tc_update(jid, |current| {
            Some(match current {
                Some(mut e) => {
                    e.sender_timestamp = Some(
                        e.sender_timestamp
                            .map_or(sender_timestamp, |s| s.max(sender_timestamp)),
                    );
                    e
                }
                None => TcTokenRow {
                    token: Vec::new(),
                    token_timestamp: sender_timestamp,
                    sender_timestamp: Some(sender_timestamp),
                },
            })
        })
        .await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        self.tc_update(jid, |current| match current {
            // Newer wins; a byte-less placeholder never blocks a real token.
            Some(e) if !e.token.is_empty() && token_timestamp < e.token_timestamp => None,
            Some(e) => Some(TcTokenRow {
                token: token.to_vec(),
                token_timestamp,
                sender_timestamp: e.sender_timestamp,
            }),
            None => Some(TcTokenRow {
                token: token.to_vec(),
                token_timestamp,
                sender_timestamp: None,
            }),
        })
        .await
    }

    // --- sent messages ---

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let _g = self.lock.lock().await;
        self.put(
            kinds::SENT_MESSAGE,
            &sent_name(chat_jid, message_id),
            payload,
        )
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        self.view
            .take(kinds::SENT_MESSAGE, &sent_name(chat_jid, message_id))
            .map_err(super::backend::store_err)
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep_written_before(kinds::SENT_MESSAGE, cutoff_timestamp)
            .await
    }

    // --- pending inbound buffer ---

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.pending_store(&[PendingInboundRow {
            chat,
            sender,
            id,
            message,
        }])
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.pending_get(chat, sender, id)
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.pending_delete(&[PendingInboundKey { chat, sender, id }])
            .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep_written_before(kinds::PENDING_INBOUND, cutoff_timestamp)
            .await
    }

    async fn store_pending_inbound_batch(&self, rows_in: &[PendingInboundRow<'_>]) -> Result<()> {
        self.pending_store(rows_in).await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.pending_delete(keys).await
    }
}
