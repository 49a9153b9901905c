// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// shoal's node-wide VIP balancer at the socket layer (cgroup sock_addr programs).
//
// A VIP:port is rewritten to a backend's address when a socket connects (TCP, connected UDP)
// or sends a datagram (unconnected UDP), so packets leave with the backend as destination:
// no NAT, no conntrack, the client's source address kept. Replies to unconnected UDP and
// getpeername() are rewritten back to the VIP from `tcp_slots` (TCP) or the `reverse` map.
//
// Several shoal nodes may share one kernel and one cgroup tree (the lab): every node loads its
// own copy of these programs and maps, attached with BPF_F_ALLOW_MULTI, and each acts only on
// sockets whose network namespace is one of its own sandboxes (`membership`, slot 0). Any
// other socket (the host's, another node's) is left exactly as it was.
//
// Layouts are shared with src/maps.rs (the Rust encoders); change both together.

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define ENETUNREACH 101
#define ECONNREFUSED 111
#define AF_INET 2
#define TCP_ESTABLISHED 1 // what a connected UDP socket's state says

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// {netns cookie, network index} -> 1. Network index 0 marks "a sandbox of this node".
struct member_key {
	__u64 netns_cookie;
	__u32 net;
	__u32 pad;
};

// {VIP, port, protocol}; port 0 and protocol 0 = every port and protocol of the VIP.
struct svc_key {
	__u32 vip;   // network order
	__u16 port;  // network order
	__u8 proto;  // IPPROTO_TCP / IPPROTO_UDP / 0
	__u8 pad;
};

struct svc_val {
	__u32 id;    // the service's index (backends key)
	__u32 net;   // the network index the VIP belongs to
	__u32 count; // backends in slots 0..count
	__u32 rr;    // round-robin counter, incremented atomically
};

struct be_key {
	__u32 svc;
	__u32 slot;
};

struct be_val {
	__u32 addr;  // network order
	__u16 port;  // network order; 0 = keep the requested port (Swarm: VIP port = task port)
	__u16 pad;
};

// {socket cookie, backend address, backend port} -> {VIP, VIP port}.
struct rev_key {
	__u64 cookie;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct rev_val {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

// Sizes are upper bounds; hash maps allocate per element (BPF_F_NO_PREALLOC), so a node with
// few services costs little kernel memory.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct member_key);
	__type(value, __u8);
} membership SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct be_key);
	__type(value, struct be_val);
} backends SEC(".maps");

// LRU: entries of closed sockets age out on their own; the socket cookie is unique for the
// kernel's lifetime, so a stale entry can never match a new socket.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rev_key);
	__type(value, struct rev_val);
} reverse SEC(".maps");

// A connected TCP socket's VIP, in the slot its socket cookie names (cookie % TCP_SLOTS). The
// kernel hands out cookies in sequence, so consecutive connects write consecutive slots: a
// store into warm memory, with no hashing and no lock, where an insert into `reverse` cost a
// cache miss on a random bucket under its lock (the larger part of connect4's time per VIP
// connect, perf; bench/vip). The slot is cleared when the socket closes (sock_release), so an
// occupied slot is a live socket: connect4 moves such an occupant (a connection open while
// TCP_SLOTS more sockets got cookies) into `reverse` before taking the slot, and readers fall
// back to `reverse` on a miss here. `cookie` 0 = empty (the kernel's cookies start at 1).
#define TCP_SLOTS 65536

struct tcp_slot {
	__u64 cookie;
	__u32 addr;  // backend, network order
	__u32 vip;   // network order
	__u16 port;  // backend port, network order
	__u16 vport; // VIP port, network order
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCP_SLOTS);
	__type(key, __u32);
	__type(value, struct tcp_slot);
} tcp_slots SEC(".maps");

// One byte per port (network order, as `reverse` keys it): 1 once some connect4/sendmsg4
// sent a VIP to a backend on that port. A `reverse` entry or a `tcp_slots` slot exists only
// for such a port, so getpeername4 and recvmsg4 look there only when their peer's port is
// marked: an accept()
// (its peer is a client's ephemeral port) no longer costs a miss in the large, cold LRU map
// and a new socket cookie (0.8-0.9 us per accept on a busy node, bench/vip). Bytes, not
// bits: a byte store needs no atomic read-modify-write. Never cleared (a stale mark only
// costs a lookup).
struct rev_port_marks {
	__u8 port[65536];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rev_port_marks);
} rev_ports SEC(".maps");

// {socket cookie, VIP, port} -> the backend an unconnected UDP socket last sent that VIP's
// datagrams to: a flow keeps its backend as it would under conntrack (Swarm's IPVS), instead
// of every datagram going round robin. It is reused only while that slot still holds that
// address, so a removed task gets no more datagrams, with no flush.
struct aff_key {
	__u64 cookie;
	__u32 vip;
	__u16 port;
	__u16 pad;
};

struct aff_val {
	__u32 svc;
	__u32 slot;
	__u32 addr; // what the slot held: another address there means this task is gone
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
} affinity SEC(".maps");

// {netns cookie, backend} -> 1: a sandbox where connect4 pointed a UDP socket at that backend.
// When the backend leaves, the loader opens `shoal_udp_close` only in those namespaces. LRU:
// an entry of a socket long closed costs one useless walk, then it is deleted.
struct udp_peer_key {
	__u64 netns_cookie;
	__u32 addr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_peer_key);
	__type(value, __u8);
} udp_peers SEC(".maps");

// {backend address} -> 1: the backends that are in some `udp_peers` entry. A backend that
// leaves is looked up here first, so the common removal (no UDP socket was ever connected to
// it) costs one lookup instead of a walk of `udp_peers` (a walk of its 65,536 buckets, however
// few entries it holds). Not LRU: an entry must not be evicted while `udp_peers` names its
// address; the loader deletes it with the backend's `udp_peers` entries.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} udp_backends SEC(".maps");

// {backend address} -> 1: the backends that just left, for one pass of `shoal_udp_close`.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} closing SEC(".maps");

// {VIP, backend address} -> connections the programs sent to that backend: a connect() (TCP,
// connected UDP) or an unconnected UDP socket's first datagram to the VIP (or its first after
// its backend left). Read by shoald at scrape time (`shoal_vip_backend_connections_total`).
// LRU: the pairs of backends long gone age out instead of filling the map; a live pair is
// touched at every connection, so it is not the one evicted.
struct conn_key {
	__u32 vip;   // network order
	__u32 addr;  // network order
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u64);
} conns SEC(".maps");

static __always_inline void count_connection(__u32 vip, __u32 addr)
{
	struct conn_key ck = { .vip = vip, .addr = addr };
	__u64 *n = bpf_map_lookup_elem(&conns, &ck);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	__u64 one = 1;
	// Another CPU may have made the entry since the lookup: then add to its count.
	if (bpf_map_update_elem(&conns, &ck, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&conns, &ck);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
}

// Records a connecting TCP socket's VIP in its slot of `tcp_slots` (see there).
static __always_inline void put_tcp_slot(__u64 cookie, struct rev_key *rk, struct rev_val *rv)
{
	__u32 idx = (__u32)cookie % TCP_SLOTS;
	struct tcp_slot *ts = bpf_map_lookup_elem(&tcp_slots, &idx);
	if (!ts) {
		bpf_map_update_elem(&reverse, rk, rv, BPF_ANY);
		return;
	}
	if (ts->cookie && ts->cookie != cookie) {
		// A live socket TCP_SLOTS cookies older: it keeps its VIP in `reverse`.
		struct rev_key ok = { .cookie = ts->cookie, .addr = ts->addr, .port = ts->port };
		struct rev_val ov = { .vip = ts->vip, .port = ts->vport };
		bpf_map_update_elem(&reverse, &ok, &ov, BPF_ANY);
	}
	ts->addr = rk->addr;
	ts->port = rk->port;
	ts->vip = rv->vip;
	ts->vport = rv->port;
	ts->cookie = cookie;
}

// Rewrites ctx's destination if it is a VIP this node balances for the socket's sandbox.
// Returns 0 (go on, rewritten or untouched) or a positive errno to refuse with. `sticky`:
// keep the socket's earlier backend for this VIP (unconnected UDP, per datagram).
static __always_inline int translate(struct bpf_sock_addr *ctx, bool sticky)
{
	struct member_key mk = {};
	mk.netns_cookie = bpf_get_netns_cookie(ctx);
	mk.net = 0;
	if (!bpf_map_lookup_elem(&membership, &mk))
		return 0; // not one of this node's sandboxes

	struct svc_key sk = {};
	sk.vip = ctx->user_ip4;
	sk.port = (__u16)ctx->user_port;
	sk.proto = (__u8)ctx->protocol;
	struct svc_val *svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc) {
		sk.port = 0;
		sk.proto = 0;
		svc = bpf_map_lookup_elem(&services, &sk);
		if (!svc)
			return 0; // not a VIP
	}

	mk.net = svc->net;
	if (!bpf_map_lookup_elem(&membership, &mk))
		return ENETUNREACH; // a VIP of a network this sandbox is not attached to

	__u32 count = svc->count;
	if (count == 0)
		return ECONNREFUSED;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct aff_key ak = { .cookie = cookie, .vip = ctx->user_ip4, .port = (__u16)ctx->user_port };
	struct be_key bk = { .svc = svc->id };
	struct be_val *be = 0;
	if (sticky) {
		struct aff_val *prev = bpf_map_lookup_elem(&affinity, &ak);
		if (prev && prev->svc == svc->id && prev->slot < count) {
			bk.slot = prev->slot;
			be = bpf_map_lookup_elem(&backends, &bk);
			if (be && be->addr != prev->addr)
				be = 0; // the flow's task is gone: pick anew
		}
	}
	bool fresh = !be; // a new connection or flow, not a datagram of a flow under way
	if (!be) {
		__u32 n = __sync_fetch_and_add(&svc->rr, 1);
		bk.slot = n % count;
		be = bpf_map_lookup_elem(&backends, &bk);
	}
	if (!be) {
		// The service shrank between our two lookups: slot 0 always exists while count > 0.
		bk.slot = 0;
		be = bpf_map_lookup_elem(&backends, &bk);
		if (!be)
			return ECONNREFUSED;
	}

	struct rev_val rv = { .vip = ctx->user_ip4, .port = (__u16)ctx->user_port };
	__u16 port = be->port ? be->port : (__u16)ctx->user_port;
	struct rev_key rk = {
		.cookie = cookie,
		.addr = be->addr,
		.port = port,
	};
	// Only write when it changes: an unconnected UDP socket sends through here per datagram.
	// A connect() is a socket's first (its cookie is new): no lookup, which would miss in a
	// large, cold map every time.
	struct rev_val *old = sticky ? bpf_map_lookup_elem(&reverse, &rk) : 0;
	if (!old || old->vip != rv.vip || old->port != rv.port) {
		__u32 zero = 0;
		struct rev_port_marks *marks = bpf_map_lookup_elem(&rev_ports, &zero);
		// The mark before the entry: a reader that sees the entry sees the mark.
		if (marks && !marks->port[port])
			marks->port[port] = 1;
		if (!sticky && ctx->protocol == IPPROTO_TCP)
			put_tcp_slot(cookie, &rk, &rv);
		else
			bpf_map_update_elem(&reverse, &rk, &rv, BPF_ANY);
	}

	if (sticky) {
		struct aff_val av = { .svc = bk.svc, .slot = bk.slot, .addr = be->addr };
		struct aff_val *prev = bpf_map_lookup_elem(&affinity, &ak);
		if (!prev || prev->svc != av.svc || prev->slot != av.slot || prev->addr != av.addr)
			bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
	}

	if (!sticky && ctx->protocol == IPPROTO_UDP) {
		// A connected UDP socket keeps this backend until it is closed (see shoal_udp_close).
		struct udp_peer_key pk = { .netns_cookie = mk.netns_cookie, .addr = be->addr };
		if (!bpf_map_lookup_elem(&udp_peers, &pk)) {
			__u8 one = 1;
			// The address first: the loader trusts its absence to mean no entry here.
			__u32 addr = be->addr;
			if (!bpf_map_lookup_elem(&udp_backends, &addr))
				bpf_map_update_elem(&udp_backends, &addr, &one, BPF_ANY);
			bpf_map_update_elem(&udp_peers, &pk, &one, BPF_ANY);
		}
	}

	if (fresh)
		count_connection(ctx->user_ip4, be->addr);
	ctx->user_ip4 = be->addr;
	ctx->user_port = port;
	return 0;
}

static __always_inline int refuse_or_allow(int err)
{
	if (err) {
		// Returning 0 alone gives EPERM; this makes connect()/sendmsg() say why.
		bpf_set_retval(-err);
		return 0;
	}
	return 1;
}

SEC("cgroup/connect4")
int shoal_connect4(struct bpf_sock_addr *ctx)
{
	return refuse_or_allow(translate(ctx, false));
}

SEC("cgroup/sendmsg4")
int shoal_sendmsg4(struct bpf_sock_addr *ctx)
{
	return refuse_or_allow(translate(ctx, true));
}

// The peer a socket reports (recvfrom's source, getpeername) goes back to the VIP it asked for.
static __always_inline void reverse_translate(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct rev_port_marks *marks = bpf_map_lookup_elem(&rev_ports, &zero);
	if (marks && !marks->port[(__u16)ctx->user_port])
		return; // no VIP was ever sent to a backend on this port
	struct rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	if (ctx->protocol == IPPROTO_TCP) {
		__u32 idx = (__u32)rk.cookie % TCP_SLOTS;
		struct tcp_slot *ts = bpf_map_lookup_elem(&tcp_slots, &idx);
		if (ts && ts->cookie == rk.cookie) {
			if (ts->addr == rk.addr && ts->port == rk.port) {
				ctx->user_ip4 = ts->vip;
				ctx->user_port = ts->vport;
			}
			return;
		}
	}
	struct rev_val *rv = bpf_map_lookup_elem(&reverse, &rk);
	if (rv) {
		ctx->user_ip4 = rv->vip;
		ctx->user_port = rv->port;
	}
}

// A TCP socket's VIP goes with the socket: its `tcp_slots` slot is emptied (so an occupied slot
// is a live socket), or, for a socket moved into `reverse`, that entry is deleted, so that
// `reverse` holds live sockets only and its inserts never evict one under the LRU's lock
// (every VIP connect evicted once the map was full: 1.3-1.5 us more than a direct connect;
// bench/vip). UDP entries are left to the LRU: an unconnected socket has one per peer.
// `rev_ports` keeps this to one array read for a socket whose peer port no VIP connection
// went to (accepted sockets, most of the host's).
SEC("cgroup/sock_release")
int shoal_sock_release(struct bpf_sock *sk)
{
	if (sk->protocol != IPPROTO_TCP || sk->family != AF_INET)
		return 1;
	__u16 port = (__u16)sk->dst_port; // network order, as connect4 keyed it
	__u32 zero = 0;
	struct rev_port_marks *marks = bpf_map_lookup_elem(&rev_ports, &zero);
	if (!marks || !marks->port[port])
		return 1;
	struct rev_key rk = {
		.cookie = bpf_get_socket_cookie(sk),
		.addr = sk->dst_ip4,
		.port = port,
	};
	__u32 idx = (__u32)rk.cookie % TCP_SLOTS;
	struct tcp_slot *ts = bpf_map_lookup_elem(&tcp_slots, &idx);
	// Compare and swap: a connect4 on another CPU may be taking the slot for a newer socket.
	if (ts && __sync_val_compare_and_swap(&ts->cookie, rk.cookie, 0) == rk.cookie)
		return 1;
	bpf_map_delete_elem(&reverse, &rk); // moved there by a newer socket, or none
	return 1;
}

SEC("cgroup/recvmsg4")
int shoal_recvmsg4(struct bpf_sock_addr *ctx)
{
	reverse_translate(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int shoal_getpeername4(struct bpf_sock_addr *ctx)
{
	reverse_translate(ctx);
	return 1;
}

// ---- Closing connected UDP sockets whose backend left -------------------------------------
//
// connect4 translates a UDP socket's VIP once, so after its task leaves the socket would send
// into the void. Like Cilium's socket LB, such sockets are destroyed (bpf_sock_destroy, Linux
// 6.5+, only callable from a tcp/udp socket iterator): the application gets ECONNABORTED and
// connects again, through the VIP, to a live task. The loader opens this iterator inside each
// namespace `udp_peers` names for a removed backend (an iterator walks the namespace it is
// opened in), with the removed backends in `closing`.
//
// Kernel types are declared with CO-RE (preserve_access_index), not from a generated
// vmlinux.h: only these few fields are read, and the loader relocates their offsets from the
// running kernel's BTF, so the build needs no bpftool or kernel BTF.

struct sock_common {
	unsigned short skc_family;
	volatile unsigned char skc_state;
	__u32 skc_daddr;  // network order
	__u16 skc_dport;  // network order
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

// bpf_sock_destroy() is a kfunc. aya 0.14 cannot link a call to an extern kfunc, so it is
// written here as a call to a helper with this (unused) number; the loader rewrites that one
// instruction into a kfunc call to bpf_sock_destroy's BTF id in the running kernel
// (src/loader.rs, KFUNC_PLACEHOLDER). Keep the number in step with it.
static long (*const sock_destroy)(struct sock_common *sk) = (void *)0x5d0c7e57;

SEC("iter/udp")
int shoal_udp_close(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	if (!sk)
		return 0;
	if (sk->__sk_common.skc_family != AF_INET || sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0; // not a connected IPv4 socket
	__u32 daddr = sk->__sk_common.skc_daddr;
	if (!bpf_map_lookup_elem(&closing, &daddr))
		return 0;
	// Only a socket our connect4 pointed there (through a VIP): one connected to the task's
	// own address is the application's business.
	struct rev_key rk = {
		.cookie = bpf_get_socket_cookie(sk),
		.addr = daddr,
		.port = sk->__sk_common.skc_dport,
	};
	if (!bpf_map_lookup_elem(&reverse, &rk))
		return 0;
	if (sock_destroy(&sk->__sk_common) == 0)
		bpf_seq_write(ctx->meta->seq, &rk.cookie, sizeof(rk.cookie));
	return 0;
}
