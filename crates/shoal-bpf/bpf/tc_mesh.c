// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// shoal's routing mesh at tc: published ports on the node's underlay interface.
//
// `mesh_ingress` runs at the ingress of the node's underlay interface. A TCP or UDP packet to
// the node's address and a published port gets a backend, kept per flow in `flows` (LRU):
// while the backend holds the flow's slot its packets go there; once the slot holds another
// task or none (a task left, or the list changed around it), a UDP flow and a TCP SYN are
// balanced again, and a TCP connection past its SYN stays with the backend it had (a copy is
// in the flow): shoal cuts no established connection, the leaving task's application closes
// it on SIGTERM. Once a local task's veth is gone (`task_veths`: the task ended, killed or
// not) its connections are balanced again too, so that they are reset at once rather than
// sent nowhere.
// - a task on this node: destination rewritten to the task's gateway address and target port,
//   the reverse entry written to `replies`, and the packet handed straight to the task's
//   namespace with bpf_redirect_peer (no routing, netfilter or conntrack in the node's
//   namespace, no veth backlog hop);
// - a task on another node: the packet goes on up the node's stack with a mark naming the
//   backend, and the nftables mesh table DNATs, marks DSCP 43 and masquerades it as before.
// `mesh_reply` runs at the ingress of each task's host-side gateway veth: a reply of a flow in
// `replies` gets its source rewritten back to the node's address and published port and is
// sent out of the underlay interface with bpf_redirect_neigh. Anything else passes untouched
// (TC_ACT_UNSPEC: on to any other program attached there, then the stack).
//
// Several shoal nodes may share one kernel (the lab): each loads its own copy, attached to its
// own interfaces, with its own maps.
//
// Layouts are shared with src/mesh_maps.rs (the Rust encoders); change both together.

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FORWARDED_DSCP 43
// skb->mark of a packet left to nftables for a backend on another node: MESH_MARK | index.
#define MESH_MARK 0x53480000
// Slots of the local-only list (traffic=local, and flows another node forwarded here).
#define LOCAL_LIST 0x80000000
#define KIND_LOCAL 1
#define KIND_REMOTE 2
#define FLAG_LOCAL_ONLY 1

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_TOS_OFF (ETH_HLEN + offsetof(struct iphdr, tos))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
// Only IPv4 headers without options take this path (the rest goes to nftables).
#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define TCP_CSUM_OFF (L4_OFF + offsetof(struct tcphdr, check))
#define UDP_CSUM_OFF (L4_OFF + offsetof(struct udphdr, check))

// {node address, published port, protocol}.
struct pub_key {
	__u32 addr;  // network order
	__u16 port;  // network order
	__u8 proto;
	__u8 pad;
};

struct pub_val {
	__u32 id;          // the port's index (backends key)
	__u16 count;       // backends in slots 0..count (every task of the service)
	__u16 local_count; // this node's tasks in slots LOCAL_LIST|0..local_count
	__u32 rr;          // round-robin counter, incremented atomically
	__u32 flags;       // FLAG_LOCAL_ONLY: traffic=local or mode=host
};

struct be_key {
	__u32 id;
	__u32 slot;
};

struct be_val {
	__u32 addr;     // network order: the task's gateway address, or the other node's
	__u16 port;     // network order: the target port (local tasks)
	__u8 kind;      // KIND_LOCAL / KIND_REMOTE
	__u8 pad;
	__u32 ifindex;  // the task's host-side veth (local)
	__u16 index;    // the nftables chain of the backend (remote)
	__u8 mac[6];    // the task's MAC (local)
};

// One direction of a flow, as its packets carry it.
struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u32 id;
	__u32 slot;
	// The backend when chosen: the slot is still this backend's while its address is this
	// one; a TCP connection keeps it after that.
	struct be_val be;
};

struct reply_val {
	__u32 addr;    // the node's address the client asked for
	__u16 port;    // the published port
	__u16 pad;
	__u32 ifindex; // where the flow came in (the underlay interface)
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pub_key);
	__type(value, struct pub_val);
} published SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct be_key);
	__type(value, struct be_val);
} backends SEC(".maps");

// The other nodes' addresses: a flow one of them forwards here (DSCP 43) goes to a local task.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} peers SEC(".maps");

// The host-side veths (ifindex) of this node's tasks that have `mesh_reply`: the tasks that
// still exist.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} task_veths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

// Keyed by the reply's own 5-tuple (task address and port -> client address and port).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct reply_val);
} replies SEC(".maps");

// {published port, protocol, kind, backend address} -> new flows (TCP connections, UDP flows)
// sent to that backend: the task's gateway address (KIND_LOCAL) or the node the flow is
// forwarded to (KIND_REMOTE). Read by shoald at scrape time
// (`shoal_mesh_backend_connections_total`). LRU: pairs of backends long gone age out.
struct conn_key {
	__u32 addr;  // network order
	__u16 port;  // network order
	__u8 proto;
	__u8 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u64);
} conns SEC(".maps");

static __always_inline void count_connection(__u16 port, __u8 proto, struct be_val *be)
{
	struct conn_key ck = {.addr = be->addr, .port = port, .proto = proto, .kind = be->kind};
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

struct parsed {
	struct iphdr *ip;
	__u16 *ports; // [source, destination]
	__u32 csum_off;
	__u64 csum_flags;
};

// An IPv4 TCP or UDP packet without IP options, not a fragment. 0 if it is one.
static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return 0;
	__u16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > end)
		return 0;
	if (ip->protocol == IPPROTO_TCP) {
		p->csum_off = TCP_CSUM_OFF;
		p->csum_flags = 0;
	} else if (ip->protocol == IPPROTO_UDP) {
		p->csum_off = UDP_CSUM_OFF;
		// A UDP checksum of 0 means none: leave it so.
		p->csum_flags = BPF_F_MARK_MANGLED_0;
	} else {
		return 0;
	}
	p->ip = ip;
	p->ports = ports;
	return 1;
}

// Rewrites the address at `addr_off` and the port at `port_off`, with checksum fix-ups.
static __always_inline int rewrite(struct __sk_buff *skb, struct parsed *p, __u32 addr_off,
				   __u32 old_addr, __u32 new_addr, __u32 port_off, __u16 old_port,
				   __u16 new_port)
{
	if (bpf_l4_csum_replace(skb, p->csum_off, old_addr, new_addr,
				p->csum_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)))
		return -1;
	if (bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
				p->csum_flags | sizeof(new_port)))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0))
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0))
		return -1;
	return 0;
}

// The backend of a flow's first packet: round robin over the service's tasks (or this node's).
static __always_inline struct be_val *pick(struct pub_val *pub, int local_only, __u32 *slot)
{
	__u32 n = local_only ? pub->local_count : pub->count;
	if (n == 0)
		return NULL;
	__u32 i = __sync_fetch_and_add(&pub->rr, 1) % n;
	*slot = local_only ? (LOCAL_LIST | i) : i;
	struct be_key bk = {.id = pub->id, .slot = *slot};
	return bpf_map_lookup_elem(&backends, &bk);
}

SEC("classifier")
int mesh_ingress(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse(skb, &p))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = p.ip;
	struct pub_key pk = {.addr = ip->daddr, .port = p.ports[1], .proto = ip->protocol};
	struct pub_val *pub = bpf_map_lookup_elem(&published, &pk);
	if (!pub)
		return TC_ACT_UNSPEC;
	__u8 tos = ip->tos;
	int forwarded = (tos >> 2) == FORWARDED_DSCP && bpf_map_lookup_elem(&peers, &ip->saddr);
	int local_only = forwarded || (pub->flags & FLAG_LOCAL_ONLY);
	struct flow_key fk = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = p.ports[0],
		.dport = p.ports[1],
		.proto = ip->protocol,
	};
	__u32 client = ip->saddr, node = ip->daddr;
	__u16 cport = p.ports[0], pport = p.ports[1];

	// A TCP segment other than a connection's first SYN belongs to a connection under way.
	int established = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)p.ports;
		if ((void *)(th + 1) > (void *)(long)skb->data_end)
			return TC_ACT_UNSPEC;
		established = !(th->syn && !th->ack);
	}

	struct be_val *be = NULL;
	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	if (fv && fv->id == pub->id) {
		struct be_key bk = {.id = fv->id, .slot = fv->slot};
		be = bpf_map_lookup_elem(&backends, &bk);
		if (be && be->addr != fv->be.addr)
			be = NULL;
		// The slot holds another task now (or none): a connection under way keeps its
		// backend (still serving it until its SIGTERM, or moved to another slot) while
		// that one exists; anything else is balanced again.
		if (!be && established &&
		    (fv->be.kind != KIND_LOCAL ||
		     bpf_map_lookup_elem(&task_veths, &fv->be.ifindex)))
			be = &fv->be;
	}
	if (!be) {
		__u32 slot = 0;
		be = pick(pub, local_only, &slot);
		if (!be)
			return TC_ACT_OK; // no task: nftables has no rule either, the node refuses
		struct flow_val nv = {.id = pub->id, .slot = slot, .be = *be};
		bpf_map_update_elem(&flows, &fk, &nv, BPF_ANY);
		count_connection(pport, pk.proto, be);
	}
	if (be->kind == KIND_REMOTE) {
		skb->mark = MESH_MARK | be->index;
		return TC_ACT_OK;
	}
	if (be->kind != KIND_LOCAL)
		return TC_ACT_UNSPEC;

	__u32 task = be->addr, ifindex = be->ifindex;
	__u16 tport = be->port;
	struct flow_key rk = {
		.saddr = task,
		.daddr = client,
		.sport = tport,
		.dport = cport,
		.proto = fk.proto,
	};
	struct reply_val rv = {.addr = node, .port = pport, .ifindex = skb->ifindex};
	struct reply_val *old = bpf_map_lookup_elem(&replies, &rk);
	if (!old || old->addr != node || old->port != pport || old->ifindex != skb->ifindex)
		bpf_map_update_elem(&replies, &rk, &rv, BPF_ANY);

	if (forwarded) {
		// The mark means something only between nodes: cleared, as nftables did.
		__u16 old_word = *(__u16 *)ip;
		__u8 new_tos = tos & 0x3;
		if (bpf_skb_store_bytes(skb, IP_TOS_OFF, &new_tos, 1, 0))
			return TC_ACT_SHOT;
		__u16 new_word = bpf_htons((4 << 12) | (5 << 8) | new_tos);
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_word, new_word, 2))
			return TC_ACT_SHOT;
	}
	__u8 mac[6];
	__builtin_memcpy(mac, be->mac, sizeof(mac));
	if (rewrite(skb, &p, IP_DST_OFF, node, task, L4_OFF + 2, pport, tport))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), mac, sizeof(mac), 0))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(ifindex, 0);
}

SEC("classifier")
int mesh_reply(struct __sk_buff *skb)
{
	struct parsed p;
	if (!parse(skb, &p))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = p.ip;
	struct flow_key rk = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = p.ports[0],
		.dport = p.ports[1],
		.proto = ip->protocol,
	};
	struct reply_val *rv = bpf_map_lookup_elem(&replies, &rk);
	if (!rv)
		return TC_ACT_UNSPEC;
	__u32 node = rv->addr, ifindex = rv->ifindex;
	__u16 pport = rv->port;
	if (rewrite(skb, &p, IP_SRC_OFF, rk.saddr, node, L4_OFF, rk.sport, pport))
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}
