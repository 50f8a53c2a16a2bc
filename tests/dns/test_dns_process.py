"""`millions.dns.main.run()` as a real process: it answers, survives hostile packets,
keeps drains in its state file, stops cleanly on SIGTERM, and fails with one clear line
when its address is taken."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
from dns_support import EU_CLIENT, EU_LB, TOKEN, US_CLIENT, US_LB, config_data

from millions.dns.admin import drain_dc

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.135.1"
SCRIPT = """
import json, sys
from pathlib import Path
from millions.dns.config import parse
from millions.dns.main import run
args = json.loads(sys.argv[1])
run(parse(args["config"]), name="dns-test", log_file=Path(args["log"]),
    admin_token=args["token"], state_file=Path(args["state"]))
"""


def free_port() -> int:
    """A port free on HOST for both UDP and TCP at the time of asking."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port: int = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


def start(tmp_path: Path, port: int, admin_port: int) -> subprocess.Popen[bytes]:
    config = config_data(host=HOST, listen=f"{HOST}:{port}", admin=f"{HOST}:{admin_port}")
    args = {
        "config": config,
        "log": str(tmp_path / "dns.log"),
        "token": TOKEN,
        "state": str(tmp_path / "dns-state.json"),
    }
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ask(port: int, name: str, source: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    return dns.query.udp(query, HOST, port=port, source=source, timeout=0.5)


def wait_answering(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            ask(port, "www.millions.test", US_CLIENT)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise AssertionError("the DNS process did not start answering")


def test_process_answers_survives_garbage_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    process = start(tmp_path, port, admin_port)
    try:
        wait_answering(process, port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in (b"", b"\xff" * 11, b"\x00\x01\x01\x00" + b"\xff" * 40, b"\x00" * 4000):
                sock.sendto(packet, (HOST, port))
        assert str(ask(port, "www.millions.test", US_CLIENT).answer[0][0]) == US_LB
        assert str(ask(port, "www.millions.test", EU_CLIENT).answer[0][0]) == EU_LB
        admin = f"http://{HOST}:{admin_port}"
        assert httpx.get(f"{admin}/healthz", timeout=2).json()["status"] == "ok"
        assert drain_dc(admin, TOKEN, "us-east") == ["us-east"]
        assert str(ask(port, "www.millions.test", US_CLIENT).answer[0][0]) == EU_LB
        saved = json.loads((tmp_path / "dns-state.json").read_text())
        assert saved == {"drained": ["us-east"]}
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        process.communicate()
    log = (tmp_path / "dns.log").read_text()
    assert '"msg":"dns listening"' in log
    assert '"msg":"dc drained"' in log


def test_taken_address_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, port))
        process = start(tmp_path, port, free_port())
        try:
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert process.returncode != 0
    message = stderr.decode()
    assert "cannot listen" in message
    assert "Traceback" not in message
