"""The app's data on the shards in a running topology: `up` migrates the shards first,
and with `shards.hot.auto_split` the supervisor splits a hot range while users write."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import httpx
import pytest
from topology_harness import Topology, running_topology, wait_for

pytestmark = pytest.mark.timeout(150)

LB = "http://127.0.69.1:8080"
CONFIG = """
[dcs.test-dc]
subnet = "127.0.69"
web = 1

[lb]
health_interval_s = 0.2

[dns]
host = "127.0.69.53"

[edge]
enabled = false

[shards.hot]
auto_split = true
threshold_ops_s = 50
window_s = 2
report_interval_s = 0.2
autosplit_interval_s = 0.5
split_cooldown_s = 60
cleanup_after_s = 0.5
"""


def shards_status(topology: Topology) -> dict[str, object]:
    result = topology.cli("shards", "status", "--json")
    assert result.returncode == 0, result.stderr
    status: dict[str, object] = json.loads(result.stdout)
    return status


def test_up_migrates_the_shards_and_a_hot_range_splits_itself(tmp_path: Path) -> None:
    with running_topology(tmp_path, CONFIG) as topology:
        status = shards_status(topology)
        shards = status["shards"]
        assert isinstance(shards, list)
        assert sorted(s["name"] for s in shards) == ["s1", "s2"]
        assert all(s["migrations"] == [1] for s in shards)  # the app's schema, by `up`

        stop = threading.Event()
        errors: list[str] = []
        # Each page view reads its user's key several times, so a user's share of its
        # range's load must stay far under the threshold however fast the machine serves
        # the visitor: with 24 users a key carried about 1/17 of a range (40 ops/s at 675),
        # and a faster run made it "too hot to split". 72 users keep a key near 1/50.
        names = [f"profile{i}" for i in range(72)]
        with httpx.Client(base_url=LB, timeout=10) as client:
            for name in names:  # each user's rows land on the shard owning their id
                signed = client.post(
                    "/api/signup", json={"username": name, "password": "correct horse"}
                )
                assert signed.status_code == 201, signed.text
                client.cookies.clear()

        def visitor() -> None:
            """Many keys, each well under the threshold, a range well over it."""
            with httpx.Client(base_url=LB, timeout=10) as client:
                for n in itertools.cycle(range(len(names))):
                    if stop.is_set():
                        return
                    response = client.get(f"/api/users/{names[n]}")
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:80]}")

        thread = threading.Thread(target=visitor)
        thread.start()
        try:
            wait_for(
                lambda: len(shards_status(topology)["shards"]) == 3,  # type: ignore[arg-type]
                90,
                "the supervisor to split the hot range onto a third shard",
            )
            wait_for(
                lambda: (
                    (shards_status(topology).get("operation") or {}).get("phase")  # type: ignore[union-attr]
                    == "completed"
                ),
                30,
                "the automatic split to be cleaned up",
            )
        finally:
            stop.set()
            thread.join(timeout=15)
        assert errors == []
        with httpx.Client(base_url=LB, timeout=10) as client:
            for name in names:  # every user is found on whichever shard owns them now
                login = client.post(
                    "/api/login", json={"username": name, "password": "correct horse"}
                )
                assert login.status_code == 200, (name, login.text)
                client.cookies.clear()
