//! The state machine: [`ClusterState`] in memory, snapshots of it in redb.
//!
//! `apply` does not write to disk. Durability comes from the log plus the latest snapshot:
//! table `snapshot` holds the snapshot's meta (JSON) and data (the JSON of state, last applied
//! log id and membership) under two keys written in one transaction. At start-up the state is
//! restored from that snapshot and openraft re-applies the committed log after it.

// openraft's traits return its `StorageError` (~224 bytes) by value; these helpers return
// the same type so `?` carries it through unchanged. Boxing here would only add a copy.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal_types::{ClusterState, CommandResult};
use tokio::sync::watch;

use crate::log_store::{StorageError, blocking, read_err, write_err};
use crate::{RaftId, TypeConfig};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

type Membership = StoredMembership<RaftId, BasicNode>;
type Meta = SnapshotMeta<RaftId, BasicNode>;

/// What a snapshot's data holds.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    state: &'a ClusterState,
    last_applied: Option<LogId<RaftId>>,
    last_membership: &'a Membership,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    state: ClusterState,
    last_applied: Option<LogId<RaftId>>,
    last_membership: Membership,
}

pub(crate) struct StateMachine {
    db: Arc<Database>,
    /// Shared with the watch channel; `Arc::make_mut` copies it once per applied batch.
    state: Arc<ClusterState>,
    last_applied: Option<LogId<RaftId>>,
    last_membership: Membership,
    tx: watch::Sender<Arc<ClusterState>>,
}

impl StateMachine {
    /// Creates the snapshot table if missing and restores from the stored snapshot.
    pub(crate) fn open(
        db: Arc<Database>,
    ) -> Result<(Self, watch::Receiver<Arc<ClusterState>>), StorageError> {
        let subject = ErrorSubject::Snapshot(None);
        let txn = db
            .begin_write()
            .map_err(|e| write_err(subject.clone(), &e))?;
        txn.open_table(SNAPSHOT)
            .map_err(|e| write_err(subject.clone(), &e))?;
        txn.commit().map_err(|e| write_err(subject, &e))?;

        let (state, last_applied, last_membership) = match read_snapshot(&db)? {
            Some((_, data)) => {
                let snap = decode_data(&data)?;
                (snap.state, snap.last_applied, snap.last_membership)
            }
            None => (ClusterState::default(), None, Membership::default()),
        };
        let state = Arc::new(state);
        let (tx, rx) = watch::channel(state.clone());
        Ok((
            Self {
                db,
                state,
                last_applied,
                last_membership,
                tx,
            },
            rx,
        ))
    }

    pub(crate) fn has_snapshot(db: &Database) -> Result<bool, StorageError> {
        Ok(read_snapshot(db)?.is_some())
    }

    fn publish(&self) {
        self.tx.send_replace(self.state.clone());
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<RaftId>>, Membership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let version = self.state.version;
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let res = match entry.payload {
                EntryPayload::Blank => CommandResult::Ok,
                EntryPayload::Normal(cmd) => match Arc::make_mut(&mut self.state).apply(cmd) {
                    Ok(()) => CommandResult::Ok,
                    Err(e) => CommandResult::Err(e),
                },
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Ok
                }
            };
            out.push(res);
        }
        // Every successful command bumps the version, so this publishes every change (once
        // per batch: the responses are sent after this returns, so a proposer sees its write).
        if self.state.version != version {
            self.publish();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            state: self.state.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let snap = decode_data(&data)?;
        if snap.last_applied != meta.last_log_id {
            let e = std::io::Error::other(format!(
                "snapshot data is at {:?} but its meta says {:?}",
                snap.last_applied, meta.last_log_id
            ));
            return Err(read_err(ErrorSubject::Snapshot(Some(meta.signature())), &e));
        }
        let (db, meta_owned) = (self.db.clone(), meta.clone());
        blocking(move || write_snapshot(&db, &meta_owned, &data)).await?;
        self.state = Arc::new(snap.state);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        let Some((meta, data)) = blocking(move || read_snapshot(&db)).await? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// A copy of the state at one point; building serialises and stores it.
pub(crate) struct SnapshotBuilder {
    db: Arc<Database>,
    state: Arc<ClusterState>,
    last_applied: Option<LogId<RaftId>>,
    last_membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
            None => format!("0-0-{nanos}"),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let (db, state, last_membership, meta2) = (
            self.db.clone(),
            self.state.clone(),
            self.last_membership.clone(),
            meta.clone(),
        );
        let last_applied = self.last_applied;
        let data = blocking(move || {
            let snap = SnapshotRef {
                state: &state,
                last_applied,
                last_membership: &last_membership,
            };
            let data = serde_json::to_vec(&snap)
                .map_err(|e| write_err(ErrorSubject::Snapshot(None), &e))?;
            write_snapshot(&db, &meta2, &data)?;
            Ok(data)
        })
        .await?;
        tracing::debug!(snapshot = %meta, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn decode_data(data: &[u8]) -> Result<SnapshotOwned, StorageError> {
    serde_json::from_slice(data).map_err(|e| read_err(ErrorSubject::Snapshot(None), &e))
}

/// Replaces the stored snapshot (meta and data in one transaction).
fn write_snapshot(db: &Database, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    let raw_meta = serde_json::to_vec(meta).map_err(|e| write_err(subject.clone(), &e))?;
    let txn = db
        .begin_write()
        .map_err(|e| write_err(subject.clone(), &e))?;
    {
        let mut table = txn
            .open_table(SNAPSHOT)
            .map_err(|e| write_err(subject.clone(), &e))?;
        table
            .insert(KEY_META, raw_meta.as_slice())
            .map_err(|e| write_err(subject.clone(), &e))?;
        table
            .insert(KEY_DATA, data)
            .map_err(|e| write_err(subject.clone(), &e))?;
    }
    txn.commit().map_err(|e| write_err(subject, &e))
}

fn read_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
    let subject = ErrorSubject::Snapshot(None);
    let txn = db.begin_read().map_err(|e| read_err(subject.clone(), &e))?;
    let table = txn
        .open_table(SNAPSHOT)
        .map_err(|e| read_err(subject.clone(), &e))?;
    let meta = table
        .get(KEY_META)
        .map_err(|e| read_err(subject.clone(), &e))?;
    let data = table
        .get(KEY_DATA)
        .map_err(|e| read_err(subject.clone(), &e))?;
    let (Some(meta), Some(data)) = (meta, data) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(meta.value()).map_err(|e| read_err(subject, &e))?;
    Ok(Some((meta, data.value().to_vec())))
}
