"""An app that sets its node's options in its Config: `spright run` without options must keep them."""

import os

from spright import App, Config

app = App("configured", config=Config(port=int(os.environ.get("CONFIGURED_PORT", "8080")), transport="unix",
                                      balance="round_robin"))


@app.function()
async def hello(ctx) -> str:
    return "hello"


app.route("/", hello)
