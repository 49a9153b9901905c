//! shoal's node-wide VIP balancer at the socket layer: cgroup `connect4`, `sendmsg4`,
//! `recvmsg4` and `getpeername4` programs (C, `bpf/sock_lb.c`, compiled by clang in
//! `build.rs` and embedded), loaded with aya and attached at the root of the cgroup v2 tree.
//!
//! Why at the socket: a VIP:port becomes a backend's address when the socket connects (or, for
//! unconnected UDP, sends), so no packet ever carries the VIP: no NAT, no conntrack entry, the
//! client's source address kept, and one set of maps per node instead of one nftables table
//! per sandbox. An endpoint change is a handful of map writes for that service, whatever the
//! number of sandboxes on the node.
//!
//! Maps (layouts in [`maps`] and the C file):
//! - `membership` {netns cookie, network index} → 1: which sandboxes are this node's (network
//!   index 0) and which networks each is attached to. A socket of an unknown namespace is left
//!   alone (the host, another lab node on the same kernel); a socket of one of this node's
//!   sandboxes that asks for a VIP of a network it is not on gets ENETUNREACH.
//! - `services` {VIP, port, proto} → {service index, network index, backend count, rr counter};
//!   port 0 / proto 0 = every port of the VIP (what shoal uses, as Swarm's fwmark does).
//! - `backends` {service index, slot} → {address, port}.
//! - `tcp_slots` (array, slot = socket cookie % 65,536) {cookie, backend, port, VIP, VIP
//!   port}: a connected TCP socket's VIP, so that `getpeername()` shows it. Cookies come in
//!   sequence, so connect4 writes the slot after the last one (warm memory, no hash, no lock);
//!   the `cgroup/sock_release` program ([`RELEASE_PROGRAM`]) empties it when the socket
//!   closes, and a live occupant of a slot connect4 needs again is moved to `reverse`.
//! - `reverse` (LRU) {socket cookie, backend, port} → {VIP, port}: the same for UDP (replies
//!   to unconnected UDP show the VIP) and for those moved TCP sockets, whose entries
//!   sock_release deletes, so the map does not evict live TCP sockets. `rev_ports`, one byte
//!   per port, marks the backend ports these maps can name, so getpeername4, recvmsg4 and
//!   sock_release (which run in every `accept()`, receive and close on the node) look there
//!   only for such a peer port.
//! - `affinity` (LRU) {socket cookie, VIP, port} → {service, slot, address}: an unconnected
//!   UDP socket's datagrams to a VIP keep their backend (a flow, as under conntrack) while
//!   that slot still holds that address; once the task is gone they move, with no flush.
//! - `udp_peers` (LRU) {netns cookie, backend} → 1: sandboxes where connect4 pointed a UDP
//!   socket at that backend, and `udp_backends` {backend} → 1 the addresses it names (a
//!   backend that leaves is looked up there, so `udp_peers` is walked only when some sandbox
//!   connected a UDP socket to it); `closing` {backend} → 1: the backends one pass of the `iter/udp`
//!   program `shoal_udp_close` closes sockets to. A connected UDP socket keeps its backend
//!   (connect4 ran once), so when that backend leaves, `udp_close` destroys the socket
//!   (`bpf_sock_destroy`) inside each sandbox `udp_peers` names: the application gets
//!   ECONNABORTED and connects again to a live task.
//! - `conns` (LRU) {VIP, backend} → connections sent there (a connect, or an unconnected UDP
//!   socket's first datagram to the VIP): [`SockLb::connection_counts`], for `/metrics`.
//!
//! # Layout
//! - [`plan`]: the node's config and the ordered map operations between two configs. Pure.
//! - [`maps`]: the byte layouts shared with the C programs. Pure.
//! - `loader`: [`SockLb`], the programs and maps of one node (the I/O).
//! - `cookie`: a sandbox's network-namespace cookie.
//! - `kfunc`: the object's placeholder call made a kfunc call (`bpf_sock_destroy`). Pure.
//! - `udp_close`: [`SockLb::close_udp`], the socket iterator run inside sandboxes (the I/O).
//! - [`mesh_maps`] and `mesh_loader` ([`TcMesh`]): the routing mesh's published ports at tc
//!   (`bpf/tc_mesh.c`), a different program beside the socket balancer: the maps (pure) and
//!   the programs on the node's underlay interface and each task's gateway veth (the I/O).
//!
//! Architecture invariant: only `loader`, `udp_close`, `mesh_loader` and `cookie` touch the
//! kernel.
#![forbid(unsafe_code)]

mod cookie;
mod error;
mod kfunc;
mod loader;
pub mod maps;
mod mesh_loader;
pub mod mesh_maps;
pub mod plan;
mod udp_close;

pub use cookie::{current_netns_cookie, netns_cookie, netns_cookie_blocking};
pub use error::BpfError;
pub use loader::{
    Applied, Options, PROGRAMS, RELEASE_PROGRAM, SockLb, cgroup2_root, enable_run_stats,
};
pub use mesh_loader::{TcMesh, ifindex, interface_of, task_mac};
pub use mesh_maps::{MESH_MARK, MeshBackend, MeshConfig, MeshCount, MeshPort};
pub use plan::{MapOp, NodeConfig, Proto, Service, ServiceKey};
pub use udp_close::ClosedUdp;
