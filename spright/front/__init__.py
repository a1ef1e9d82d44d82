"""front: the node's front door: HTTP/1.1 (httptools), requests on their way into the pool, the
gateway that sends them down their chains and answers, its role in the node (instance membership
and the activator in the first gateway process), ``/metrics``. May import
spright.routing and the layers below it."""
