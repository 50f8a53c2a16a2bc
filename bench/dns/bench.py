"""Geo DNS server vs gdnsd, side by side, on the same zone and the same dnsperf load.

    .venv/bin/python bench/dns/bench.py [--duration 10] [--rounds 3] [--clients 10]
        [--outstanding 100]

Installs gdnsd and dnsperf with apt-get when missing (root, Debian). The zone is
`millions.test`: SOA, NS `ns1` with glue, and the geo names `www` (one A record per data
center, us-east 127.0.151.1 and eu-west 127.0.151.2) and `cdn` (one per edge, edge-us
127.0.152.1 and edge-eu 127.0.152.2). Three servers answer it, each pinned to CPU 1 with
`taskset`:

* `millions dns` (one process, 127.0.150.1): per query it finds the client's region
  (source address or EDNS Client Subnet against a prefix table) and answers with the
  nearest healthy target, health-checked over HTTP every 2 s;
* gdnsd with its `geoip` plugin (127.0.150.2): the same regions as a `nets` map, the same
  targets as `dcmap`s, health-checked with `http_status` every 2 s (its minimum): like for like;
* gdnsd with static A records (127.0.150.3): the rate of a plain authoritative answer,
  with no per-query region lookup and no health-based choice.

One process (CPU 0) answers the health checks of both on the four target addresses.
dnsperf (CPU 0, `-c CLIENTS -q OUTSTANDING -l DURATION`, no `-Q`: as fast as answers come
back) sends a fixed mix of queries: www A, cdn A, www AAAA (NODATA), apex SOA and NS, and
names that do not exist (NXDOMAIN). Two loads: `plain` (no EDNS, source 127.0.153.1, a
network mapped to region eu) and `ecs` (EDNS with a Client Subnet option for
203.0.113.0/24, mapped to region us). Before the rounds, both geo servers must give the
same answers for both networks. Rounds interleave the servers; medians reported, with
the server's CPU time (user + system, all threads) per answered query and its CPU use
over the run. A server below 100% CPU was not saturated: dnsperf's one core set the
rate, so each table also gives capacity, 1 / CPU time per query (queries per second of
server CPU), and the ratios of both. Not part of CI.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchtools import ensure_tools, stop_processes

ZONE = "millions.test"
PORT = 15353
MILLIONS = ("127.0.150.1", PORT)
MILLIONS_ADMIN = ("127.0.150.1", 19150)
GDNSD_GEOIP = ("127.0.150.2", PORT)
GDNSD_STATIC = ("127.0.150.3", PORT)
CLIENT_SOURCE = "127.0.153.1"
HEALTH_PORT = 18150
SERVER_CPU = "1"
CLIENT_CPU = "0"

DCS = {"us-east": "127.0.151.1", "eu-west": "127.0.151.2"}
EDGES = {"edge-us": ("127.0.152.1", "us-east"), "edge-eu": ("127.0.152.2", "eu-west")}
REGIONS = {"us": ["us-east", "eu-west"], "eu": ["eu-west", "us-east"]}
PREFIXES = {"127.0.153.0/24": "eu", "198.51.100.0/24": "eu", "203.0.113.0/24": "us"}
DEFAULT_REGION = "us"
NAMESERVER = ("ns1", "127.0.150.1")
TTL_S = 5
ZONE_TTL_S = 300

#: EDNS Client Subnet (option 8) for 203.0.113.0/24: family 1, source /24, scope 0.
ECS_OPTION = "8:00011800cb0071"
LOADS = {"plain": [], "ecs": ["-E", ECS_OPTION]}

#: The query mix, one dnsperf line each: mostly the geo names, as real traffic would be.
QUERY_MIX = (
    [f"www.{ZONE} A"] * 45
    + [f"cdn.{ZONE} A"] * 35
    + [f"www.{ZONE} AAAA"] * 5
    + [f"{ZONE} SOA"] * 5
    + [f"{ZONE} NS"] * 5
    + [f"nx-{n}.{ZONE} A" for n in range(5)]
)

HEALTH_SERVER = """
import http.server, sys, threading

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass

servers = [http.server.ThreadingHTTPServer((host, {port}), Ok) for host in sys.argv[1:]]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


def millions_config() -> str:
    """The standalone `millions dns` config (TOML) for the bench zone."""

    def table(name: str, values: dict[str, str]) -> str:
        return f"[{name}]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in values.items())

    lines = [
        f'zone = "{ZONE}"',
        f'listen = "{MILLIONS[0]}:{MILLIONS[1]}"',
        f'admin = "{MILLIONS_ADMIN[0]}:{MILLIONS_ADMIN[1]}"',
        f"ttl_s = {TTL_S}",
        f"zone_ttl_s = {ZONE_TTL_S}",
        f'default_region = "{DEFAULT_REGION}"',
        "check_interval_s = 2.0",
        table("nameservers", {NAMESERVER[0]: NAMESERVER[1]}),
        table("prefixes", PREFIXES),
        "[regions]",
        *(f'{region} = ["{dcs[0]}", "{dcs[1]}"]' for region, dcs in REGIONS.items()),
    ]
    for dc, address in DCS.items():
        lines += [
            f"[dcs.{dc}]",
            f'address = "{address}"',
            f'health_url = "http://{address}:{HEALTH_PORT}/healthz"',
        ]
    for edge, (address, dc) in EDGES.items():
        lines += [
            f"[edges.{edge}]",
            f'address = "{address}"',
            f'health_url = "http://{address}:{HEALTH_PORT}/healthz"',
            f'dc = "{dc}"',
        ]
    return "\n".join(lines) + "\n"


def gdnsd_config(workdir: Path, listen: tuple[str, int]) -> str:
    """gdnsd's main config: one UDP and one TCP thread on `listen`, the geoip plugin with
    the bench regions as a nets map and http_status health checks every 2 s."""
    map_order = {region: f"[{', '.join(dcs)}]" for region, dcs in REGIONS.items()}
    nets = "".join(f"        {net} => {map_order[region]}\n" for net, region in PREFIXES.items())
    edges_by_dc = {dc: address for address, dc in EDGES.values()}
    return f"""
options => {{
  listen => [ {listen[0]}:{listen[1]} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => {workdir}/run
  state_dir => {workdir}/state
}}
service_types => {{
  health => {{
    plugin => http_status, port => {HEALTH_PORT}, url_path => /healthz,
    interval => 2, timeout => 1, up_thresh => 2, ok_thresh => 2, down_thresh => 2
  }}
}}
plugins => {{
  geoip => {{
    maps => {{
      regions => {{
        datacenters => {map_order[DEFAULT_REGION]}
        nets => {{
{nets}        }}
      }}
    }}
    resources => {{
      www => {{
        map => regions
        service_types => health
        dcmap => {{ {", ".join(f"{dc} => {a}" for dc, a in DCS.items())} }}
      }}
      cdn => {{
        map => regions
        service_types => health
        dcmap => {{ {", ".join(f"{dc} => {a}" for dc, a in edges_by_dc.items())} }}
      }}
    }}
  }}
}}
"""


def gdnsd_zone(geo: bool) -> str:
    """The zone file: geo records through the geoip plugin, or the first DC and edge as
    static A records."""
    if geo:
        www, cdn = f"{TTL_S}/{TTL_S} DYNA geoip!www", f"{TTL_S}/{TTL_S} DYNA geoip!cdn"
    else:
        www, cdn = f"{TTL_S} A {DCS['us-east']}", f"{TTL_S} A {EDGES['edge-us'][0]}"
    return f"""$TTL {ZONE_TTL_S}
@ SOA {NAMESERVER[0]} hostmaster 1 3600 600 86400 5
@ NS {NAMESERVER[0]}
{NAMESERVER[0]} A {NAMESERVER[1]}
www {www}
cdn {cdn}
"""


def write_gdnsd(workdir: Path, name: str, listen: tuple[str, int], geo: bool) -> Path:
    directory = workdir / name
    (directory / "zones").mkdir(parents=True)
    (directory / "config").write_text(gdnsd_config(directory, listen))
    (directory / "zones" / ZONE).write_text(gdnsd_zone(geo))
    return directory


def ask(
    server: tuple[str, int], name: str, rdtype: str = "A", subnet: str | None = None
) -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if subnet is not None:
        address, length = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(length)))
    query = dns.message.make_query(name, rdtype, use_edns=0 if options else None, options=options)
    return dns.query.udp(query, server[0], port=server[1], timeout=1.0, source=CLIENT_SOURCE)


def answer_address(reply: dns.message.Message) -> str:
    return str(reply.answer[0][0]) if reply.answer else ""


def wait_answering(
    server: tuple[str, int],
    expect: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float = 20.0,
) -> None:
    """Poll until `www` from the eu source network answers `expect` (health checks done)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited {process.returncode}:\n{log.read_text()}")
        try:
            last = answer_address(ask(server, f"www.{ZONE}"))
            if last == expect:
                return
        except (OSError, dns.exception.Timeout) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{server} did not answer www with {expect} (last: {last!r})")


def check_same_answers(servers: dict[str, tuple[str, int]]) -> None:
    """Both geo servers pick the same targets for the source network and the ECS network."""
    for server in servers.values():
        for name, expected in (("www", DCS["eu-west"]), ("cdn", EDGES["edge-eu"][0])):
            got = answer_address(ask(server, f"{name}.{ZONE}"))
            assert got == expected, (server, name, got)
        for name, expected in (("www", DCS["us-east"]), ("cdn", EDGES["edge-us"][0])):
            got = answer_address(ask(server, f"{name}.{ZONE}", subnet="203.0.113.0/24"))
            assert got == expected, (server, name, "ecs", got)


@dataclass
class Run:
    qps: float
    lost_percent: float
    latency_ms: float
    cpu_us_per_query: float
    cpu_percent: float


def dnsperf_command(
    server: tuple[str, int], load: str, args: argparse.Namespace, datafile: Path
) -> list[str]:
    return [
        "taskset",
        "-c",
        CLIENT_CPU,
        "dnsperf",
        "-s",
        server[0],
        "-p",
        str(server[1]),
        "-a",
        CLIENT_SOURCE,
        "-d",
        str(datafile),
        "-c",
        str(args.clients),
        "-q",
        str(args.outstanding),
        "-l",
        str(args.duration),
        *LOADS[load],
    ]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def dnsperf(command: list[str], pid: int) -> Run:
    before, started = cpu_seconds(pid), time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"no {pattern!r} in dnsperf output:\n{out}")
        return float(match.group(1))

    completed = number(r"Queries completed:\s+(\d+)")
    return Run(
        qps=number(r"Queries per second:\s+([\d.]+)"),
        lost_percent=number(r"Queries lost:\s+\d+ \(([\d.]+)%\)"),
        latency_ms=number(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
        cpu_us_per_query=used / max(completed, 1) * 1e6,
        cpu_percent=used / elapsed * 100,
    )


def check_port_free(address: tuple[str, int]) -> None:
    """Fail early with a clear message when a bench address is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise SystemExit(f"{address[0]}:{address[1]} is in use: {exc}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    args = parser.parse_args()
    ensure_tools({"gdnsd": "gdnsd", "dnsperf": "dnsperf"})
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    millions = str(Path(sys.executable).with_name("millions"))
    servers = {"millions": MILLIONS, "gdnsd-geoip": GDNSD_GEOIP, "gdnsd-static": GDNSD_STATIC}
    for address in [*servers.values(), MILLIONS_ADMIN]:
        check_port_free(address)
    workdir = Path(tempfile.mkdtemp(prefix="millions-dns-bench-"))
    datafile = workdir / "queries.txt"
    datafile.write_text("\n".join(QUERY_MIX) + "\n")
    (workdir / "dns.toml").write_text(millions_config())
    pin = ["taskset", "-c", SERVER_CPU]
    targets = [*DCS.values(), *(address for address, _ in EDGES.values())]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        health = HEALTH_SERVER.format(port=HEALTH_PORT)
        processes["health"] = subprocess.Popen(
            ["taskset", "-c", CLIENT_CPU, sys.executable, "-c", health, *targets],
            stderr=subprocess.DEVNULL,  # gdnsd closes its checks early: broken pipes
        )
        processes["millions"] = subprocess.Popen(
            [
                *pin,
                millions,
                "dns",
                "--dns-config",
                str(workdir / "dns.toml"),
                "--run-dir",
                str(workdir / "run"),
                "--log-file",
                str(workdir / "millions.log"),
            ],
            stderr=subprocess.STDOUT,
            stdout=open(workdir / "millions.out", "wb"),
        )
        for name, listen, geo in (
            ("gdnsd-geoip", GDNSD_GEOIP, True),
            ("gdnsd-static", GDNSD_STATIC, False),
        ):
            directory = write_gdnsd(workdir, name, listen, geo)
            processes[name] = subprocess.Popen(
                [*pin, gdnsd, "-c", str(directory), "start"],
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / f"{name}.log", "wb"),
            )
        for name, server in servers.items():
            log = workdir / ("millions.out" if name == "millions" else f"{name}.log")
            expect = DCS["us-east"] if name == "gdnsd-static" else DCS["eu-west"]
            wait_answering(server, expect, processes[name], log)
        check_same_answers({n: servers[n] for n in ("millions", "gdnsd-geoip")})
        warm_up = argparse.Namespace(**{**vars(args), "duration": 2})
        for name, server in servers.items():  # every answer rendered once, caches warm
            for load in LOADS:
                dnsperf(dnsperf_command(server, load, warm_up, datafile), processes[name].pid)
        runs: dict[tuple[str, str], list[Run]] = {}
        for round_index in range(args.rounds):
            for load in LOADS:
                for name, server in servers.items():
                    run = dnsperf(
                        dnsperf_command(server, load, args, datafile), processes[name].pid
                    )
                    runs.setdefault((load, name), []).append(run)
                    print(
                        f"round {round_index + 1} {load:5} {name:12} {run.qps:9.0f} q/s "
                        f"{run.cpu_us_per_query:5.1f} us CPU/query {run.cpu_percent:4.0f}% CPU "
                        f"lost {run.lost_percent:.2f}%",
                        flush=True,
                    )
        report(runs, servers, args, datafile)
        return 0
    finally:
        stop_processes(processes.values())
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    runs: dict[tuple[str, str], list[Run]],
    servers: dict[str, tuple[str, int]],
    args: argparse.Namespace,
    datafile: Path,
) -> None:
    """The medians as a Rich table and as markdown, the commands, and the verdicts.

    Two ratios per peer: queries/s as dnsperf measured them (bounded by dnsperf's one
    core when the server idles part of the time), and capacity, queries per second of
    server CPU time, which is what the server would answer with its core to itself."""
    columns = (
        "load",
        "server",
        "queries/s",
        "/ gdnsd-geoip",
        "/ gdnsd-static",
        "server CPU",
        "CPU us/query",
        "capacity q/s",
        "capacity / geoip",
        "capacity / static",
        "latency ms",
        "lost",
    )
    table = Table(title=f"DNS queries/s, median of {args.rounds} rounds of {args.duration} s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("load", "server") else "right")
    rows: list[list[str]] = []
    verdicts = []
    for load in LOADS:
        qps = {name: statistics.median(r.qps for r in runs[load, name]) for name in servers}
        cpu = {
            name: statistics.median(r.cpu_us_per_query for r in runs[load, name])
            for name in servers
        }
        capacity = {name: 1e6 / cpu[name] for name in servers}
        for name in servers:
            done = runs[load, name]
            rows.append(
                [
                    load,
                    name,
                    f"{qps[name]:,.0f}",
                    f"{qps[name] / qps['gdnsd-geoip']:.2f}x",
                    f"{qps[name] / qps['gdnsd-static']:.2f}x",
                    f"{statistics.median(r.cpu_percent for r in done):.0f}%",
                    f"{cpu[name]:.2f}",
                    f"{capacity[name]:,.0f}",
                    f"{capacity[name] / capacity['gdnsd-geoip']:.2f}x",
                    f"{capacity[name] / capacity['gdnsd-static']:.2f}x",
                    f"{statistics.median(r.latency_ms for r in done):.2f}",
                    f"{max(r.lost_percent for r in done):.2f}%",
                ]
            )
        for peer in ("gdnsd-geoip", "gdnsd-static"):
            for measure, values in (("queries/s", qps), ("capacity", capacity)):
                ratio = values["millions"] / values[peer]
                met = "met" if ratio >= 0.5 else "NOT met"
                verdicts.append(f"{load} {measure}: millions / {peer} = {ratio:.2f}x ({met})")
    for row in rows:
        table.add_row(*row)
    console = Console(width=200)
    console.print(table)
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c in ("load", "server") else "---:" for c in columns) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("rounds (queries/s):")
    for (load, name), done in runs.items():
        print(f"  {load:5} {name:12} " + " / ".join(f"{r.qps:,.0f}" for r in done))
    example = dnsperf_command(servers["millions"], "ecs", args, datafile)
    print("dnsperf (ecs load):", shlex.join(example))
    print(
        "reproduce: .venv/bin/python bench/dns/bench.py "
        f"--duration {args.duration} --rounds {args.rounds} --clients {args.clients} "
        f"--outstanding {args.outstanding}"
    )
    for verdict in verdicts:
        print(f"target >= 0.5x gdnsd, {verdict}")


if __name__ == "__main__":
    sys.exit(main())
