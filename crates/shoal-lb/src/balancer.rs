//! [`Balancer`]: one sandbox's table, created once and then kept in step by transactions.

use crate::apply::{NfSocket, in_netns, run_nft, validate_netns};
use crate::conntrack::ensure_tcp_timeout;
use crate::error::LbError;
use crate::model::{LbConfig, check_vips, validate_service};
use crate::netlink::{encode, encode_delete_table};
use crate::plan::{Changes, Op, StaleFlows, orphan_ops, plan_changes, removed_changes};
use crate::text::{render_create, render_orphans, render_update};

/// How updates reach the kernel. Both send one atomic transaction per update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Our own nfnetlink batch on a socket kept open in the sandbox: no process, no cache
    /// fetch (the default; see `netlink.rs` for why).
    #[default]
    Netlink,
    /// `nft -f -` per update: one process that first reads the table's chains and sets,
    /// which grows with the number of services. Kept as the reference and for comparison.
    Nft,
}

/// The load balancer of one task sandbox: the `ip shoal` table in its network namespace.
///
/// It remembers what it programmed, so an update sends only the difference and never lists
/// the kernel's rules. Whoever else edits the table makes the next update fail (and leave the
/// rules as they were) rather than silently diverge: recreate the balancer then.
///
/// Dropping it leaves the table in place (the sandbox's namespace takes it along when it
/// goes); [`Balancer::remove`] deletes it.
pub struct Balancer {
    netns: String,
    /// What the kernel holds. Replaced only once the kernel accepted a transaction, so a
    /// failed update leaves it, like the rules, as it was.
    programmed: LbConfig,
    transport: Transport,
    /// The socket, created inside the namespace. `None` only while a transaction runs on a
    /// blocking thread (it is moved there and back) or with [`Transport::Nft`].
    socket: Option<NfSocket>,
    /// The next netlink sequence number.
    seq: u32,
}

impl Balancer {
    /// Programs `cfg` into sandbox `netns`, replacing any `ip shoal` table there, and makes
    /// sure idle established TCP flows live at least a day there. Uses [`Transport::Netlink`]
    /// for the updates.
    pub async fn create(netns: &str, cfg: &LbConfig) -> Result<Balancer, LbError> {
        Balancer::create_with(netns, cfg, Transport::default()).await
    }

    /// [`Balancer::create`] with a choice of transport. The table itself is always created by
    /// `nft -f -` (once per sandbox; nft writes the typed set declarations that make
    /// `nft list` readable).
    pub async fn create_with(
        netns: &str,
        cfg: &LbConfig,
        transport: Transport,
    ) -> Result<Balancer, LbError> {
        validate_netns(netns)?;
        cfg.validate()?;
        ensure_tcp_timeout(netns).await?;
        let text = render_create(cfg);
        let name = netns.to_string();
        let socket = in_netns(netns, move || {
            run_nft(&name, &text)?;
            match transport {
                Transport::Netlink => NfSocket::open(&name).map(Some),
                Transport::Nft => Ok(None),
            }
        })
        .await?;
        Ok(Balancer {
            netns: netns.to_string(),
            programmed: cfg.clone(),
            transport,
            socket,
            seq: 1,
        })
    }

    /// The sandbox's namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// What the kernel holds now.
    pub fn programmed(&self) -> &LbConfig {
        &self.programmed
    }

    /// Applies `new` as one transaction with only what changed. On error the rules and
    /// [`Balancer::programmed`] stay as they were, and the error names the failing command.
    ///
    /// Returns the flows that went to backends `new` no longer has for their VIP: flush them
    /// with [`crate::flush_conntrack`], or UDP flows keep reaching dead tasks. Their late UDP
    /// replies are kept first (map `orphans`, a transaction of its own whose failure is only
    /// logged: the update has applied). `new` is taken
    /// by value because it becomes the balancer's record (no copy of 10,000 services per
    /// update).
    ///
    /// Not cancel-safe: if the future is dropped while the kernel works, whether the
    /// transaction applied is unknown; recreate the balancer then.
    pub async fn update(&mut self, new: LbConfig) -> Result<Vec<StaleFlows>, LbError> {
        // Only what changed is validated and diffed: at 10,000 services a full pass over the
        // config costs more than the kernel's part of a small transaction.
        let changes = Changes::of(&self.programmed, &new);
        for (key, svc) in changes.new_keys.iter().zip(&changes.new) {
            validate_service(key, svc)?;
        }
        check_vips(&new, &changes.new)?;
        let ops = plan_changes(&new, &changes);
        let stale = removed_changes(&changes);
        drop(changes);
        if ops.is_empty() {
            self.programmed = new;
            return Ok(Vec::new());
        }
        let text = match self.transport {
            Transport::Netlink => String::new(),
            Transport::Nft => render_update(&self.programmed, &new),
        };
        self.transact(&ops, text).await?;
        // The record follows the kernel at once, whatever happens to the step below.
        let old = std::mem::replace(&mut self.programmed, new);
        // Freeing 10,000 services takes ~0.2 ms: not on the caller's time.
        tokio::task::spawn_blocking(move || drop(old));
        if !stale.is_empty() {
            let text = match self.transport {
                Transport::Netlink => String::new(),
                Transport::Nft => render_orphans(&stale),
            };
            if let Err(e) = self.transact(&orphan_ops(&stale), text).await {
                tracing::warn!(
                    netns = %self.netns,
                    "failed to keep the late UDP replies of removed backends (they may be lost): {e}"
                );
            }
        }
        Ok(stale)
    }

    /// Sends `ops` as one transaction: a netlink batch, or `text` through `nft -f -`.
    async fn transact(&mut self, ops: &[Op], text: String) -> Result<(), LbError> {
        match self.transport {
            Transport::Netlink => {
                let batch = encode(ops, self.seq);
                self.seq = next_seq(self.seq, batch.messages.len());
                let mut socket = match self.socket.take() {
                    Some(socket) => socket,
                    None => self.open_socket().await?,
                };
                let (socket, result) = tokio::task::spawn_blocking(move || {
                    let result = socket.transact(&batch);
                    (socket, result)
                })
                .await
                .map_err(|_| LbError::NetnsThread(self.netns.clone()))?;
                self.socket = Some(socket);
                result
            }
            Transport::Nft => {
                let name = self.netns.clone();
                in_netns(&self.netns, move || run_nft(&name, &text)).await
            }
        }
    }

    /// Deletes the table (one transaction). Connections already translated keep their
    /// conntrack entries; new ones to a VIP go nowhere.
    pub async fn remove(mut self) -> Result<(), LbError> {
        match self.transport {
            Transport::Netlink => {
                let batch = encode_delete_table(self.seq);
                let mut socket = match self.socket.take() {
                    Some(socket) => socket,
                    None => self.open_socket().await?,
                };
                tokio::task::spawn_blocking(move || socket.transact(&batch))
                    .await
                    .map_err(|_| LbError::NetnsThread(self.netns.clone()))?
            }
            Transport::Nft => {
                let name = self.netns.clone();
                in_netns(&self.netns, move || {
                    run_nft(&name, "delete table ip shoal\n")
                })
                .await
            }
        }
    }

    /// A new socket, after one was lost to a panicked transaction.
    async fn open_socket(&self) -> Result<NfSocket, LbError> {
        let name = self.netns.clone();
        in_netns(&self.netns, move || NfSocket::open(&name)).await
    }
}

/// The sequence number after a batch of `messages`, wrapping early: answers are matched by
/// range, which a wrap inside a batch would break.
fn next_seq(seq: u32, messages: usize) -> u32 {
    let messages = u32::try_from(messages).unwrap_or(u32::MAX / 2);
    match seq.checked_add(messages) {
        Some(next) if next < u32::MAX / 2 => next,
        _ => 1,
    }
}
