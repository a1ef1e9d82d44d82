"""wrk driving and parsing: one Lua script sets the request and prints wrk's own histogram as
JSON from ``done()``, so no figure is scraped from wrk's human-readable table."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "BENCHJSON "

_LUA = """
wrk.method = "{method}"
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},'
    .. '"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int
    rps: float
    mean_us: float
    p50_us: int
    p90_us: int
    p99_us: int
    p999_us: int
    max_us: int
    errors: dict[str, int]
    client_cpu_s: float  # wrk's own CPU: on 2 cores the client competes with the server

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def write_script(method: str, body: bytes | None, directory: Path) -> Path:
    """A per-scenario Lua script; the body is passed as a Lua string literal (ASCII only)."""
    body_lua = ""
    if body is not None:
        body_lua = f'wrk.body = "{body.decode("ascii")}"\nwrk.headers["Content-Type"] = "application/octet-stream"'
    script = directory / f"{method.lower()}-{len(body or b'')}.lua"
    script.write_text(_LUA.format(method=method, body=body_lua, marker=MARKER))
    return script


def run_wrk(url: str, script: Path, connections: int, duration: float, timeout_s: float = 10.0) -> WrkResult:
    """Run ``wrk -t1`` and return its figures; raises when wrk fails or prints no JSON."""
    args = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(round(duration), 1)}s",
        f"--timeout={int(timeout_s)}s", "-s", str(script), url,
    ]
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}):\n{text}")
    data = json.loads(line[len(MARKER):])
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        duration_s=round(seconds, 3),
        requests=data["requests"],
        rps=round(data["requests"] / seconds, 1) if seconds else 0.0,
        mean_us=data["mean_us"],
        p50_us=data["p50_us"],
        p90_us=data["p90_us"],
        p99_us=data["p99_us"],
        p999_us=data["p999_us"],
        max_us=data["max_us"],
        errors=data["errors"],
        client_cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
    )


# Online Boutique's request mix for wrk: upstream's task weights (index 1, setCurrency 2,
# browseProduct 10, addToCart 2, viewCart 3, checkout 1) spread over the requests each task
# makes, the redirects a browser follows included (setCurrency -> GET /, POST /cart -> GET /cart):
# GET / 3, POST /setCurrency 2, GET /product/{id} 13, POST /cart 3, GET /cart 6, POST checkout 1.
# Each request carries one of ``sessions`` shoppers' cookie, so carts fill and get checked out.
_BOUTIQUE_LUA = """
local products = {{{products}}}
local currencies = {{{currencies}}}
local mix = {{}}
for kind, weight in pairs({{index = 3, currency = 2, product = 13, add = 3, cart = 6, checkout = 1}}) do
  for _ = 1, weight do mix[#mix + 1] = kind end
end
local form = {{["Content-Type"] = "application/x-www-form-urlencoded"}}
local order = "email=shopper%40example.com&street_address=1+Main+Street&zip_code=94043&city=Springfield"
  .. "&state=CA&country=United+States&credit_card_number=4432801561520454"
  .. "&credit_card_expiration_month=1&credit_card_expiration_year=2039&credit_card_cvv=672"
-- Shoppers of this wrk run only: a warm-up run and the measured one (LuaJIT's math.random is not
-- seeded: both draw the same sequence) must not share carts, or a checkout the warm-up left in
-- flight empties a cart the measured run has just filled (a 400 "your cart is empty").
local run = (tostring({{}}):match("0x(%x+)") or "") .. string.format("%x", os.time())
local sessions = {{}}
for i = 1, {sessions} do sessions[i] = string.format("shopper-%s-%d", run, i) end

-- Shoppers whose cart holds something, oldest first: checkout takes one whose add was sent 1024
-- requests ago (far longer than any answer takes), as upstream's checkout task adds first.
local filled, marked, sent = {{}}, {{}}, 0
local checking = {{}}  -- shopper -> when their checkout was sent: no add until it has surely been answered
local verified = false

request = function()
  if not verified then
    -- wrk calls request() once on its first thread's state to check the script, and sends
    -- nothing: an add recorded here would leave a shopper whose checkout finds the cart empty
    verified = true
    return wrk.format("GET", "/")
  end
  sent = sent + 1
  local kind, shopper = mix[math.random(#mix)], sessions[math.random(#sessions)]
  if kind == "checkout" then
    if #filled == 0 or sent - filled[1][2] < 1024 then
      kind = "add"
    else
      shopper = table.remove(filled, 1)[1]
      marked[shopper] = nil
      checking[shopper] = sent
    end
  end
  if kind == "add" and checking[shopper] and sent - checking[shopper] < 1024 then
    kind = "product"  -- an add now could land before that checkout empties the cart, and be lost
  end
  local headers = {{Cookie = "shop_session-id=" .. shopper}}
  if kind == "index" then return wrk.format("GET", "/", headers) end
  if kind == "product" then return wrk.format("GET", "/product/" .. products[math.random(#products)], headers) end
  if kind == "cart" then return wrk.format("GET", "/cart", headers) end
  for name, value in pairs(form) do headers[name] = value end
  if kind == "currency" then
    return wrk.format("POST", "/setCurrency", headers, "currency_code=" .. currencies[math.random(#currencies)])
  end
  if kind == "add" then
    if not marked[shopper] then marked[shopper] = true; filled[#filled + 1] = {{shopper, sent}} end
    local body = "product_id=" .. products[math.random(#products)] .. "&quantity=" .. math.random(1, 5)
    return wrk.format("POST", "/cart", headers, body)
  end
  return wrk.format("POST", "/cart/checkout", headers, order)
end
"""


def write_boutique_script(directory: Path, sessions: int = 256) -> Path:
    """The Online Boutique mix as a wrk script, whose ``done()`` prints the JSON summary."""
    from apps.online_boutique.data import FRONTEND_CURRENCIES, PRODUCTS

    def lua_list(values: list[str]) -> str:
        return ", ".join(f'"{value}"' for value in values)

    script = directory / "boutique-mix.lua"
    script.write_text(_BOUTIQUE_LUA.format(products=lua_list([p["id"] for p in PRODUCTS]),
                                           currencies=lua_list(list(FRONTEND_CURRENCIES)), sessions=sessions)
                      + _LUA.split("\n", 3)[3].format(marker=MARKER))
    return script
