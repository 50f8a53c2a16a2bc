"""`millions.edge.main.run` as a real process: serves, exposes /healthz and /metrics, logs
JSON lines, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx
import pytest
from edge_server_support import Origin, Route, free_port, run

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.80.3"
LAUNCH = """
import json, sys
from pathlib import Path
from millions.edge.main import run
args = json.loads(sys.argv[1])
run((args["host"], args["port"]), args["origin"], (args["host"], args["ops_port"]),
    args["max_bytes"], "edge-proc", Path(args["log"]))
"""


def test_edge_process_serves_reports_and_stops_on_sigterm(tmp_path: Path) -> None:
    async def scenario() -> None:
        origin = Origin()
        await origin.start()
        origin.routes["/app.css"] = Route(b"body{}", [("Cache-Control", "max-age=60")])
        port, ops_port = free_port(HOST), free_port(HOST)
        log = tmp_path / "edge.jsonl"
        args = {
            "host": HOST,
            "port": port,
            "ops_port": ops_port,
            "origin": f"http://127.0.80.2:{origin.port}",
            "max_bytes": 1 << 20,
            "log": str(log),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCH, json.dumps(args)
        )
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:

                async def healthy() -> bool:
                    try:
                        response = await client.get(f"http://{HOST}:{ops_port}/healthz")
                    except httpx.TransportError:
                        return False
                    return response.status_code == 200

                async with asyncio.timeout(20):
                    while not await healthy():
                        assert process.returncode is None, "edge process exited"
                        await asyncio.sleep(0.05)
                edge = f"http://{HOST}:{port}"
                first = await client.get(f"{edge}/app.css")
                second = await client.get(f"{edge}/app.css")
                assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
                assert second.headers["via"] == "1.1 edge-proc"
                metrics = (await client.get(f"http://{HOST}:{ops_port}/metrics")).text
                assert 'millions_edge_responses_total{cache="hit"} 1.0' in metrics
                assert 'millions_edge_responses_total{cache="miss"} 1.0' in metrics
                assert "millions_edge_origin_fetches_total 1.0" in metrics
                assert 'millions_edge_stored_bytes{tier="memory"}' in metrics
                assert "millions_edge_sendfile_bytes_total 0.0" in metrics
                assert 'millions_edge_hit_ratio{by="requests"} 0.5' in metrics
                assert "millions_edge_streamed_fills_total 0.0" in metrics
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
            messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
            assert "edge listening" in messages
            assert "edge stopped" in messages
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await origin.stop()

    run(scenario(), timeout_s=50)


def test_bad_origin_is_refused_before_starting() -> None:
    from millions.edge.server import EdgeServer

    with pytest.raises(ValueError, match="http://host:port"):
        EdgeServer("ftp://example", (HOST, 0), 1000)
    with pytest.raises(ValueError, match="max_bytes"):
        EdgeServer("http://127.0.80.2:1", (HOST, 0), 0)
