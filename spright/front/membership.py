"""Instance membership: one state machine for the life of every instance of every function.

An instance is a worker process serving one function at one endpoint
(``RouteTable.instance_endpoints``). Its life, as the first gateway's process records it::

    gone ──start──▶ starting ──READY──▶ ready ──admit──▶ live ──retire──▶ retiring ──exit──▶ gone
                        │                  │                │                                 ▲
                        └───────exit───────┴──────exit──────┴──────────▶ died ──start─────────┘

- **starting**: its process was started (``spright run`` spawned it); it has not announced itself.
- **ready**: it announced itself (a READY descriptor): it serves what reaches it.
- **live**: it is in its function's live set, so the data plane sends it new work (the file of
  ``spright.host.instances`` and, on skmsg, the kernel's map: ``Transport.set_live``). Today an
  instance is admitted as soon as it is ready; a reload or a revision may hold it at ready.
- **retiring**: out of the live set (no new work), finishing what it holds before it is stopped.
- **gone**: not running, as intended (never started, or retired and exited).
- **died**: its process ended while it was meant to serve (a crash, or a joined worker's
  connection ended); it may start again.

A worker started on its own (pod mode, ``spright worker``) and TestClient's workers announce
themselves without a start: READY is taken from gone and died too.

A function's live set may be **split** (``split``: a canary rollout): the endpoints it names
form the canary group, which gets ``share`` percent of the function's new requests and calls
while its other live instances get the rest (``LiveInstances.pick``). The split is a partition
of whatever is live, kept as instances come and go: a canary instance is admitted to the canary
group, any other to the stable one; while one group has no live instance the other gets
everything. ``unsplit`` ends it: everything live is one group again. The states above do not
change: a split only says which group a live instance is in.

A **function** is down while no instance of it serves after one died: its requests are refused
(503) and callers told (``Listener``), until one is ready again. Every consequence for requests
(failing those in flight, sweeping a dead worker's slots, telling the other processes) is the
``Listener``'s: this module only keeps the states and the live sets, and says what changed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from spright.data.table import RouteTable
from spright.transport.base import Transport

log = logging.getLogger("spright.front.membership")


class State(enum.Enum):
    GONE = "gone"
    STARTING = "starting"
    READY = "ready"
    LIVE = "live"
    RETIRING = "retiring"
    DIED = "died"


# the moves each state allows; any other is refused (logged, ignored)
MOVES: dict[State, frozenset[State]] = {
    State.GONE: frozenset({State.STARTING, State.READY}),
    State.STARTING: frozenset({State.READY, State.RETIRING, State.DIED}),
    State.READY: frozenset({State.LIVE, State.RETIRING, State.DIED}),
    State.LIVE: frozenset({State.RETIRING, State.DIED}),
    State.RETIRING: frozenset({State.GONE, State.DIED}),
    State.DIED: frozenset({State.STARTING, State.READY}),
}
# announced and not ended: it may hold slots and send answers, and hears about other functions
SERVING = frozenset({State.READY, State.LIVE, State.RETIRING})


class Listener(Protocol):
    """What the node does when membership changes (the first gateway: spright.front.roles)."""

    def became_live(self, function_id: int) -> None:
        """``function_id`` has a live instance after having none (what waited for it may go)."""

    def died(self, endpoint: int, function_down: bool) -> None:
        """The instance at ``endpoint`` died; ``function_down``: no instance of its function serves."""

    def gone(self, endpoint: int) -> None:
        """The retired instance at ``endpoint`` exited."""

    def back(self, function_id: int) -> None:
        """``function_id``, down, has an instance ready again."""


class Membership:
    """The state of every instance of the node, and each function's live set."""

    def __init__(self, table: RouteTable, transport: Transport, listener: Listener) -> None:
        """``transport``: the data plane whose live sets this writes (``Transport.set_live``);
        the sets start empty: an instance joins once it is ready."""
        self.table = table
        self._transport = transport
        self._listener = listener
        self._states = {e: State.GONE for f in table.functions for e in table.instance_endpoints(f.id)}
        self.down: set[int] = set()  # functions with no instance serving since one died
        self._started: dict[int, float] = {}  # endpoint -> when its process's start began (monotonic)
        self._changed: asyncio.Event | None = None  # set at each move while someone waits
        self._splits: dict[int, tuple[frozenset[int], int]] = {}  # function id -> (canary endpoints, share)
        self.held: set[int] = set()  # endpoints kept at ready once they announce (``hold``)
        transport.instances.create()

    def state(self, endpoint: int) -> State:
        return self._states[endpoint]

    def name(self, endpoint: int) -> str:
        """The instance's name: its function's, then ``#N`` for any instance but the first."""
        instance = self.table.instance_endpoints(self.table.function_of(endpoint)).index(endpoint)
        return self.table.name_of(endpoint) + (f"#{instance}" if instance else "")

    def endpoints(self, *states: State) -> list[int]:
        """The endpoints in any of ``states``, in order."""
        return [e for e, state in self._states.items() if state in states]

    def serving(self, function_id: int) -> int:
        """How many instances of ``function_id`` serve (ready, live or retiring)."""
        return sum(self._states[e] in SERVING for e in self.table.instance_endpoints(function_id))

    def live(self, function_id: int) -> tuple[int, ...]:
        """The live set of ``function_id``: where its new work goes."""
        return self._transport.instances.get(function_id)

    def split(self, function_id: int, canary: Iterable[int], share: int) -> None:
        """Of ``function_id``'s instances, ``canary`` form a group that gets ``share`` percent
        (0..100) of its requests and calls from now on, the others the rest."""
        group = frozenset(canary)
        if not 0 <= share <= 100 or not group <= set(self.table.instance_endpoints(function_id)):
            raise ValueError(f"not a split of {self.table.name_of(function_id)!r}: canary {sorted(group)} at "
                             f"{share}% (its endpoints: {self.table.instance_endpoints(function_id)})")
        self._splits[function_id] = (group, share)
        self._write_live(function_id, self.live(function_id))

    def unsplit(self, function_id: int) -> None:
        """Everything live in ``function_id`` is one group again."""
        if self._splits.pop(function_id, None) is not None:
            self._write_live(function_id, self.live(function_id))

    # -- events ----------------------------------------------------------------------------
    def starting(self, endpoint: int, since: float | None = None) -> None:
        """Its process was started (``since``: when its start began, time.monotonic())."""
        if self._move(endpoint, State.STARTING) and since is not None:
            self._started[endpoint] = since

    def announced(self, endpoint: int) -> bool:
        """READY from the instance: it serves, and is admitted to the live set. False when it
        is not expected to announce itself (retiring, or ready already): ignored."""
        if not self._move(endpoint, State.READY):
            return False
        if (since := self._started.pop(endpoint, None)) is not None:  # how long a start takes (bench.instances)
            log.info("spright: %s ready %.1f ms after its process's start began", self.name(endpoint),
                     (time.monotonic() - since) * 1e3)
        function_id = self.table.function_of(endpoint)
        if function_id in self.down:
            self.down.discard(function_id)
            self._listener.back(function_id)
        if endpoint not in self.held:
            self.admit(endpoint)
        return True

    def hold(self, endpoints: Iterable[int]) -> None:
        """Keep these at ready when they announce themselves, out of the live set, until
        ``release``: a stateful function's next revision, admitted only once the old one left."""
        self.held.update(endpoints)

    def release(self, endpoints: Iterable[int]) -> None:
        """Admit those of ``endpoints`` that are ready; the others as they announce themselves."""
        for endpoint in endpoints:
            self.held.discard(endpoint)
            if self._states[endpoint] == State.READY:
                self.admit(endpoint)

    def admit(self, endpoint: int) -> None:
        """A ready instance joins its function's live set."""
        if self._move(endpoint, State.LIVE):
            self._set_live(endpoint, True)

    def retire(self, endpoint: int) -> None:
        """Out of the live set now (no new work); it finishes what it holds, then exits."""
        if self._move(endpoint, State.RETIRING):
            self._set_live(endpoint, False)

    def exited(self, endpoint: int) -> State:
        """Its process ended: gone if it was retiring, else died. Returns the new state."""
        state = self._states[endpoint]
        if state in (State.GONE, State.DIED):
            return state
        if state == State.RETIRING:
            self._move(endpoint, State.GONE)
            self._listener.gone(endpoint)
            return State.GONE
        self._move(endpoint, State.DIED)
        self._set_live(endpoint, False)
        function_id = self.table.function_of(endpoint)
        function_down = not self.serving(function_id)
        if function_down:
            self.down.add(function_id)
        self._listener.died(endpoint, function_down)
        return State.DIED

    async def wait_serving(self, endpoints: Iterable[int], timeout: float) -> None:
        """Until every one of ``endpoints`` serves; RuntimeError naming those that do not."""
        wanted = set(endpoints)
        self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                while not all(self._states[e] in SERVING for e in wanted):
                    await self._changed.wait()
                    self._changed.clear()
        except TimeoutError:
            missing = ", ".join(self.name(e) for e in sorted(wanted) if self._states[e] not in SERVING)
            raise RuntimeError(f"workers did not become ready within {timeout:g}s: {missing}") from None
        finally:
            self._changed = None

    # -- internals -------------------------------------------------------------------------
    def _move(self, endpoint: int, to: State) -> bool:
        state = self._states[endpoint]
        if to not in MOVES[state]:
            if state != to:
                log.warning("membership: %s cannot go from %s to %s; ignored", self.name(endpoint), state.value,
                            to.value)
            return False
        self._states[endpoint] = to
        if self._changed is not None:
            self._changed.set()
        return True

    def _set_live(self, endpoint: int, live: bool) -> None:
        function_id = self.table.function_of(endpoint)
        current = self.live(function_id)
        wanted = tuple(sorted({*current, endpoint})) if live else tuple(e for e in current if e != endpoint)
        if wanted != current:
            self._write_live(function_id, wanted)
            if not current:
                self._listener.became_live(function_id)

    def _write_live(self, function_id: int, live: tuple[int, ...]) -> None:
        """``live`` (sorted) as the function's live set, partitioned as its split says."""
        canary, share = self._splits.get(function_id, (frozenset(), 0))
        self._transport.set_live(function_id, tuple(e for e in live if e not in canary),
                                 tuple(e for e in live if e in canary), share)
