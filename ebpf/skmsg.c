// S-SPRIGHT data plane: redirect runs of descriptors to the socket of their next hop.
//
// Every endpoint (gateway = 0, functions 1..N) owns one TCP loopback socket, connected to
// a dummy listener that never reads. This SK_MSG verdict runs on every sendmsg() of those
// sockets and moves descriptors straight into the receive queue of the destination
// socket: the TCP stack is never used. One verdict covers a RUN of consecutive descriptors
// bound for the same endpoint (bpf_msg_apply_bytes), and the kernel reruns us for the next
// run, so one send() carries a batch for many destinations at the cost of one redirect
// per destination change. Compiled by bcc (BPF_* map macros, helper declarations).
//
// spright/transport/skmsg.py passes every constant with -D: the map sizes, the markers
// NEXT_IN_CHAIN and NO_ROUTE, the kinds, and the descriptor layout as byte offsets
// (OFF_<FIELD>, from spright/descriptor.py, the one place the layout is written).
#define FIELD(d, type, name) (*(type *)((void *)(d) + OFF_##name))
#define SINK MAX_ENDPOINTS        // sockhash key of the supervisor's discard socket
#define ANONYMOUS MAX_ENDPOINTS   // counters entry of sockets no attach() registered
#define HEADER_BYTES (OFF_SENDER + 2)   // next_hop, sender: enough to route an explicit next_hop
#define ROUTING_BYTES (OFF_CHAIN + 2)   // ... flags, hop, chain: enough to route NEXT_IN_CHAIN

// Map 1: endpoint id -> that endpoint's socket. Each process inserts its own socket right
// after connect(); inserting again under the same id (a restarted worker) replaces the old
// socket, and a closed socket leaves the map by itself.
BPF_SOCKHASH(spright_socks, u32, MAX_ENDPOINTS + 1);

// Map 2: the static chains. Entry chain * MAX_HOPS + hop = endpoint at that position
// (the gateway, 0, ends every chain); NO_ROUTE past a chain's end and for unused chains.
BPF_ARRAY(spright_routes, u32, MAX_CHAINS * MAX_HOPS);

// Map 3: endpoint id -> security domain. 0 is the gateway's and may talk to every domain;
// two different nonzero domains may not talk: such descriptors bounce back to their sender
// marked REFUSED. Unknown ids hold NO_ROUTE (isolated).
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
    u64 domain_drops;    // sent by this endpoint to another security domain (bounced as REFUSED)
    u64 bad_route;       // sent by this endpoint naming no endpoint / no route
};
BPF_PERCPU_ARRAY(spright_stats, struct counters, MAX_ENDPOINTS + 1);

// Map 6: live instances of the functions that may have several (or none), in two groups:
// the stable instances and a canary (a rollout's new revision). Entry f (a function id):
// how many of each are live, the stable group's count in the low GROUP_BITS, the canary's
// above it, and above both the canary's share of picks in percent; 0 for a function served
// by its own endpoint only, NO_ROUTE when none is live (the first gateway's activator holds
// its work meanwhile). Entry MAX_ENDPOINTS + f * MAX_INSTANCES + i: the endpoint id of its
// i-th stable instance; MAX_ENDPOINTS * MAX_INSTANCES further on, of its i-th canary. The
// supervisor writes the ids first, then the counts.
BPF_ARRAY(spright_instances, u32, MAX_ENDPOINTS + 2 * MAX_ENDPOINTS * MAX_INSTANCES);

// Map 7: per CPU and function, whose turn it is (round robin over the live instances of
// the stable group at f, of the canary at MAX_ENDPOINTS + f).
BPF_PERCPU_ARRAY(spright_turns, u32, 2 * MAX_ENDPOINTS);

// Map 8: gateway process index -> its endpoint id. A request id's top bits name the gateway
// that owns it; the answer of its chain (RESPONSE, ERROR) goes there, not to gateway 0.
BPF_ARRAY(spright_gateways, u32, MAX_GATEWAYS);

// Map 9: descriptors in flight at each endpoint, as the kernel sees them: plus what was
// redirected into its socket (or bounced back to it), minus what its socket sent; notices
// (READY, DOWN) do not count. A handler hands on, calls or answers one descriptor per
// descriptor it was given. Shared by all CPUs (atomic adds); a worker zeroes its entry when it
// registers its socket. Kept only under LEAST_IN_FLIGHT.
BPF_ARRAY(spright_load, s64, MAX_ENDPOINTS);

// The endpoint a descriptor goes to: next_hop itself, or its chain's entry at `hop`.
static __always_inline u32 resolve(void *d) {
    u32 next_hop = FIELD(d, u32, NEXT_HOP);
    if (next_hop != NEXT_IN_CHAIN)
        return next_hop < MAX_ENDPOINTS ? next_hop : NO_ROUTE;
    u32 hop = FIELD(d, u8, HOP), chain = FIELD(d, u16, CHAIN);
    if (chain >= MAX_CHAINS || hop >= MAX_HOPS)
        return NO_ROUTE;
    u32 key = chain * MAX_HOPS + hop;
    u32 *target = spright_routes.lookup(&key);
    return target ? *target : NO_ROUTE;
}

// Requests and calls name a function; it is their receiver that the kernel picks among
// the function's live instances. Replies, responses and notices name an exact endpoint.
static __always_inline bool picks_instance(void *d) {
    u8 kind = FIELD(d, u8, FLAGS) & KIND_MASK;
    return kind == REQUEST || kind == CALL;
}

// One of `function`'s live instances (the function's own endpoint when it has no instance
// table entry, the first gateway when none is live). First the group: the canary for its
// share of picks (a fresh random draw each, or always while no stable instance is live),
// else the stable one. Then within the group, round robin per CPU; under LEAST_IN_FLIGHT,
// of the instance whose turn it is and the next one, the one with fewer descriptors in
// flight (two choices, as Envoy's least_request: exact for two instances, and no loop for
// the verifier to walk). `spread` tells whether there was a choice: then each descriptor is
// picked for on its own.
static __always_inline u32 instance_of(u32 function, bool *spread) {
    *spread = false;
    if (function >= MAX_ENDPOINTS)
        return function;
    u32 *live = spright_instances.lookup(&function);
    u32 counts = live ? *live : 0;
    if (counts == NO_ROUTE)
        return 0;  // the activator
    u32 count = counts & ((1 << GROUP_BITS) - 1), canary = (counts >> GROUP_BITS) & ((1 << GROUP_BITS) - 1);
    u32 share = counts >> (2 * GROUP_BITS);
    *spread = count + canary > 1;
    u32 base = MAX_ENDPOINTS + function * MAX_INSTANCES, group = function;
    if (canary && (count == 0 || bpf_get_prandom_u32() % 100 < share)) {
        count = canary;
        base += MAX_ENDPOINTS * MAX_INSTANCES;
        group += MAX_ENDPOINTS;
    }
    u32 *turn = spright_turns.lookup(&group);
    if (count == 0 || count > MAX_INSTANCES || !turn)
        return function;
    u32 first = *turn % count;
    *turn += 1;
    u32 key = base + first;
    u32 *endpoint = spright_instances.lookup(&key);
    u32 pick = endpoint ? *endpoint : function;
#if LEAST_IN_FLIGHT
    if (count > 1) {
        key = base + (first + 1) % count;
        u32 *next = spright_instances.lookup(&key);
        u32 other = next ? *next : pick;
        s64 *mine = spright_load.lookup(&pick);
        s64 *theirs = spright_load.lookup(&other);
        if (mine && theirs && *theirs < *mine)
            pick = other;
    }
#endif
    return pick;
}

// Descriptors in flight at `endpoint` change by `delta` (LEAST_IN_FLIGHT only).
static __always_inline void add_load(u32 endpoint, s64 delta) {
#if LEAST_IN_FLIGHT
    s64 *load = spright_load.lookup(&endpoint);
    if (load)
        __sync_fetch_and_add(load, delta);
#endif
}

// The gateway process an answer for the gateway goes to: the owner of its request. One mask
// test for the kinds that answer it (a branch per kind made the verifier's walk too long).
#define ANSWER_KINDS ((1u << RESPONSE) | (1u << ERROR) | (1u << PART) | (1u << END))
static __always_inline u32 owner_of(void *d) {
    u8 kind = FIELD(d, u8, FLAGS) & KIND_MASK;
    u32 owner = FIELD(d, u32, REQUEST_ID) >> GATEWAY_SHIFT;
    if (!((1u << kind) & ANSWER_KINDS) || owner == 0 || owner >= MAX_GATEWAYS)
        return 0;
    u32 *endpoint = spright_gateways.lookup(&owner);
    return endpoint && *endpoint ? *endpoint : 0;
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

// May `sender` hand descriptors to `target`? The gateway's domain (0) talks to every
// domain; other domains only to themselves; unknown endpoints to nobody.
static __always_inline bool same_domain(u32 sender, u32 target) {
    if (sender == ANONYMOUS)
        return false;
    u32 *from = spright_domains.lookup(&sender);
    u32 *to = spright_domains.lookup(&target);
    return from && to && *from != NO_ROUTE && *to != NO_ROUTE && (*from == *to || *from == 0 || *to == 0);
}

// The verdict for a run: redirect (to the target, or back to the sender when the run was
// refused) and counters.
static __always_inline int deliver(struct sk_msg_md *msg, u32 sender, u32 target, bool refused, u32 run,
                                   u32 notices, u64 bytes) {
    struct counters *c = spright_stats.lookup(&sender);
    if (c) {
        c->sent += run;
        c->bytes_sent += bytes;
    }
    add_load(sender, -(s64)(run - notices));
    if (target == NO_ROUTE) {
        if (c)
            c->bad_route += run;
        return to_sink(msg, c, run);
    }
    if (refused) {  // the run already says REFUSED and names its sender: back it goes
        if (c)
            c->domain_drops += run;
        add_load(sender, run);
        int verdict = spright_socks.msg_redirect_hash(msg, &sender, BPF_F_INGRESS);
        return verdict == SK_PASS ? verdict : to_sink(msg, c, run);
    }

    // SK_PASS once the target socket is chosen; SK_DROP when the target is not attached.
    int verdict = spright_socks.msg_redirect_hash(msg, &target, BPF_F_INGRESS);
    struct counters *t = spright_stats.lookup(&target);
    if (t) {
        if (verdict == SK_PASS) {
            t->received += run;
            t->bytes_received += bytes;
            add_load(target, run - notices);
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
    // never see NEXT_IN_CHAIN nor a forged sender; a run for another security domain is
    // rewritten into REFUSED descriptors addressed to the sender itself. The verifier walks
    // this loop iteration by iteration, within its 1M-instruction budget at MAX_RUN = 256.
    // A run also shares whether it picks an instance (requests and calls to one function
    // do); when the function has several live instances, the run ends after one descriptor,
    // so that the next one is picked for anew.
    u32 address = NO_ROUTE, target = NO_ROUTE;
    bool picking = false, spread = false, refused = false;
    u32 run = 0, notices = 0;
    u64 bytes = 0;
    void *d = data;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_RUN; i++) {
        if (d + DESCRIPTOR_SIZE > data_end)
            break;
        u32 t = resolve(d);
        if (t == 0)
            t = owner_of(d);
        bool picks = t != NO_ROUTE && picks_instance(d);
        if (i == 0) {
            address = t;
            picking = picks;
            target = picks ? instance_of(t, &spread) : t;
            refused = target != NO_ROUTE && !same_domain(sender, target);
        } else if (t != address || picks != picking || spread)
            break;
        if (refused) {
            FIELD(d, u32, NEXT_HOP) = sender;
            FIELD(d, u8, FLAGS) = (FIELD(d, u8, FLAGS) & ~KIND_MASK) | REFUSED;
        } else if (t != NO_ROUTE)
            FIELD(d, u32, NEXT_HOP) = t;
        FIELD(d, u16, SENDER) = sender;
        u8 kind = FIELD(d, u8, FLAGS) & KIND_MASK;
        notices += kind == READY || kind == DOWN;
        bytes += FIELD(d, u32, LENGTH);
        d += DESCRIPTOR_SIZE;
        run++;
    }
    if (run == 0) {
        // A short write cut the first descriptor: route it on what we have. Its remaining
        // bytes, sent later, follow this verdict without rerunning us. Too short to be
        // rewritten reliably, a refused one goes to the sink (counted as a domain drop).
        run = 1;
        if (data + HEADER_BYTES > data_end) {
            sender = ANONYMOUS;  // too short to read: counted as a bad route, discarded
        } else {
            target = FIELD(data, u32, NEXT_HOP);
            if (target == NEXT_IN_CHAIN && data + ROUTING_BYTES <= data_end)
                target = resolve(data);
            else if (target >= MAX_ENDPOINTS)
                target = NO_ROUTE;  // includes NEXT_IN_CHAIN cut before its chain field
            if (target != NO_ROUTE && !same_domain(sender, target)) {
                struct counters *c = spright_stats.lookup(&sender);
                if (c) {
                    c->sent += run;
                    c->domain_drops += run;
                }
                bpf_msg_apply_bytes(msg, DESCRIPTOR_SIZE);
                return to_sink(msg, c, run);
            }
            if (target != NO_ROUTE)
                FIELD(data, u32, NEXT_HOP) = target;
            FIELD(data, u16, SENDER) = sender;
        }
    }
    bpf_msg_apply_bytes(msg, run * DESCRIPTOR_SIZE);
    return deliver(msg, sender, target, refused, run, notices, bytes);
}
