"""node: a node's processes and how they make one: the supervisor, further gateways, worker
processes, pod mode's join, the control socket, scaling, loading the app. May import
spright.front and the layers below it."""
