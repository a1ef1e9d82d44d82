"""Shoppers for the Online Boutique tests: one cookie jar each, over TestClient or real HTTP.

Both speak the same small interface, so one scenario runs in-process and against a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson

from spright.testing import TestClient

JSON = {"accept": "application/json"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str]  # raw set-cookie values

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class InProcessShopper:
    """A browser-like session over ``TestClient``: keeps the cookies the shop sets."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.jar: dict[str, str] = {}

    async def request(self, method: str, path: str, *, data: dict[str, Any] | None = None,
                      json: bool = False, headers: dict[str, str] | None = None) -> Answer:
        sent = {**(JSON if json else {}), **(headers or {})}
        if self.jar:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        form = {k: str(v) for k, v in data.items()} if data is not None else None
        r = await self.client.request(method, path, data=form, headers=sent)
        cookies = r.headers.getlist("set-cookie")
        for raw in cookies:
            for name, morsel in SimpleCookie(raw).items():
                if morsel["max-age"] == "0":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        headers_out = dict(r.headers)
        return Answer(r.status, headers_out, r.body, cookies)


class HttpShopper:
    """The same over real HTTP (aiohttp, its own cookie jar and connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    @property
    def jar(self) -> dict[str, str]:
        return {c.key: c.value for c in self.session.cookie_jar}

    async def request(self, method: str, path: str, *, data: dict[str, Any] | None = None,
                      json: bool = False, headers: dict[str, str] | None = None) -> Answer:
        sent = {**(JSON if json else {}), **(headers or {})}
        form = {k: str(v) for k, v in data.items()} if data is not None else None
        async with self.session.request(method, self.url + path, data=form, headers=sent,
                                        allow_redirects=False) as r:
            body = await r.read()
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, body,
                          r.headers.getall("set-cookie", []))

    async def close(self) -> None:
        await self.session.close()
