"""apps/online_boutique/locustfile.py, run by Locust headless against a real node, as upstream's load
generator drives its shop: every task of the mix runs, no request fails, product pages dominate."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from spright.testing import run_node

pytestmark = [
    pytest.mark.node,
    pytest.mark.slow,
    pytest.mark.needs("locust"),
]

LOCUSTFILE = Path(__file__).resolve().parent.parent / "apps" / "online_boutique" / "locustfile.py"
USERS, RUN_TIME = 8, "8s"
# The locustfile as users run it, less upstream's 1-10 s think time: a few seconds must see every task.
NO_THINK_TIME = """\
import importlib.util

from locust import constant

spec = importlib.util.spec_from_file_location("boutique_locustfile", {path!r})
shop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shop)


class BusyShopper(shop.WebsiteUser):
    wait_time = constant(0)
"""


def run_locust(locustfile: Path, host: str, workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust headless against ``host``; its CSV stats by (method, name), the total under ("", "Aggregated")."""
    driver = workdir / "busy_locustfile.py"
    driver.write_text(NO_THINK_TIME.format(path=str(locustfile)))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(driver), "--headless", "-u", str(USERS), "-r", str(USERS),
         "-t", RUN_TIME, "--host", host, "--csv", str(workdir / "run"), "--only-summary"],
        capture_output=True, text=True, timeout=60, cwd=workdir,
    )
    stats = workdir / "run_stats.csv"
    assert stats.exists(), f"locust exited {result.returncode} without stats:\n{result.stderr[-3000:]}"
    with stats.open(newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def test_locust_drives_the_shop_with_upstreams_mix(tmp_path: Path, runtime_dir: Path) -> None:
    with run_node("apps.online_boutique:app", transport="unix") as (port, _):
        rows = run_locust(LOCUSTFILE, f"http://127.0.0.1:{port}", tmp_path)

    total = rows.pop(("", "Aggregated"))
    failures = tmp_path / "run_failures.csv"
    assert int(total["Failure Count"]) == 0, failures.read_text() if failures.exists() else total
    count = {key: int(row["Request Count"]) for key, row in rows.items()}
    products = {key: n for key, n in count.items() if key[0] == "GET" and key[1].startswith("/product/")}
    assert products, f"no product page was requested: {count}"
    others = set(count) - set(products)
    assert others == {("GET", "/"), ("POST", "/setCurrency"), ("GET", "/cart"), ("POST", "/cart"),
                      ("POST", "/cart/checkout")}, count

    # Redirects (after POST /setCurrency, POST /cart) are followed inside the request Locust records,
    # so each row counts one task's requests; shared ones are told apart by what else the task sends.
    # A user stopped mid-task (at most one task per user) may have sent only its first request.
    product_pages = sum(products.values())
    carts_posted, orders = count["POST", "/cart"], count["POST", "/cart/checkout"]
    ran = {
        "index": count["GET", "/"] - USERS,  # every user's on_start is one GET / besides the index tasks
        "setCurrency": count["POST", "/setCurrency"],
        "browseProduct": product_pages - carts_posted - USERS,  # addToCart and checkout: a product page, a post
        "addToCart": carts_posted - orders - USERS,  # checkout posts to /cart before it orders
        "viewCart": count["GET", "/cart"],
        "checkout": orders,
    }
    assert all(n > 0 for n in ran.values()), (ran, count)
    # browseProduct weighs 10 of 19 (and addToCart, checkout open a product page too): the busiest by far
    assert product_pages > max(n for key, n in count.items() if key not in products), count
