//! Carrying transactions out inside a sandbox: a thread that enters the namespace, `nft -f -`
//! run from it, and a NETLINK_NETFILTER socket created there and kept.
//!
//! Architecture invariant: no thread of the caller (a tokio worker above all) ever changes
//! namespace. Work happens on a fresh std thread that `setns`es and ends with the work;
//! children it spawns and sockets it creates keep that namespace.

use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::error::{LbError, hint};
use crate::netlink::{Ack, Batch, parse_acks};

/// Checks that `name` is a plain file name under /run/netns.
pub(crate) fn validate_netns(name: &str) -> Result<(), LbError> {
    Ok(shoal_net::validate_netns_name(name)?)
}

/// Runs `work` on a new thread inside network namespace `netns` (shoal-net's helper) and
/// returns its result.
pub(crate) async fn in_netns<T, F>(netns: &str, work: F) -> Result<T, LbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LbError> + Send + 'static,
{
    shoal_net::run_in_netns_async(netns, work).await?
}

/// Applies `script` as one `nft -f -` transaction in network namespace `netns`, or in the
/// caller's own namespace with `None` (for tables of ours that live elsewhere than a
/// sandbox, such as the routing mesh's).
pub async fn nft_transaction(netns: Option<&str>, script: &str) -> Result<(), LbError> {
    let script = script.to_string();
    match netns {
        Some(ns) => {
            let name = ns.to_string();
            in_netns(ns, move || run_nft(&name, &script)).await
        }
        None => tokio::task::spawn_blocking(move || run_nft("(own)", &script))
            .await
            .map_err(|_| LbError::NetnsThread("(own)".into()))?,
    }
}

/// Runs `nft -f -` with `text` on stdin; call it on a thread inside the namespace.
pub(crate) fn run_nft(netns: &str, text: &str) -> Result<(), LbError> {
    let spawn_err = |source| LbError::Spawn {
        program: "nft",
        package: "nftables",
        netns: netns.to_string(),
        source,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let stdin = child.stdin.take();
    // Written from a second thread so that a large table cannot deadlock against nft
    // filling its stderr pipe.
    let out = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(text.as_bytes());
            }
        });
        child.wait_with_output()
    })
    .map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LbError::Nft {
            netns: netns.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A NETLINK_NETFILTER socket bound inside one namespace.
pub(crate) struct NfSocket {
    fd: OwnedFd,
    netns: String,
    /// The last send buffer size set, so that it is only raised for big batches.
    sndbuf: usize,
}

/// Errors must fit in the receive buffer: the kernel echoes each failing message.
const RCVBUF: usize = 4 << 20;
const SNDBUF_DEFAULT: usize = 208 << 10;

impl NfSocket {
    /// Opens the socket; call it on a thread inside the namespace.
    pub(crate) fn open(netns: &str) -> Result<NfSocket, LbError> {
        let err = |action| {
            let netns = netns.to_string();
            move |source| LbError::Netlink {
                action,
                netns,
                source,
            }
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(err("open socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(err("bind socket"))?;
        setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).map_err(err("size socket"))?;
        // The kernel answers a batch within the send() call; this only bounds a bug.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))
            .map_err(err("set socket timeout"))?;
        Ok(NfSocket {
            fd,
            netns: netns.to_string(),
            sndbuf: SNDBUF_DEFAULT,
        })
    }

    /// Sends one buffer of netlink messages (no batch framing), retrying on EINTR.
    pub(crate) fn send_raw(&self, bytes: &[u8]) -> Result<(), LbError> {
        loop {
            match send(self.fd.as_raw_fd(), bytes, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(LbError::Netlink {
                        action: "send request",
                        netns: self.netns.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Reads what the kernel queued (waits up to the socket's 5 s timeout).
    pub(crate) fn recv_raw(&self, buf: &mut [u8]) -> Result<usize, LbError> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(LbError::NoAnswer(self.netns.clone())),
                Err(source) => {
                    return Err(LbError::Netlink {
                        action: "read answer",
                        netns: self.netns.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Sends one batch and waits for the kernel's verdict on it. Blocking; the kernel handles
    /// a batch synchronously within `send`, so this takes as long as the transaction.
    pub(crate) fn transact(&mut self, batch: &Batch) -> Result<(), LbError> {
        let err = |action| {
            let netns = self.netns.clone();
            move |source| LbError::Netlink {
                action,
                netns,
                source,
            }
        };
        if batch.bytes.len() + 64 > self.sndbuf {
            let size = batch.bytes.len() * 2;
            setsockopt(&self.fd, sockopt::SndBufForce, &size).map_err(err("size socket"))?;
            self.sndbuf = size;
        }
        loop {
            match send(self.fd.as_raw_fd(), &batch.bytes, MsgFlags::empty()) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(err("send batch")(e)),
            }
        }
        let first = batch.messages.first().map_or(0, |(s, _)| *s);
        let last = batch.messages.last().map_or(0, |(s, _)| *s);
        let mut failure: Option<Ack> = None;
        let mut buf = vec![0u8; 64 << 10];
        let ack = loop {
            // After an error, drain what is queued without waiting: the kernel may not
            // acknowledge the last message then, and stale answers must not be read as the
            // next batch's.
            let flags = if failure.is_some() {
                MsgFlags::MSG_DONTWAIT
            } else {
                MsgFlags::empty()
            };
            let n = match recv(self.fd.as_raw_fd(), &mut buf, flags) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => match failure {
                    Some(ack) => break ack,
                    None => return Err(LbError::NoAnswer(self.netns.clone())),
                },
                Err(e) => return Err(err("read answer")(e)),
            };
            let mut done = false;
            for ack in parse_acks(&buf[..n]) {
                if ack.seq < first || ack.seq > last {
                    continue;
                }
                if ack.errno != 0 && failure.is_none() {
                    failure = Some(ack);
                }
                done |= ack.seq == batch.last_seq();
            }
            if done && failure.is_none() {
                return Ok(());
            }
        };
        let mut command = batch.describe(ack.seq).to_string();
        if command.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|i| command.is_char_boundary(*i))
                .unwrap_or(0);
            command.truncate(cut);
            command.push_str(" ...");
        }
        Err(LbError::Rejected {
            command,
            netns: self.netns.clone(),
            source: std::io::Error::from_raw_os_error(ack.errno),
            hint: hint(ack.errno),
        })
    }
}

/// How long idle established TCP flows live in the sandbox's conntrack table.
pub(crate) const TCP_ESTABLISHED_SYSCTL: &str =
    "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";

/// Reads a conntrack timeout (seconds); call it on a thread inside the namespace. /proc/sys/net
/// shows the namespace of the thread that opens it.
pub(crate) fn read_sysctl(netns: &str, path: &'static str) -> Result<u64, LbError> {
    let err = |source| LbError::Sysctl {
        action: "read",
        path,
        netns: netns.to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    text.trim()
        .parse()
        .map_err(|_| err(std::io::Error::other(format!("not a number: {text:?}"))))
}

/// Writes a conntrack timeout (seconds); call it on a thread inside the namespace.
pub(crate) fn write_sysctl(netns: &str, path: &'static str, value: u64) -> Result<(), LbError> {
    std::fs::write(path, value.to_string()).map_err(|source| LbError::Sysctl {
        action: "write",
        path,
        netns: netns.to_string(),
        source,
    })
}
