"""wordstream: a text generator streaming its words to a browser over Server-Sent Events.

``GET /`` serves a page whose ``EventSource`` opens ``GET /generate?prompt=...&n=40&pace=80``:
``prompt`` (the tokenizer) >> ``generate`` (the model, an async generator: each word is sent
to the browser as soon as it is yielded, then an ``event: done``). Run it with
``python -m apps.wordstream`` and open http://127.0.0.1:8080/.
"""

from __future__ import annotations

from apps.wordstream.functions import generate, page, prompt
from spright import App

app = App("wordstream", default_timeout=10.0)  # between two words of a stream, not over all of them
home = app.add_function(page, name="page")
tokenize = app.add_function(prompt, name="prompt", concurrency=256)
model = app.add_function(generate, name="generate", concurrency=256)  # a stream holds its place until it ends

app.route("/", home)
app.route("/generate", tokenize >> model)

__all__ = ["app"]
