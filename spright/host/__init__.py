"""host: what a node shares on its machine: the shared-memory slot pools (one per security
domain), the counter table, the live-instances file, node.json and the runtime directory, a
worker's sandbox, process names. May import spright.data only."""
