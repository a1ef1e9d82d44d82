"""ad: GetAds — ads matching the context keywords (product categories), random ones otherwise."""

from __future__ import annotations

import random
from typing import Any

from apps.online_boutique.data import ADS
from apps.online_boutique.rpc import request
from spright import Context

RANDOM_ADS = 2  # upstream serves this many random ads when nothing matches


def ads_for(keys: list[str]) -> list[dict[str, str]]:
    matched = [ad for key in dict.fromkeys(keys) for ad in ADS.get(str(key), ())]
    if matched:
        return matched
    everything = [ad for ads in ADS.values() for ad in ads]
    return random.sample(everything, RANDOM_ADS)


async def ad(ctx: Context) -> dict[str, Any]:
    """``{"context_keys": [...]}`` → ``{"ads": [{"redirect_url", "text"}, ...]}``."""
    keys = request(ctx).get("context_keys") or []
    return {"ads": ads_for(keys if isinstance(keys, list) else [])}
