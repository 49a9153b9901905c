//! The Raft log and vote, on disk in redb.
//!
//! Why our own: no maintained redb log store exists for openraft 0.9, and the maintained ones
//! use rocksdb (a ~15 minute build here) or sled (its stable line is unmaintained). The log is a
//! small part of openraft's contract, so it lives here in about 300 lines.
//!
//! Layout in `raft.redb`: table `raft_log` maps the log index to the JSON of the openraft
//! entry; table `raft_meta` holds the vote, the committed log id and the last purged log id,
//! each as JSON under its own key. Every write is one redb transaction, so a crash leaves
//! either the old or the new log, never a hole.
//!
//! redb is synchronous: each call runs on tokio's blocking pool, and awaiting it serialises
//! the log's IO as openraft requires (its core never issues two log writes at once).

// openraft's traits return its `StorageError` (~224 bytes) by value; these helpers return
// the same type so `?` carries it through unchanged. Boxing here would only add a copy.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, StorageIOError, Vote,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{RaftId, TypeConfig};

pub(crate) type StorageError = openraft::StorageError<RaftId>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// The log store. Cloning shares the database; the clone handed out as the log reader sees
/// every committed write (redb gives each read transaction a consistent view).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Creates the tables if they are missing.
    pub(crate) fn new(db: Arc<Database>) -> Result<Self, StorageError> {
        let txn = db
            .begin_write()
            .map_err(|e| write_err(ErrorSubject::Store, &e))?;
        txn.open_table(LOG)
            .map_err(|e| write_err(ErrorSubject::Store, &e))?;
        txn.open_table(META)
            .map_err(|e| write_err(ErrorSubject::Store, &e))?;
        txn.commit()
            .map_err(|e| write_err(ErrorSubject::Store, &e))?;
        Ok(Self { db })
    }

    /// Whether a vote or any log entry (or a purge, which implies a snapshot) is on disk.
    pub(crate) fn has_state(&self) -> Result<bool, StorageError> {
        let vote: Option<Vote<RaftId>> = self.read_meta(KEY_VOTE, ErrorSubject::Vote)?;
        let purged: Option<LogId<RaftId>> = self.read_meta(KEY_PURGED, ErrorSubject::Logs)?;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let any_entry = !table
            .is_empty()
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        Ok(vote.is_some() || purged.is_some() || any_entry)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &str,
        subject: ErrorSubject<RaftId>,
    ) -> Result<Option<T>, StorageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| read_err(subject.clone(), &e))?;
        let table = txn
            .open_table(META)
            .map_err(|e| read_err(subject.clone(), &e))?;
        let Some(raw) = table.get(key).map_err(|e| read_err(subject.clone(), &e))? else {
            return Ok(None);
        };
        serde_json::from_slice(raw.value())
            .map(Some)
            .map_err(|e| read_err(subject, &e))
    }

    fn read_log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<RaftId>> =
            self.read_meta(KEY_PURGED, ErrorSubject::Logs)?;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let last = match table.last().map_err(|e| read_err(ErrorSubject::Logs, &e))? {
            Some((_, raw)) => Some(decode_entry(raw.value())?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    fn read_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let range = table
            .range::<u64>((start, end))
            .map_err(|e| read_err(ErrorSubject::Logs, &e))?;
        let mut out = Vec::new();
        for item in range {
            let (index, raw) = item.map_err(|e| read_err(ErrorSubject::Logs, &e))?;
            let entry = decode_entry(raw.value())?;
            if entry.log_id.index != index.value() {
                return Err(read_err(
                    ErrorSubject::LogIndex(index.value()),
                    &io::Error::other(format!(
                        "entry stored at index {} claims index {}",
                        index.value(),
                        entry.log_id.index
                    )),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Writes one meta key in its own transaction.
    fn write_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<RaftId>,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let raw = serde_json::to_vec(value).map_err(|e| write_err(subject.clone(), &e))?;
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| write_err(subject.clone(), &e))?;
        txn.set_durability(durability)
            .map_err(|e| write_err(subject.clone(), &e))?;
        {
            let mut table = txn
                .open_table(META)
                .map_err(|e| write_err(subject.clone(), &e))?;
            table
                .insert(key, raw.as_slice())
                .map_err(|e| write_err(subject.clone(), &e))?;
        }
        txn.commit().map_err(|e| write_err(subject, &e))
    }

    fn write_entries(&self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StorageError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
        {
            let mut table = txn
                .open_table(LOG)
                .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
            put_entries(&mut table, &entries)?;
        }
        // Default durability (Immediate): fsynced when commit returns.
        txn.commit().map_err(|e| write_err(ErrorSubject::Logs, &e))
    }

    /// `init --force-new-cluster`, with openraft stopped: keeps every entry and makes this
    /// node the only voter, as if it had been elected alone in a new term and had appended
    /// a membership of itself (then `commands`). Started again, openraft finds a committed
    /// vote for this node and a membership where it alone votes, so it leads at once and
    /// commits the log it kept. Returns the new membership entry's id.
    pub(crate) fn force_single_voter(
        &self,
        id: RaftId,
        addr: String,
        commands: Vec<shoal_types::Command>,
    ) -> Result<Option<LogId<RaftId>>, StorageError> {
        let vote: Option<Vote<RaftId>> = self.read_meta(KEY_VOTE, ErrorSubject::Vote)?;
        let Some(last) = self.read_log_state()?.last_log_id else {
            return Ok(None);
        };
        let term = vote
            .map_or(0, |v| v.leader_id().term)
            .max(last.leader_id.term)
            + 1;
        let leader = openraft::CommittedLeaderId::new(term, id);
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([id])],
            std::collections::BTreeMap::from([(id, openraft::BasicNode { addr })]),
        );
        let at = last.index + 1;
        let mut entries = vec![Entry::<TypeConfig> {
            log_id: LogId::new(leader, at),
            payload: openraft::EntryPayload::Membership(membership),
        }];
        for (i, cmd) in commands.into_iter().enumerate() {
            entries.push(Entry {
                log_id: LogId::new(leader, at + 1 + i as u64),
                payload: openraft::EntryPayload::Normal(cmd),
            });
        }
        let vote = Vote::new_committed(term, id);
        let raw_vote = serde_json::to_vec(&vote).map_err(|e| write_err(ErrorSubject::Vote, &e))?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
        {
            let mut table = txn
                .open_table(LOG)
                .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
            put_entries(&mut table, &entries)?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| write_err(ErrorSubject::Vote, &e))?;
            meta.insert(KEY_VOTE, raw_vote.as_slice())
                .map_err(|e| write_err(ErrorSubject::Vote, &e))?;
        }
        // One transaction: a crash leaves the old group or the new one, never half.
        txn.commit()
            .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
        Ok(Some(entries[0].log_id))
    }

    /// Deletes entries in `range`; when `purged` is set, records it in the same transaction.
    fn delete_range(
        &self,
        range: impl RangeBounds<u64>,
        purged: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
        {
            if let Some(purged) = purged {
                let raw =
                    serde_json::to_vec(&purged).map_err(|e| write_err(ErrorSubject::Logs, &e))?;
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
                meta.insert(KEY_PURGED, raw.as_slice())
                    .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
            }
            let mut table = txn
                .open_table(LOG)
                .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
            table
                .retain_in::<u64, _>(range, |_, _| false)
                .map_err(|e| write_err(ErrorSubject::Logs, &e))?;
        }
        txn.commit().map_err(|e| write_err(ErrorSubject::Logs, &e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        let this = self.clone();
        blocking(move || this.read_range(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let this = self.clone();
        blocking(move || this.read_log_state()).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError> {
        let (this, vote) = (self.clone(), *vote);
        blocking(move || {
            this.write_meta(KEY_VOTE, &vote, ErrorSubject::Vote, Durability::Immediate)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError> {
        let this = self.clone();
        blocking(move || this.read_meta(KEY_VOTE, ErrorSubject::Vote)).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError> {
        // Not fsynced on its own: losing it in a crash only means replaying fewer entries at
        // start-up (the leader commits the rest again). The next log append makes it durable.
        let this = self.clone();
        blocking(move || {
            this.write_meta(
                KEY_COMMITTED,
                &committed,
                ErrorSubject::Store,
                Durability::None,
            )
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError> {
        let this = self.clone();
        let committed: Option<Option<LogId<RaftId>>> =
            blocking(move || this.read_meta(KEY_COMMITTED, ErrorSubject::Store)).await?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let this = self.clone();
        // Durable before the callback: the commit below fsyncs.
        let res = blocking(move || this.write_entries(entries)).await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError> {
        let this = self.clone();
        blocking(move || this.delete_range(log_id.index.., None)).await
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError> {
        let this = self.clone();
        blocking(move || this.delete_range(..=log_id.index, Some(log_id))).await
    }
}

fn decode_entry(raw: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
    serde_json::from_slice(raw).map_err(|e| read_err(ErrorSubject::Logs, &e))
}

/// Runs blocking redb work off the async worker threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| write_err(ErrorSubject::Store, &e))?
}

pub(crate) fn read_err<E: std::error::Error + 'static>(
    subject: ErrorSubject<RaftId>,
    e: &E,
) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Read, AnyError::new(e)).into()
}

/// Writes log entries into the log table of an open write transaction.
fn put_entries(
    table: &mut redb::Table<'_, u64, &[u8]>,
    entries: &[Entry<TypeConfig>],
) -> Result<(), StorageError> {
    for entry in entries {
        let subject = ErrorSubject::Log(entry.log_id);
        let raw = serde_json::to_vec(entry).map_err(|e| write_err(subject.clone(), &e))?;
        table
            .insert(entry.log_id.index, raw.as_slice())
            .map_err(|e| write_err(subject, &e))?;
    }
    Ok(())
}

pub(crate) fn write_err<E: std::error::Error + 'static>(
    subject: ErrorSubject<RaftId>,
    e: &E,
) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Write, AnyError::new(e)).into()
}
