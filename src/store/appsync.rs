//! `AppSyncStore` for [`VaultBackend`]: app-state sync keys, collection
//! versions and mutation MACs.
//!
//! A sync key and the "latest key" pointer are written in one batch. Mutation
//! MACs are named by (collection, index MAC); clearing a collection scans the
//! kind, which only happens on a snapshot re-sync.

use super::backend::VaultBackend;
use super::kinds;
use super::rows::{self, HashStateRow, SyncKeyRow};
use crate::codec;
use crate::vault::BatchOp;
use async_trait::async_trait;
use std::collections::HashMap;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::Result;
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};

/// Name of the single "latest sync key" record.
const LATEST: &[u8] = b"latest";

fn mac_name(collection: &str, index_mac: &[u8]) -> Vec<u8> {
    rows::composite(&[collection.as_bytes(), index_mac])
}

fn to_row(state: &HashState) -> HashStateRow {
    let mut map: Vec<(String, Vec<u8>)> = state
        .index_value_map
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    map.sort();
    HashStateRow {
        version: state.version,
        hash: state.hash.to_vec(),
        index_value_map: map,
        mac_mismatch_fatal: state.mac_mismatch_fatal,
    }
}

fn from_row(row: HashStateRow) -> Result<HashState> {
    let hash: [u8; 128] = row
        .hash
        .as_slice()
        .try_into()
        .map_err(|_| rows::malformed("app-state hash", format!("{} bytes", row.hash.len())))?;
    Ok(HashState {
        version: row.version,
        hash,
        index_value_map: row.index_value_map.into_iter().collect(),
        mac_mismatch_fatal: row.mac_mismatch_fatal,
    })
}

#[async_trait]
impl AppSyncStore for VaultBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        match self.get(kinds::SYNC_KEY, key_id)? {
            Some(b) => {
                let row: SyncKeyRow = rows::decode("sync key", &b)?;
                Ok(Some(AppStateSyncKey {
                    key_data: row.key_data,
                    fingerprint: row.fingerprint,
                    timestamp: row.timestamp,
                }))
            }
            None => Ok(None),
        }
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let row = SyncKeyRow {
            key_data: key.key_data,
            fingerprint: key.fingerprint,
            timestamp: key.timestamp,
        };
        self.apply(&[
            BatchOp::Put {
                kind: kinds::SYNC_KEY,
                name: key_id.to_vec(),
                data: codec::encode(&row),
            },
            BatchOp::Put {
                kind: kinds::SYNC_KEY_LATEST,
                name: LATEST.to_vec(),
                data: key_id.to_vec(),
            },
        ])
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        match self.get(kinds::APP_STATE_VERSION, name.as_bytes())? {
            Some(b) => from_row(rows::decode("app-state version", &b)?),
            None => Ok(HashState::default()),
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put(
            kinds::APP_STATE_VERSION,
            name.as_bytes(),
            &codec::encode(&to_row(&state)),
        )
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let ops: Vec<BatchOp> = mutations
            .iter()
            .map(|m| BatchOp::Put {
                kind: kinds::MUTATION_MAC,
                name: mac_name(name, &m.index_mac),
                data: m.value_mac.clone(),
            })
            .collect();
        let _g = self.lock.lock().await;
        self.apply(&ops)
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(kinds::MUTATION_MAC, &mac_name(name, index_mac))
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let mut out = HashMap::with_capacity(index_macs.len());
        for im in index_macs {
            if let Some(v) = self.get(kinds::MUTATION_MAC, &mac_name(name, im))? {
                out.insert(*im, v);
            }
        }
        Ok(out)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let ops: Vec<BatchOp> = index_macs
            .iter()
            .map(|im| BatchOp::Delete {
                kind: kinds::MUTATION_MAC,
                name: mac_name(name, im),
            })
            .collect();
        let _g = self.lock.lock().await;
        self.apply(&ops)
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let mut ops = Vec::new();
        for (rec, _) in self.scan(kinds::MUTATION_MAC)? {
            let parts = rows::parse_composite(&rec)?;
            if parts.first().map(Vec::as_slice) == Some(name.as_bytes()) {
                ops.push(BatchOp::Delete {
                    kind: kinds::MUTATION_MAC,
                    name: rec,
                });
            }
        }
        self.apply(&ops)
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.get(kinds::SYNC_KEY_LATEST, LATEST)
    }
}
