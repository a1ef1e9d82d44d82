// S-SPRIGHT data plane: redirect each 32-byte descriptor to the socket of its next hop.
//
// Every endpoint (gateway = 0, functions 1..N) owns one TCP loopback socket, connected to
// a dummy listener that never reads. This SK_MSG verdict runs on every sendmsg() of those
// sockets, once per descriptor, and moves the descriptor straight into the receive queue
// of the destination socket: the TCP stack is never used. Compiled by bcc, which supplies
// the BPF_* map macros and helper declarations; spright/transport/skmsg.py passes
// -DMAX_ENDPOINTS and -DDESCRIPTOR_SIZE.

// Map 1: endpoint id -> that endpoint's socket. Each process inserts its own socket right
// after connect(); inserting again under the same id (a restarted worker) replaces the old
// socket, and a closed socket leaves the map by itself. Key SINK is the supervisor's sink.
#define SINK MAX_ENDPOINTS
BPF_SOCKHASH(spright_socks, u32, MAX_ENDPOINTS + 1);

// Map 2: per-CPU counters, indexed by endpoint id; userspace sums the CPUs. Entry
// MAX_ENDPOINTS counts what names no sender: headers cut by a split write, bad sender ids.
struct counters {
    u64 sent;       // descriptors whose sender field is this endpoint
    u64 received;   // descriptors redirected into this endpoint's socket
    u64 dropped;    // descriptors addressed to this endpoint while no socket was attached
                    // (discarded via the sink)
    u64 malformed;  // descriptors from this endpoint naming no valid next hop (discarded)
};
BPF_PERCPU_ARRAY(spright_stats, struct counters, MAX_ENDPOINTS + 1);

// Undeliverable descriptors go to the sink socket, whose reader discards them. Returning
// SK_DROP instead would fail the whole send() with EACCES and lose the rest of the batch.
static __always_inline int to_sink(struct sk_msg_md *msg) {
    u32 sink = SINK;
    return spright_socks.msg_redirect_hash(msg, &sink, BPF_F_INGRESS);
}

// Descriptor layout (spright/descriptor.py): u32 next_hop, u16 sender, ... (little-endian).
#define HEADER_SIZE 6
int spright_msg(struct sk_msg_md *msg) {
    // A verdict covers exactly one descriptor, so one send() may carry a batch of
    // descriptors for different destinations: the kernel reruns us for the next one.
    // It also covers the rest of a descriptor that a short write split: those bytes,
    // sent later, follow the same verdict without rerunning us.
    bpf_msg_apply_bytes(msg, DESCRIPTOR_SIZE);
    // data..data_end covers only the first scatterlist element: make the header linear.
    bpf_msg_pull_data(msg, 0, HEADER_SIZE, 0);
    void *data = (void *)(long)msg->data;
    void *data_end = (void *)(long)msg->data_end;
    u32 anonymous = MAX_ENDPOINTS;
    struct counters *c;
    if (data + HEADER_SIZE > data_end) {  // a split left fewer bytes than the header
        c = spright_stats.lookup(&anonymous);
        if (c)
            c->malformed++;
        return to_sink(msg);
    }

    u32 next_hop = *(u32 *)data;
    u32 sender = *(u16 *)(data + 4);
    c = spright_stats.lookup(sender < MAX_ENDPOINTS ? &sender : &anonymous);
    if (c) {
        c->sent++;
        if (next_hop >= MAX_ENDPOINTS)
            c->malformed++;
    }
    if (next_hop >= MAX_ENDPOINTS)
        return to_sink(msg);

    // SK_PASS once the target socket is chosen; SK_DROP when next_hop is not attached.
    int verdict = spright_socks.msg_redirect_hash(msg, &next_hop, BPF_F_INGRESS);
    c = spright_stats.lookup(&next_hop);
    if (c) {
        if (verdict == SK_PASS)
            c->received++;
        else
            c->dropped++;
    }
    return verdict == SK_PASS ? verdict : to_sink(msg);
}
