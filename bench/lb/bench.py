"""Load balancer vs HAProxy, side by side, in front of the same nginx upstream.

    .venv/bin/python bench/lb/bench.py [--duration 10] [--rounds 3] [--connections 50]

Installs haproxy, wrk and nginx with apt-get when missing (root, Debian). Starts nginx (one
worker, a fixed 17-byte response) on 127.0.59.10, HAProxy (nbthread 1, keep-alive to the
upstream, `http-reuse always`) on 127.0.59.1 and `millions.lb` (one process) on
127.0.59.2. Throughput: `wrk -t1 -cN -dD` against each, rounds interleaved, medians
reported. Latency: `wrk -t1 -c1 --latency` against the upstream directly and through each
proxy; the added p50 is proxy p50 minus direct p50. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchtools import ensure_tools, stop_processes, wait_ok

UPSTREAM = ("127.0.59.10", 18080)
HAPROXY = ("127.0.59.1", 18081)
MILLIONS = ("127.0.59.2", 18082)
MILLIONS_OPS = ("127.0.59.2", 19082)

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server {{
    listen {host}:{port} backlog=4096;
    location / {{ return 200 "hello from nginx\\n"; }}
  }}
}}
"""

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind {host}:{port}
  default_backend be
backend be
  server s1 {upstream}
"""

MILLIONS_SCRIPT = """
import sys
from pathlib import Path
from millions.lb.main import run
from millions.topology.config import LoadBalancerConfig
run(({h!r}, {p}), ({oh!r}, {op}), LoadBalancerConfig(), backends=[{up!r}],
    log_file=Path({log!r}))
"""


def wrk(url: str, connections: int, duration: int, latency: bool = False) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url]
    if latency:
        args.insert(1, "--latency")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    result["errors"] = 1.0 if errors else 0.0
    if latency:
        p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
        assert p50 is not None
        scale = {"us": 1.0, "ms": 1000.0, "s": 1e6}[p50.group(2)]
        result["p50_us"] = float(p50.group(1)) * scale
    return result


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    ensure_tools({"haproxy": "haproxy", "wrk": "wrk", "nginx": "nginx-light"})
    workdir = Path(tempfile.mkdtemp(prefix="millions-lb-bench-"))
    up = f"{UPSTREAM[0]}:{UPSTREAM[1]}"
    (workdir / "nginx.conf").write_text(
        NGINX_CONF.format(dir=workdir, host=UPSTREAM[0], port=UPSTREAM[1])
    )
    (workdir / "haproxy.cfg").write_text(
        HAPROXY_CONF.format(host=HAPROXY[0], port=HAPROXY[1], upstream=up)
    )
    script = MILLIONS_SCRIPT.format(
        h=MILLIONS[0],
        p=MILLIONS[1],
        oh=MILLIONS_OPS[0],
        op=MILLIONS_OPS[1],
        up=up,
        log=str(workdir / "lb.log"),
    )
    processes = [
        subprocess.Popen(["nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir)]),
        subprocess.Popen(
            ["haproxy", "-f", str(workdir / "haproxy.cfg"), "-db"], stderr=subprocess.DEVNULL
        ),
        subprocess.Popen([sys.executable, "-c", script]),
    ]
    urls = {
        "upstream": f"http://{up}/",
        "haproxy": f"http://{HAPROXY[0]}:{HAPROXY[1]}/",
        "millions": f"http://{MILLIONS[0]}:{MILLIONS[1]}/",
    }
    try:
        wait_ok(urls["upstream"])
        wait_ok(urls["haproxy"])
        wait_ok(f"http://{MILLIONS_OPS[0]}:{MILLIONS_OPS[1]}/healthz")
        for name in ("haproxy", "millions"):  # warm up pools and caches
            wrk(urls[name], args.connections, 2)
        rps: dict[str, list[float]] = {"haproxy": [], "millions": []}
        cpu: dict[str, list[float]] = {"haproxy": [], "millions": []}
        pids = {"haproxy": processes[1].pid, "millions": processes[2].pid}
        for round_index in range(args.rounds):
            for name in ("haproxy", "millions"):
                before = cpu_seconds(pids[name])
                result = wrk(urls[name], args.connections, args.duration)
                used = cpu_seconds(pids[name]) - before
                rps[name].append(result["rps"])
                cpu[name].append(used / (result["rps"] * args.duration) * 1e6)
                print(
                    f"round {round_index + 1} {name:9} {result['rps']:9.0f} req/s "
                    f"{cpu[name][-1]:5.1f} us CPU/req",
                    flush=True,
                )
        p50 = {name: wrk(url, 1, 5, latency=True)["p50_us"] for name, url in urls.items()}
        summary = {
            "haproxy_rps": statistics.median(rps["haproxy"]),
            "millions_rps": statistics.median(rps["millions"]),
            "haproxy_cpu_us_per_request": statistics.median(cpu["haproxy"]),
            "millions_cpu_us_per_request": statistics.median(cpu["millions"]),
            "p50_us": p50,
        }
        summary["ratio"] = summary["millions_rps"] / summary["haproxy_rps"]
        summary["added_p50_us_millions"] = p50["millions"] - p50["upstream"]
        summary["added_p50_us_haproxy"] = p50["haproxy"] - p50["upstream"]
        print(json.dumps(summary, indent=2))
        ok = summary["ratio"] >= 0.7 and summary["added_p50_us_millions"] <= 300
        print("targets (>= 0.7x HAProxy req/s, <= 0.3 ms added p50):", "met" if ok else "NOT met")
        return 0
    finally:
        stop_processes(processes)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
