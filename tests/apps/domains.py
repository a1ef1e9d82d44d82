"""Two security domains: the shop may not call into payments; the gateway reaches both."""

import ctypes
import os
import struct
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from spright import App, CallError, Context

app = App("domains")


@app.function(domain="payments")
async def charge(ctx: Context) -> dict:
    return {"charged": ctx.json()["amount"]}


@app.function()
async def shop(ctx: Context) -> dict:
    """Calls across the domain boundary: the data plane must refuse it at once."""
    reply = await ctx.call("charge", {"amount": 5})
    return reply.json()


@app.function()
async def careful_shop(ctx: Context) -> dict:
    try:
        await ctx.call("charge", {"amount": 5})
    except CallError as exc:
        return {"refused": exc.status, "detail": exc.detail, "function": exc.function}
    return {"refused": None}


@app.function()
async def item(ctx: Context) -> dict:
    return {name: [type(value).__name__, str(value)] for name, value in ctx.params.items()}


app.route("/charge", charge, methods=["POST"], timeout=20)
app.route("/shop", shop, timeout=20)
app.route("/careful-shop", careful_shop, timeout=20)
app.route("/item/{n:int}/{price:float}/{rest:path}", item)


@app.function()
async def spy(ctx: Context) -> dict:
    """A hostile function of the shop's domain: tries every door into another domain's memory
    it is told of (segment names, /proc paths) and says what each attempt met."""
    met: dict[str, str] = {}
    for name in ctx.json()["segments"]:
        try:
            SharedMemory(name).close()
            met[name] = "opened"
        except OSError as exc:
            met[name] = type(exc).__name__
    for path in ctx.json()["paths"]:
        try:
            with open(path, "rb") as opened:
                opened.read(1)
            met[path] = "opened"
        except OSError as exc:
            met[path] = type(exc).__name__
    libc = ctypes.CDLL(None, use_errno=True)

    def tried(result: int) -> str:
        return "done" if result >= 0 else os.strerror(ctypes.get_errno())

    met["umount /dev/shm"] = tried(libc.umount2(b"/dev/shm", 2))
    for pid in ctx.json().get("ptrace", []):  # PTRACE_ATTACH: another process's memory
        met[f"ptrace {pid}"] = tried(attached := libc.ptrace(16, pid, None, None))
        if attached >= 0:  # a hole: let it go on at once (PTRACE_DETACH)
            libc.ptrace(17, pid, None, None)
    # bpf(2) BPF_PROG_LOAD of an sk_msg program (r0 = 0; exit), the data plane's kind: needs CAP_BPF
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    licence = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(struct.pack("<IIQQ", 16, 2, ctypes.addressof(insns),
                                                   ctypes.addressof(licence)) + bytes(104))
    met["bpf"] = tried(libc.syscall(321, 5, attr, 128))
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    met["CapEff"], met["CapBnd"] = status["CapEff"].strip(), status["CapBnd"].strip()
    return met


app.route("/spy", spy, methods=["POST"])
