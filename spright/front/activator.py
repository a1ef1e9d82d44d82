"""The activator: where requests and calls for a function with no live instance wait.

A function whose autoscaler may take it to zero instances (``ScalePolicy(min_instances=0)``)
has, once idle, no worker at all. The data plane then delivers what is addressed to it to the
first gateway instead (the kernel program on skmsg, ``Domains`` on the userspace planes), with
``next_hop`` still naming the function, as Knative puts its activator in the path of a revision
scaled to zero. The first gateway's ``Activator`` parks those descriptors, asks the supervisor for
an instance (``wake``), and sends them on once the instance joins the live set (``release``). What
arrives for a function that is down (crashed, no instance left) is not parked: its requests were
answered 502 already.

A parked call is sent on under the gateway's own name, so its answer comes back here: the
activator relays that REPLY (or ERROR) to the instance that made the call. A streamed call's
(``ctx.call_stream``) parts come back here too: each PART and the END are relayed to the
caller under the gateway's name, and the caller's CREDIT and CANCEL to the instance that sends
the parts (spright.worker.streams keys its streams by their reader: the gateway, here).

Life cycle: ``park`` every REQUEST or CALL the gateway receives (for a function not down); ``release`` when an instance
of the function joins the live set; ``relay`` for every REPLY, ERROR, PART and END the gateway receives, ``relay_back``
for every CREDIT and CANCEL.
"""

from __future__ import annotations

from collections.abc import Callable

from spright.data.descriptor import CALL, CANCEL, IN_PARTS, KIND_MASK, PART, Descriptor

MAX_PARKED = 10_000  # per function: past this, what arrives for it is dropped (the gateway logs it)
MAX_CALLS = 100_000  # calls sent on whose answer is awaited; past this the oldest is forgotten


class Activator:
    def __init__(self, endpoint: int, send: Callable[[bytes], None], wake: Callable[[int], None]) -> None:
        """``endpoint``: the gateway's own (parked calls are sent on under it); ``send``: the
        gateway's outbox; ``wake``: asks for an instance of a function id."""
        self._endpoint = endpoint
        self._send = send
        self._wake = wake
        self._parked: dict[int, list[Descriptor]] = {}  # function id -> descriptors, in arrival order
        self._callers: dict[tuple[int, int], int] = {}  # (request id, call id) -> the endpoint that called
        # a streamed call's -> the endpoint sending its parts (its function's until a part names the instance)
        self._producers: dict[tuple[int, int], int] = {}

    def waiting(self, function_id: int) -> int:
        """Descriptors parked for ``function_id``: demand the autoscaler must see."""
        return len(self._parked.get(function_id, ()))

    def park(self, function_id: int, d: Descriptor) -> bool:
        """Hold ``d`` until ``function_id`` has an instance; False (dropped) when too many wait
        for it already."""
        parked = self._parked.setdefault(function_id, [])
        if len(parked) >= MAX_PARKED:
            return False
        parked.append(d)
        if len(parked) == 1:
            self._wake(function_id)
        return True

    def release(self, function_id: int) -> None:
        """An instance of ``function_id`` serves: send on what waited for it."""
        for d in self._parked.pop(function_id, ()):
            if d.flags & KIND_MASK == CALL:
                self._callers[d.request_id, d.call_id] = d.sender
                if d.status == IN_PARTS:
                    self._producers[d.request_id, d.call_id] = function_id
                if len(self._callers) > MAX_CALLS:  # answers that never came (their request timed out)
                    self._producers.pop(oldest := next(iter(self._callers)), None)
                    del self._callers[oldest]
                d = d._replace(sender=self._endpoint)
            self._send(d._replace(next_hop=function_id).pack())

    def relay(self, d: Descriptor) -> bool:
        """The answer to a call sent on from here (a part of it, its END) goes to its caller;
        False when ``d`` answers no such call."""
        key = (d.request_id, d.call_id)
        kind = d.flags & KIND_MASK
        caller = self._callers.get(key) if kind == PART else self._callers.pop(key, None)
        if caller is None:
            return False
        if kind == PART:  # the caller's CREDIT and CANCEL come here: they go on to the instance streaming
            self._producers[key] = d.sender
            d = d._replace(sender=self._endpoint)
        elif self._producers:
            self._producers.pop(key, None)
        self._send(d._replace(next_hop=caller).pack())
        return True

    def relay_back(self, d: Descriptor) -> bool:
        """A caller's CREDIT or CANCEL for the parts of a call sent on from here, to the
        instance that sends them; False for a stream that is no such call's."""
        key = (d.request_id, d.call_id)
        producer = self._producers.get(key)
        if producer is None:
            return False
        if d.flags & KIND_MASK == CANCEL:
            del self._producers[key]
        self._send(d._replace(next_hop=producer, sender=self._endpoint).pack())
        return True
