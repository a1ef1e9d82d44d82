// S-SPRIGHT data plane: redirect runs of 32-byte descriptors to the socket of their next hop.
//
// Every endpoint (gateway = 0, functions 1..N) owns one TCP loopback socket, connected to
// a dummy listener that never reads. This SK_MSG verdict runs on every sendmsg() of those
// sockets and moves descriptors straight into the receive queue of the destination
// socket: the TCP stack is never used. One verdict covers a RUN of consecutive descriptors
// bound for the same endpoint (bpf_msg_apply_bytes), and the kernel reruns us for the next
// run, so one send() carries a batch for many destinations at the cost of one redirect
// per destination change. Compiled by bcc (BPF_* map macros, helper declarations);
// spright/transport/skmsg.py passes the -D sizes.
//
// Descriptor layout (spright/descriptor.py, little-endian): u32 next_hop @0, u16 sender @4,
// u8 flags @6, u8 hop @7, u16 chain @8, ..., u32 length @16, ...

#define NEXT_IN_CHAIN 0xFFFFFFFF  // next_hop meaning "look up (chain, hop) in spright_routes"
#define NO_ROUTE 0xFFFFFFFF       // route/target that resolves to no endpoint
#define SINK MAX_ENDPOINTS        // sockhash key of the supervisor's discard socket
#define ANONYMOUS MAX_ENDPOINTS   // counters entry of sockets no attach() registered
#define HEADER_BYTES 6            // next_hop, sender: enough to route an explicit next_hop
#define ROUTING_BYTES 10          // ... flags, hop, chain: enough to route NEXT_IN_CHAIN

// Map 1: endpoint id -> that endpoint's socket. Each process inserts its own socket right
// after connect(); inserting again under the same id (a restarted worker) replaces the old
// socket, and a closed socket leaves the map by itself.
BPF_SOCKHASH(spright_socks, u32, MAX_ENDPOINTS + 1);

// Map 2: the static chains. Entry chain * MAX_HOPS + hop = endpoint at that position
// (the gateway, 0, ends every chain); NO_ROUTE past a chain's end and for unused chains.
BPF_ARRAY(spright_routes, u32, MAX_CHAINS * MAX_HOPS);

// Map 3: endpoint id -> security domain. 0 is the gateway's and may talk to every domain;
// two different nonzero domains may not talk. Unknown ids hold NO_ROUTE (isolated).
BPF_ARRAY(spright_domains, u32, MAX_ENDPOINTS);

// Map 4: local TCP port -> endpoint id: who is sending, as the kernel knows it. The
// descriptor's own sender field is never trusted (we overwrite it). attach() registers a
// socket's port before inserting it into spright_socks and removes it on close/replace.
BPF_HASH(spright_ports, u32, u32, MAX_ENDPOINTS);

// Map 5: per-CPU counters by endpoint id (userspace sums the CPUs). Entry ANONYMOUS counts
// what came from sockets no attach() registered, and headers cut too short to route.
struct counters {
    u64 sent;            // descriptors sent by this endpoint's socket
    u64 received;        // descriptors redirected into this endpoint's socket
    u64 bytes_sent;      // payload bytes they reference (sum of their length fields)
    u64 bytes_received;
    u64 dropped;         // addressed to this endpoint while no socket was attached
    u64 redirect_failed; // sent by this endpoint and not even the sink took them
    u64 domain_drops;    // sent by this endpoint to another security domain
    u64 bad_route;       // sent by this endpoint naming no endpoint / no route
};
BPF_PERCPU_ARRAY(spright_stats, struct counters, MAX_ENDPOINTS + 1);

// The endpoint a descriptor goes to: next_hop itself, or its chain's entry at `hop`.
static __always_inline u32 resolve(void *d) {
    u32 next_hop = *(u32 *)d;
    if (next_hop != NEXT_IN_CHAIN)
        return next_hop < MAX_ENDPOINTS ? next_hop : NO_ROUTE;
    u32 hop = *(u8 *)(d + 7), chain = *(u16 *)(d + 8);
    if (chain >= MAX_CHAINS || hop >= MAX_HOPS)
        return NO_ROUTE;
    u32 key = chain * MAX_HOPS + hop;
    u32 *target = spright_routes.lookup(&key);
    return target ? *target : NO_ROUTE;
}

// Undeliverable descriptors go to the sink socket, whose reader discards them. Returning
// SK_DROP instead would fail the whole send() with EACCES and lose the rest of the batch.
static __always_inline int to_sink(struct sk_msg_md *msg, struct counters *c, u32 run) {
    u32 sink = SINK;
    int verdict = spright_socks.msg_redirect_hash(msg, &sink, BPF_F_INGRESS);
    if (verdict != SK_PASS && c)
        c->redirect_failed += run;
    return verdict;
}

// The verdict for a run: domain check, redirect, counters.
static __always_inline int deliver(struct sk_msg_md *msg, u32 sender, u32 target, u32 run, u64 bytes) {
    struct counters *c = spright_stats.lookup(&sender);
    if (c) {
        c->sent += run;
        c->bytes_sent += bytes;
    }
    if (target == NO_ROUTE) {
        if (c)
            c->bad_route += run;
        return to_sink(msg, c, run);
    }
    // Security domains, judged on the kernel's idea of the sender: one check per run.
    u32 *from = spright_domains.lookup(&sender);
    u32 *to = spright_domains.lookup(&target);
    if (sender == ANONYMOUS || !from || !to || (*from != *to && *from != 0 && *to != 0)) {
        if (c)
            c->domain_drops += run;
        return to_sink(msg, c, run);
    }

    // SK_PASS once the target socket is chosen; SK_DROP when the target is not attached.
    int verdict = spright_socks.msg_redirect_hash(msg, &target, BPF_F_INGRESS);
    struct counters *t = spright_stats.lookup(&target);
    if (t) {
        if (verdict == SK_PASS) {
            t->received += run;
            t->bytes_received += bytes;
        } else
            t->dropped += run;
    }
    return verdict == SK_PASS ? verdict : to_sink(msg, c, run);
}

int spright_msg(struct sk_msg_md *msg) {
    u32 port = msg->local_port;  // host byte order (remote_port is network order)
    u32 *known = spright_ports.lookup(&port);
    u32 sender = known ? *known : ANONYMOUS;

    // data..data_end covers the first scatterlist element (up to a whole write of ours).
    // Only when that holds less than a descriptor, pull one descriptor linear; not always:
    // a pull narrows data..data_end to exactly the bytes pulled, which would end every
    // run after one descriptor. (Pulling also makes pages writable that sendpage/splice
    // shares with userspace; our sockets only ever sendmsg(), which copies into kernel
    // pages, so writing in place is safe.) Fails harmlessly when a split write left less.
    void *data = (void *)(long)msg->data;
    void *data_end = (void *)(long)msg->data_end;
    if (data + DESCRIPTOR_SIZE > data_end) {
        bpf_msg_pull_data(msg, 0, DESCRIPTOR_SIZE, 0);
        data = (void *)(long)msg->data;
        data_end = (void *)(long)msg->data_end;
    }

    // The run: descriptors that are whole in the linear data and resolve to the same
    // target. Each gets its concrete next_hop and true sender written in, so receivers
    // never see NEXT_IN_CHAIN nor a forged sender. The verifier walks this loop iteration
    // by iteration: ~200k of its 1M-instruction budget at MAX_RUN = 256.
    u32 target = NO_ROUTE;
    u32 run = 0;
    u64 bytes = 0;
    void *d = data;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_RUN; i++) {
        if (d + DESCRIPTOR_SIZE > data_end)
            break;
        u32 t = resolve(d);
        if (i == 0)
            target = t;
        else if (t != target)
            break;
        if (t != NO_ROUTE)
            *(u32 *)d = t;
        *(u16 *)(d + 4) = sender;
        bytes += *(u32 *)(d + 16);
        d += DESCRIPTOR_SIZE;
        run++;
    }
    if (run == 0) {
        // A short write cut the first descriptor: route it on what we have. Its remaining
        // bytes, sent later, follow this verdict without rerunning us.
        run = 1;
        if (data + HEADER_BYTES > data_end) {
            sender = ANONYMOUS;  // too short to read: counted as a bad route, discarded
        } else {
            target = *(u32 *)data;
            if (target == NEXT_IN_CHAIN && data + ROUTING_BYTES <= data_end)
                target = resolve(data);
            else if (target >= MAX_ENDPOINTS)
                target = NO_ROUTE;  // includes NEXT_IN_CHAIN cut before its chain field
            if (target != NO_ROUTE)
                *(u32 *)data = target;
            *(u16 *)(data + 4) = sender;
        }
    }
    bpf_msg_apply_bytes(msg, run * DESCRIPTOR_SIZE);
    return deliver(msg, sender, target, run, bytes);
}
