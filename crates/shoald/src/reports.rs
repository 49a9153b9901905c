//! Agents' task status reports, committed together (group commit): while one Raft entry of
//! reports is in flight, the reports that arrive meanwhile wait and go into the next entry,
//! as one `Command::Batch`.
//!
//! Why: each report used to be an entry of its own, and every entry is a new state that
//! each of the leader's sessions looks at; 300 nodes reporting one placement tick cost 300
//! entries times 300 sessions, and the leader fell so far behind that Raft's own calls timed
//! out (bench/control-plane). A report that arrives while nothing is in flight is proposed at
//! once, so group commit adds no wait when reports are rare; when they are many, it makes
//! entries fewer, not later. `Batch` applies each command on its own, so one agent's report
//! of a task that is gone does not undo another's.

use shoal_store::{Store, StoreError};
use shoal_types::Command;
use tokio::sync::{mpsc, oneshot};

/// Most task updates one merged entry carries (a report of more goes alone): a few hundred
/// bytes each, so an entry stays near Raft's 1 MiB AppendEntries budget.
const MAX_UPDATES: usize = 5_000;
/// Reports waiting for the entry after the one in flight; a sender past it waits (back
/// pressure on the agents' calls, not memory).
const QUEUE: usize = 4_096;

/// One agent's report and who waits for its commit.
struct Pending {
    commands: Vec<Command>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle the `ReportStatus` calls share. Dropping it ends the committing task.
pub struct Reports {
    tx: mpsc::Sender<Pending>,
}

impl Reports {
    /// Starts the task that commits reports through `store` (in the current runtime).
    pub fn start(store: Store) -> Reports {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(commit_loop(store, rx));
        Reports { tx }
    }

    /// Commits `commands` (one agent's updates) in the next entry; returns once that entry
    /// is applied here, or with the error that kept it from committing.
    pub async fn commit(&self, commands: Vec<Command>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let gone = || StoreError::Raft("the manager role is stopping".into());
        self.tx
            .send(Pending { commands, done })
            .await
            .map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }
}

async fn commit_loop(store: Store, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while updates(&batch) < MAX_UPDATES {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (command, waiting) = merge(batch);
        let res = store.propose(command).await.map(|_| ());
        for w in waiting {
            let _ = w.send(res.clone());
        }
    }
}

fn updates(batch: &[Pending]) -> usize {
    batch.iter().map(|p| p.commands.len()).sum()
}

/// One `Batch` of every report's commands, in arrival order, and their waiters.
fn merge(batch: Vec<Pending>) -> (Command, Vec<oneshot::Sender<Result<(), StoreError>>>) {
    let mut commands = Vec::with_capacity(updates(&batch));
    let mut waiting = Vec::with_capacity(batch.len());
    for p in batch {
        commands.extend(p.commands);
        waiting.push(p.done);
    }
    (Command::Batch(commands), waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{Millis, TaskState, TaskStatus};

    fn report(node: &str, tasks: &[&str]) -> (Pending, oneshot::Receiver<Result<(), StoreError>>) {
        let (done, wait) = oneshot::channel();
        let commands = tasks
            .iter()
            .map(|t| Command::UpdateTaskStatus {
                id: t.to_string(),
                node_id: node.to_string(),
                status: TaskStatus::new(TaskState::Running, Millis(1), ""),
            })
            .collect();
        (Pending { commands, done }, wait)
    }

    #[test]
    fn reports_merge_into_one_batch_in_arrival_order_with_every_waiter() {
        let (a, _wa) = report("n1", &["t1", "t2"]);
        let (b, _wb) = report("n2", &["t3"]);
        let (cmd, waiting) = merge(vec![a, b]);
        let Command::Batch(cmds) = cmd else {
            panic!("not a batch: {cmd:?}")
        };
        let ids: Vec<&str> = cmds
            .iter()
            .map(|c| match c {
                Command::UpdateTaskStatus { id, .. } => id.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, ["t1", "t2", "t3"]);
        assert_eq!(waiting.len(), 2);
    }
}
