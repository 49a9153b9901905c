//! Links, addresses and routes over rtnetlink, in one network namespace per [`Netlink`].
//!
//! A [`Netlink`] owns an rtnetlink connection whose socket was created inside its namespace
//! (on a thread from [`crate::netns`]); the connection is then driven by a tokio task, so the
//! calls below never switch a thread's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetError, Result};
use crate::netns::{open_netns, run_in_netns_async};

/// What [`Netlink::links`] reports about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index, unique within the namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
    /// The index of the bridge (or other controller) it is enslaved to.
    pub controller: Option<u32>,
    /// The link kind as `ip -d link` shows it ("veth", "bridge"), when the kernel reports one.
    pub kind: Option<String>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            controller: None,
            kind: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name = name.clone(),
                LinkAttribute::Controller(index) => info.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(kind) = i {
                            info.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// An rtnetlink connection bound to one network namespace.
///
/// Dropping it stops the task that drives the connection.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    /// `None` for the namespace the process started in.
    netns: Option<String>,
    /// Drives the socket; aborted on drop so the socket (and its namespace ref) goes too.
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Netlink {
    /// A connection in the calling thread's namespace. Must run inside a tokio runtime; on a
    /// runtime thread that is the process's own namespace (shoal never moves those threads).
    pub fn current() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::io("open a netlink socket", e))?;
        Ok(Netlink {
            handle,
            netns: None,
            conn: tokio::spawn(conn),
        })
    }

    /// A connection whose socket lives in the named namespace `netns`.
    pub async fn in_netns(netns: &str) -> Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let made = run_in_netns_async(netns, move || {
            // The socket is registered with the caller's runtime but created in this thread's
            // namespace, which it keeps.
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })
        .await?;
        let (conn, handle, _) =
            made.map_err(|e| NetError::io(format!("open a netlink socket in netns {netns}"), e))?;
        Ok(Netlink {
            handle,
            netns: Some(netns.to_string()),
            conn: tokio::spawn(conn),
        })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap yet.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The namespace this connection works in, for messages.
    pub(crate) fn place(&self) -> String {
        match &self.netns {
            Some(name) => format!("netns {name}"),
            None => "the current network namespace".to_string(),
        }
    }

    /// All links of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink(format!("list links in {}", self.place()), e))?;
        Ok(msgs.iter().map(LinkInfo::from_message).collect())
    }

    /// The link named `name`, if any. One RTM_GETLINK by name, not a dump: a node's
    /// namespace and each overlay namespace hold a veth per local task, and a dump of
    /// hundreds of links on every task start made each start cost O(tasks on the node).
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let found: std::result::Result<Vec<LinkMessage>, rtnetlink::Error> = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_collect()
            .await;
        match found {
            Ok(msgs) => Ok(msgs.first().map(LinkInfo::from_message)),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| -c.get() == nix::libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(NetError::netlink(
                format!("look up link {name} in {}", self.place()),
                e,
            )),
        }
    }

    pub(crate) async fn index_of(&self, name: &str) -> Result<u32> {
        match self.link(name).await? {
            Some(link) => Ok(link.index),
            None => Err(NetError::NoSuchLink {
                link: name.to_string(),
                netns: self.place(),
            }),
        }
    }

    async fn set(&self, action: String, msg: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(action, e))
    }

    /// Sets link `name` up.
    pub async fn set_up(&self, name: &str) -> Result<()> {
        let index = self.index_of(name).await?;
        let action = format!("set {name} up in {}", self.place());
        self.set(action, LinkUnspec::new_with_index(index).up().build())
            .await
    }

    /// Sets `lo` up (a fresh namespace has it down).
    pub async fn set_lo_up(&self) -> Result<()> {
        self.set_up("lo").await
    }

    /// Creates bridge `name`, up, and returns its index.
    pub async fn create_bridge(&self, name: &str) -> Result<u32> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(format!("create bridge {name} in {}", self.place()), e)
            })?;
        self.index_of(name).await
    }

    /// Creates the veth pair `name` <-> `peer` here (both ends down).
    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(format!("create veth {name}/{peer} in {}", self.place()), e)
            })
    }

    /// Moves link `name` into the named namespace `netns` (by an fd on `/run/netns/NETNS`).
    /// The link arrives down and keeps its name.
    pub async fn move_to_netns(&self, name: &str, netns: &str) -> Result<()> {
        let index = self.index_of(name).await?;
        let fd = open_netns(netns)?;
        let action = format!("move {name} from {} to netns {netns}", self.place());
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(fd.as_raw_fd())
            .build();
        // `fd` stays open until the kernel has answered.
        let outcome = self.set(action, msg).await;
        drop(fd);
        outcome
    }

    /// Enslaves link `name` to bridge `controller` (`ip link set NAME master CONTROLLER`).
    pub async fn set_controller(&self, name: &str, controller: &str) -> Result<()> {
        let index = self.index_of(name).await?;
        let ctrl = self.index_of(controller).await?;
        let action = format!("attach {name} to {controller} in {}", self.place());
        self.set(
            action,
            LinkUnspec::new_with_index(index).controller(ctrl).build(),
        )
        .await
    }

    /// Renames link `old` to `new` (the link must be down).
    pub async fn rename(&self, old: &str, new: &str) -> Result<()> {
        let index = self.index_of(old).await?;
        let action = format!("rename {old} to {new} in {}", self.place());
        self.set(action, LinkUnspec::new_with_index(index).name(new).build())
            .await
    }

    /// Sets the MTU of link `name`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        let index = self.index_of(name).await?;
        let action = format!("set the MTU of {name} to {mtu} in {}", self.place());
        self.set(action, LinkUnspec::new_with_index(index).mtu(mtu).build())
            .await
    }

    /// Adds `addr/prefix_len` to link `name`.
    pub async fn add_address(&self, name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let index = self.index_of(name).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    format!("add {addr}/{prefix_len} to {name} in {}", self.place()),
                    e,
                )
            })
    }

    /// Adds a route to `dest/prefix_len` via `gateway`.
    pub async fn add_route(&self, dest: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix_len)
            .gateway(gateway)
            .build();
        self.handle.route().add(msg).execute().await.map_err(|e| {
            NetError::netlink(
                format!(
                    "add route {dest}/{prefix_len} via {gateway} in {}",
                    self.place()
                ),
                e,
            )
        })
    }

    /// Adds the default route via `gateway`.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Addr::UNSPECIFIED, 0, gateway).await
    }

    /// Deletes link `name` if it is there (for a veth, both ends go), and says whether it
    /// was. Another caller deleting it first counts as not there.
    pub async fn delete_link_if_present(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| -c.get() == nix::libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(NetError::netlink(
                format!("delete {name} in {}", self.place()),
                e,
            )),
        }
    }

    /// Deletes link `name` (for a veth, both ends go).
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let index = self.index_of(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("delete {name} in {}", self.place()), e))
    }
}
