"""`millions edge --origin URL --listen HOST:PORT` in front of an arbitrary origin."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ORIGIN = ("127.0.88.1", 8000)
EDGE = ("127.0.88.2", 8081)


def _wait_ok(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.timeout(60)
def test_edge_command_caches_a_plain_file_server(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    (tmp_path / "site.css").write_text("body { color: teal }\n")
    # a plain origin: Last-Modified only, so freshness is heuristic (RFC 9111 §4.2.2)
    os.utime(tmp_path / "site.css", (time.time() - 86400, time.time() - 86400))
    processes.append(
        subprocess.Popen(
            [sys.executable, "-m", "http.server", str(ORIGIN[1]), "--bind", ORIGIN[0]],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    _wait_ok(f"http://{ORIGIN[0]}:{ORIGIN[1]}/site.css")
    processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "millions",
                "edge",
                "--origin",
                f"http://{ORIGIN[0]}:{ORIGIN[1]}",
                "--listen",
                f"{EDGE[0]}:{EDGE[1]}",
                "--log-file",
                str(tmp_path / "edge.log"),
            ],
        )
    )
    url = f"http://{EDGE[0]}:{EDGE[1]}/site.css"
    _wait_ok(url)
    second = httpx.get(url)
    assert second.status_code == 200
    assert second.text == "body { color: teal }\n"
    assert second.headers["x-cache"] == "HIT"
    assert int(second.headers["age"]) >= 0
    assert "edge" in second.headers["via"]


def test_edge_command_rejects_a_bad_origin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "millions", "edge", "--origin", "ftp://example"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "config error: --origin: expected http://HOST:PORT, got 'ftp://example'"
    )


LEAN_CHECK = """
import sys
sys.argv = ["millions", *sys.argv[1:]]
from millions.__main__ import main
try:
    main()
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m in ("millions.cli", "millions.topology.config", "millions.shards",
                            "typer", "pydantic") if m in sys.modules)
print("loaded:", ",".join(loaded), "code:", code)
"""


@pytest.mark.parametrize(
    ("argv", "lean"),
    [
        (["edge", "--origin", "ftp://x"], True),
        (["edge", "--help"], True),
        (["edge"], True),
        (["edge", "--origin", "http://127.0.0.1:9", "--memory-bytes", "0"], True),
        (["--help"], False),
    ],
)
def test_an_edge_starts_without_the_rest_of_the_command_line(argv: list[str], lean: bool) -> None:
    """`millions edge` parses its arguments without typer, pydantic or the full CLI (they
    cost an edge about 12 MB of resident memory); its errors are one line, exit code 2."""
    done = subprocess.run(
        [sys.executable, "-c", LEAN_CHECK, *argv], capture_output=True, text=True, timeout=60
    )
    last = done.stdout.strip().splitlines()[-1]
    if lean:
        assert last.startswith("loaded:  code:"), last
    else:
        assert "millions.cli" in last, last
    if argv[-1] == "--help":
        assert "code: 0" in last and ("--origin" in done.stdout) == lean
        return
    if lean:
        assert "code: 2" in last and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("config error: ")
    if argv[-1] == "ftp://x":
        assert "--origin: expected http://HOST:PORT" in done.stderr
    if argv == ["edge"]:
        assert "--origin" in done.stderr
    if argv[-1] == "0":
        assert "--memory-bytes" in done.stderr


def test_the_full_command_line_lists_edge_and_hands_it_its_arguments() -> None:
    from typer.testing import CliRunner

    from millions.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["--help"])
    assert listed.exit_code == 0 and "edge" in listed.output and "CDN edge" in listed.output
    refused = runner.invoke(app, ["edge", "--origin", "http://127.0.0.1:9", "--listen", "nope"])
    assert refused.exit_code == 2
    assert "--listen: expected HOST:PORT" in refused.output
