"""CDN edge vs nginx proxy_cache and Varnish, side by side, in front of the same origin.

    .venv/bin/python bench/edge/bench.py [--duration 10] [--rounds 3] [--connections 50]
        [--objects 100000] [--part all|throughput|memory]

Installs nginx, varnish and wrk with apt-get when missing (root, Debian). One origin
(nginx, one worker, 127.0.58.10) serves a 1 KiB and a 256 KiB file with a one-hour
max-age, and any `/miss/...` path with a 1 KiB body. In front of it, each pinned to CPU 1
with `taskset` so each is one worker on one core: nginx proxy_cache (one worker,
127.0.58.1), Varnish (malloc storage, 127.0.58.3) and the millions edge (one process,
started as users and the topology start it, `python -m millions edge`, 127.0.58.2). wrk
runs on CPU 0.

Hits: `wrk -t1 -cN -dD` on the 1 KiB and the 256 KiB URL of each cache after one warm-up
request, rounds interleaved, medians reported with the ratios the targets name (1 KiB vs
nginx, 256 KiB vs Varnish); each round also prints the server's CPU time per request (its
process and children, /proc) and how busy the client's CPU was: for 256 KiB hits wrk's core
is the limit (100% busy), so req/s there compare the servers less than CPU per request does.
Misses: the same wrk load on unique `/miss/<n>` paths (every request a miss and an origin
fetch). Memory: after the runs, a fresh edge is filled with
`--objects` distinct 1 KiB objects; its RSS is compared with the stored bytes: the bytes of
the cached responses, body plus stored header block (one `name: value\\r\\n` line per
stored header, as the edge sends it, less the fields it adds per answer), not the memory
tier's budget accounting (which also charges keys and Python overhead). Reported both as
the whole RSS over stored bytes (the target) and as the RSS growth during the fill over
stored bytes (what the objects cost, without the interpreter and its libraries).
`--part throughput` or `--part memory` runs only one of the two. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchtools import ensure_tools, stop_processes, wait_ok

ORIGIN = ("127.0.58.10", 18090)
NGINX = ("127.0.58.1", 18091)
EDGE = ("127.0.58.2", 18092)
EDGE_OPS = ("127.0.58.2", 19092)
VARNISH = ("127.0.58.3", 18093)
MEMORY_EDGE = ("127.0.58.4", 18094)
MEMORY_EDGE_OPS = ("127.0.58.4", 19094)
PROXY_CPU = "1"
CLIENT_CPU = "0"
SIZES = {"1k": 1024, "256k": 256 * 1024}

ORIGIN_CONF = """
worker_processes 1;
daemon off;
pid {dir}/origin.pid;
error_log {dir}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen {host}:{port} backlog=4096;
    root {dir}/files;
    location /o/ {{ expires 1h; }}
    location /miss/ {{
      add_header Cache-Control "max-age=3600";
      return 200 "{miss_body}";
    }}
  }}
}}
"""

NGINX_CACHE_CONF = """
worker_processes 1;
daemon off;
pid {dir}/cache.pid;
error_log {dir}/cache-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  proxy_cache_path {dir}/nginx-cache levels=1:2 keys_zone=edge:256m max_size=4g
                   inactive=1h use_temp_path=off;
  upstream origin {{ server {origin}; keepalive 64; }}
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"""

VCL = """
vcl 4.1;
backend origin {{ .host = "{host}"; .port = "{port}"; }}
"""


MISS_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/miss/" .. counter .. "-" .. math.random(1000000000))
end
"""


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def wrk(url: str, connections: int, duration: int, script: Path | None = None) -> float:
    args = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"errors from {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (nginx's and Varnish's workers
    are children of their master; the edge is one process)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    ticks = 0
    for each in [pid, *map(int, children.stdout.split())]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_busy(cpu: str) -> tuple[int, int]:
    """Busy and total jiffies of one CPU so far (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            return sum(values) - values[3] - values[4], sum(values)
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def rss_breakdown(pid: int) -> dict[str, int]:
    """RSS by kind of mapping: the malloc heap, other anonymous memory (thread arenas,
    the memory tier's segments, large allocations) and files (libraries)."""
    kinds = {"heap": 0, "anonymous": 0, "files": 0}
    kind = "anonymous"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and fields[0][0] in "0123456789abcdef":
                name = fields[5] if len(fields) > 5 else ""
                kind = (
                    "heap" if name == "[heap]" else "files" if name.startswith("/") else "anonymous"
                )
            elif fields[0] == "Rss:":
                kinds[kind] += int(fields[1]) * 1024
    return kinds


def stored_memory_bytes(ops: tuple[str, int]) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://{ops[0]}:{ops[1]}/metrics", timeout=5).read().decode()
    values = {}
    for name in ("millions_edge_stored_bytes", "millions_edge_stored_objects"):
        match = re.search(rf'^{name}{{tier="memory"}} ([\d.e+]+)$', text, re.M)
        assert match is not None, name
        values[name] = float(match.group(1))
    return values["millions_edge_stored_bytes"], values["millions_edge_stored_objects"]


async def fill(base: str, count: int, concurrency: int = 64) -> None:
    """GET `count` distinct /miss/ URLs through the edge, `concurrency` at a time."""
    import aiohttp

    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                async with session.get(f"{base}/miss/fill-{index}") as response:
                    await response.read()
                    assert response.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def start_edge(
    workdir: Path, name: str, listen: tuple[str, int], ops: tuple[str, int], memory: int
) -> subprocess.Popen[bytes]:
    """The edge as users and the topology start it: `python -m millions edge ...`."""
    edge = [sys.executable, "-m", "millions", "edge", "--name", "bench-edge"]
    edge += ["--origin", f"http://{ORIGIN[0]}:{ORIGIN[1]}", "--listen", f"{listen[0]}:{listen[1]}"]
    edge += ["--ops", f"{ops[0]}:{ops[1]}", "--memory-bytes", str(memory)]
    edge += ["--log-file", str(workdir / f"{name}.log")]
    edge += ["--cache-dir", str(workdir / f"{name}-cache"), "--disk-bytes", str(8 << 30)]
    return subprocess.Popen(["taskset", "-c", PROXY_CPU, *edge])


def start_origin(workdir: Path) -> subprocess.Popen[bytes]:
    """The origin nginx on CPU 0, serving the hit files and any /miss/ path."""
    (workdir / "files" / "o").mkdir(parents=True)
    for label, size in SIZES.items():
        (workdir / "files" / "o" / f"{label}.bin").write_bytes(bytes(i % 251 for i in range(size)))
    (workdir / "origin.conf").write_text(
        ORIGIN_CONF.format(dir=workdir, host=ORIGIN[0], port=ORIGIN[1], miss_body="m" * 1024)
    )
    conf = str(workdir / "origin.conf")
    process = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPU, "nginx", "-c", conf, "-p", str(workdir)]
    )
    wait_ok(f"http://{ORIGIN[0]}:{ORIGIN[1]}/o/1k.bin")
    return process


def throughput(
    workdir: Path, args: argparse.Namespace, processes: dict[str, subprocess.Popen[bytes]]
) -> dict[str, object]:
    """Hits (1 KiB, 256 KiB) and misses through nginx, Varnish and the edge: medians."""
    origin = f"{ORIGIN[0]}:{ORIGIN[1]}"
    (workdir / "cache.conf").write_text(
        NGINX_CACHE_CONF.format(dir=workdir, host=NGINX[0], port=NGINX[1], origin=origin)
    )
    (workdir / "default.vcl").write_text(VCL.format(host=ORIGIN[0], port=ORIGIN[1]))
    (workdir / "miss.lua").write_text(MISS_LUA)
    pin = ["taskset", "-c", PROXY_CPU]
    processes["nginx"] = subprocess.Popen(
        [*pin, "nginx", "-c", str(workdir / "cache.conf"), "-p", str(workdir)]
    )
    processes["varnish"] = subprocess.Popen(
        [
            *pin,
            "varnishd",
            "-F",
            "-j",
            "none",
            "-n",
            str(workdir / "varnish"),
            "-a",
            f"{VARNISH[0]}:{VARNISH[1]}",
            "-f",
            str(workdir / "default.vcl"),
            "-s",
            "malloc,1g",
            "-p",
            "thread_pools=1",
        ],
        stdout=subprocess.DEVNULL,
    )
    processes["millions"] = start_edge(workdir, "edge", EDGE, EDGE_OPS, 1 << 30)
    bases = {
        "nginx": f"http://{NGINX[0]}:{NGINX[1]}",
        "varnish": f"http://{VARNISH[0]}:{VARNISH[1]}",
        "millions": f"http://{EDGE[0]}:{EDGE[1]}",
    }
    for base in bases.values():
        wait_ok(f"{base}/o/1k.bin")
    rps: dict[str, dict[str, list[float]]] = {
        case: {name: [] for name in bases} for case in [*SIZES, "miss"]
    }
    # the server's CPU per request tells the servers apart when the client is the limit
    # (wrk's CPU at 100%, as for 256 KiB hits on two cores)
    cpu_us: dict[str, dict[str, list[float]]] = {
        case: {name: [] for name in bases} for case in [*SIZES, "miss"]
    }
    for label, size in SIZES.items():
        for name, base in bases.items():
            for _ in range(3):  # warm: the second and third are hits everywhere
                status, _headers, body = fetch(f"{base}/o/{label}.bin")
                assert status == 200 and len(body) == size, (name, status, len(body))
            wrk(f"{base}/o/{label}.bin", args.connections, 2)
    for round_index in range(args.rounds):
        for case in [*SIZES, "miss"]:
            for name, base in bases.items():
                cpu_before = cpu_seconds(processes[name].pid)
                client_before = cpu_busy(CLIENT_CPU)
                if case == "miss":
                    rate = wrk(f"{base}/", args.connections, args.duration, workdir / "miss.lua")
                else:
                    rate = wrk(f"{base}/o/{case}.bin", args.connections, args.duration)
                used = cpu_seconds(processes[name].pid) - cpu_before
                client_after = cpu_busy(CLIENT_CPU)
                client = (client_after[0] - client_before[0]) / (client_after[1] - client_before[1])
                us = 1e6 * used / (rate * args.duration)
                rps[case][name].append(rate)
                cpu_us[case][name].append(us)
                print(
                    f"round {round_index + 1} {case:5} {name:9} {rate:9.0f} req/s "
                    f"{us:6.1f} server CPU us/req, client CPU {client:4.0%} busy, "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    medians = {case: {n: statistics.median(v) for n, v in by.items()} for case, by in rps.items()}
    cpu_medians = {
        case: {n: statistics.median(v) for n, v in by.items()} for case, by in cpu_us.items()
    }
    for name in ("nginx", "varnish", "millions"):
        processes[name].terminate()
        processes[name].wait(10)
    return {
        "rps": rps,
        "rps_median": medians,
        "server_cpu_us_per_request_median": cpu_medians,
        "ratio_1k_vs_nginx": medians["1k"]["millions"] / medians["1k"]["nginx"],
        "ratio_256k_vs_varnish": medians["256k"]["millions"] / medians["256k"]["varnish"],
        "ratio_miss_vs_nginx": medians["miss"]["millions"] / medians["miss"]["nginx"],
        "ratio_miss_vs_varnish": medians["miss"]["millions"] / medians["miss"]["varnish"],
    }


#: Header lines the edge adds to every answer; the rest of an answer's head is the stored
#: header block.
PER_RESPONSE_FIELDS = frozenset(
    {"content-length", "age", "x-cache", "via", "connection", "accept-ranges"}
)


def stored_response_bytes(url: str) -> tuple[int, int]:
    """Body and stored header block of one cached response, in bytes: the body plus one
    `name: value\\r\\n` line per stored header (what the edge answers with, less the
    fields it adds per answer)."""
    status, headers, body = fetch(url)
    cache = {name.lower(): value for name, value in headers.items()}.get("x-cache")
    assert status == 200 and cache == "HIT", (status, headers)
    block = sum(
        len(name) + len(value) + 4
        for name, value in headers.items()
        if name.lower() not in PER_RESPONSE_FIELDS
    )
    return len(body), block


def memory(
    workdir: Path, args: argparse.Namespace, processes: dict[str, subprocess.Popen[bytes]]
) -> dict[str, object]:
    """A fresh edge filled with `--objects` distinct 1 KiB objects: RSS against the bytes
    of the cached responses (body plus stored header block)."""
    memory_edge = start_edge(workdir, "memory-edge", MEMORY_EDGE, MEMORY_EDGE_OPS, 4 << 30)
    processes["memory-edge"] = memory_edge
    wait_ok(f"http://{MEMORY_EDGE_OPS[0]}:{MEMORY_EDGE_OPS[1]}/healthz")
    base_rss = rss_bytes(memory_edge.pid)
    base_breakdown = rss_breakdown(memory_edge.pid)
    base = f"http://{MEMORY_EDGE[0]}:{MEMORY_EDGE[1]}"
    asyncio.run(fill(base, args.objects))
    charged, objects = stored_memory_bytes(MEMORY_EDGE_OPS)
    rss = rss_bytes(memory_edge.pid)
    body, header_block = stored_response_bytes(f"{base}/miss/fill-0")
    # every fill object has the same header fields and value lengths (Date is fixed-width)
    stored = objects * (body + header_block)
    return {
        "objects": objects,
        "body_bytes_per_object": body,
        "header_block_bytes_per_object": header_block,
        "stored_bytes": stored,
        "memory_tier_charged_bytes": charged,
        "rss_bytes": rss,
        "rss_before_fill_bytes": base_rss,
        "rss_per_object_bytes": (rss - base_rss) / max(objects, 1),
        "rss_over_stored": rss / stored,
        "rss_growth_over_stored": (rss - base_rss) / stored,
        "rss_before_fill_by_kind": base_breakdown,
        "rss_by_kind": rss_breakdown(memory_edge.pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument(
        "--part",
        choices=("all", "throughput", "memory"),
        default="all",
        help="run only the hit/miss throughput rounds or only the memory fill",
    )
    args = parser.parse_args()
    ensure_tools({"nginx": "nginx-light", "varnishd": "varnish", "wrk": "wrk"})
    workdir = Path(tempfile.mkdtemp(prefix="millions-edge-bench-"))
    workdir.chmod(0o755)  # nginx workers run as an unprivileged user and read files here
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["origin"] = start_origin(workdir)
        summary: dict[str, object] = {}
        if args.part in ("all", "throughput"):
            summary.update(throughput(workdir, args, processes))
            summary.pop("rps")
        if args.part in ("all", "memory"):
            summary["memory"] = memory(workdir, args, processes)
        print(json.dumps(summary, indent=2))
        verdicts = []
        if "ratio_1k_vs_nginx" in summary:
            verdicts.append(("1 KiB >= 1.0x nginx", summary["ratio_1k_vs_nginx"] >= 1.0))  # type: ignore[operator]
            verdicts.append(
                ("256 KiB >= 1.0x Varnish", summary["ratio_256k_vs_varnish"] >= 1.0)  # type: ignore[operator]
            )
        if "memory" in summary:
            measured: dict[str, float] = summary["memory"]  # type: ignore[assignment]
            verdicts.append(
                (
                    "RSS <= 1.5x stored",
                    measured["rss_over_stored"] <= 1.5 and measured["objects"] >= args.objects,
                )
            )
        for target, met in verdicts:
            print(f"target {target}: {'met' if met else 'NOT met'}")
        return 0
    finally:
        stop_processes(processes.values())
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
