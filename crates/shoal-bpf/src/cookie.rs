//! The network-namespace cookie of a sandbox: what `bpf_get_netns_cookie()` returns for its
//! sockets, read from user space with `getsockopt(SO_NETNS_COOKIE)` (Linux 5.14+) on a socket
//! made inside the namespace.

use std::os::fd::OwnedFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socket};

use crate::error::BpfError;

/// `SO_NETNS_COOKIE` from asm-generic/socket.h (x86-64, arm64 and most others); the libc
/// crate does not export it on every target.
const SO_NETNS_COOKIE: libc::c_int = 71;

#[derive(Clone, Copy, Debug)]
struct NetnsCookie;

// nix's own helper for a getsockopt of a plain value: it holds the one unsafe call (a
// `getsockopt` into a u64) inside nix's macro, so this crate keeps `forbid(unsafe_code)`.
nix::getsockopt_impl!(
    NetnsCookie,
    libc::SOL_SOCKET,
    SO_NETNS_COOKIE,
    u64,
    nix::sys::socket::sockopt::GetStruct<u64>
);

/// The cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> Result<u64, BpfError> {
    let err = |source| BpfError::Cookie {
        netns: "(own)".into(),
        source,
    };
    let sock: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    getsockopt(&sock, NetnsCookie).map_err(err)
}

/// The cookie of named namespace `netns` (under /run/netns), read from a short-lived thread
/// that enters it.
pub async fn netns_cookie(netns: &str) -> Result<u64, BpfError> {
    let name = netns.to_string();
    shoal_net::run_in_netns_async(netns, current_netns_cookie)
        .await?
        .map_err(|e| match e {
            BpfError::Cookie { source, .. } => BpfError::Cookie {
                netns: name,
                source,
            },
            other => other,
        })
}

/// Like [`netns_cookie`], blocking the caller (not for async code).
pub fn netns_cookie_blocking(netns: &str) -> Result<u64, BpfError> {
    shoal_net::run_in_netns(netns, current_netns_cookie)?
}
