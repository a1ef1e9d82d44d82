"""The tests' one kit: each helper exists once, under one name.

- ``dataplane``: transports (and the ``transport_cls``/``make_node`` fixtures), route tables,
  descriptors, recording inboxes, bounded waiting and stream comparison;
- ``kernel``: the sk_msg plane's raw sockets and counters, and the BPF objects a node owns;
- ``nodes``: a running node's ``node.json`` (through spright's own reader), its gauges and
  processes, and the ``spright`` command;
- ``worker``: one real ``Worker`` in the test's process, driven descriptor by descriptor;
- ``boutique``: the Online Boutique's shoppers and scenarios (in-process, on a node, in a pod);
- ``wire``: raw HTTP/1.1 over a plain socket (the test, not a client library, decides the bytes);
- ``otlp``: a real OTLP/HTTP trace receiver, decoding what an exporter sent as a collector does;
- ``traces``: assembled traces of a known shape (spright.data.traces), for what consumes them.
"""
