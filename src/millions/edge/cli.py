"""`millions edge`: the command line that starts one edge.

An edge's resident memory is part of what its cache costs (100,000 cached 1 KiB objects
must stay within 1.5x their bytes), so its arguments are parsed with argparse rather than
typer: typer (which imports pydantic and click) and rich cost an edge about 12 MB, a tenth of
what those 100,000 objects may cost in all. `python -m millions edge ...` (how the topology
starts edges) and the `millions` script come straight here (`millions.__main__`); the full
CLI lists `edge` and hands its arguments here too. Errors are one line naming the option,
exit code 2, as everywhere else in the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from millions.addresses import is_loopback, split_address
from millions.edge.admin import ADMIN_TOKEN_ENV

SUMMARY = "Run one CDN edge: an RFC 9111 caching reverse proxy in front of ORIGIN."
DESCRIPTION = (
    SUMMARY + " Answers hits from its cache (X-Cache: HIT/MISS/STALE/REVALIDATED/PASS, Age, Via),"
    " coalesces concurrent misses into one origin fetch, and serves stale on origin errors"
    " where the origin allows it (stale-if-error)."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"config error: {message} (see: millions edge --help)\n")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    edge = _Parser(prog="millions edge", description=DESCRIPTION)
    option = edge.add_argument
    option("--origin", required=True, help="origin base URL, e.g. http://127.0.1.1:8080")
    option("--listen", default="127.0.0.1:8081", help="HOST:PORT for client traffic")
    option("--ops", help="loopback HOST:PORT for /healthz, /metrics and POST /purge")
    option("--name", default="edge", help="component name for logs and Via")
    option("--log-file", type=Path, help="JSON-lines log file (default: stderr)")
    option(
        "--cache-dir",
        type=Path,
        help="disk cache directory, kept across restarts (default: a temporary directory)",
    )
    option(
        "--memory-bytes",
        type=_positive_int,
        default=256 * 1024 * 1024,
        help="memory tier budget in bytes (default: 256 MiB)",
    )
    option(
        "--disk-bytes",
        type=_positive_int,
        default=1 << 30,
        help="disk tier budget in bytes (default: 1 GiB)",
    )
    option(
        "--admin-token",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"bearer token for POST /purge on --ops (default: ${ADMIN_TOKEN_ENV})",
    )
    option(
        "--stream-threshold",
        type=_positive_int,
        default=1 << 20,
        help="origin bodies larger than this many bytes stream to the client while they are "
        "stored, instead of being read whole first (default: 1 MiB)",
    )
    return edge


def _config_error(message: str) -> NoReturn:
    print(f"config error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _address(value: str, option: str) -> tuple[str, int]:
    address = split_address(value)
    if address is None:
        _config_error(f"{option}: expected HOST:PORT, got {value!r}")
    return address


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments after `millions edge` and run the edge until SIGTERM/SIGINT."""
    args = parser().parse_args(sys.argv[2:] if argv is None else argv)
    listen = _address(args.listen, "--listen")
    ops = _address(args.ops, "--ops") if args.ops else None
    if ops is not None and not is_loopback(ops[0]):
        _config_error(f"--ops: the admin listener must be on loopback, got {ops[0]}")
    if not args.origin.startswith("http://"):
        _config_error(f"--origin: expected http://HOST:PORT, got {args.origin!r}")
    _address(args.origin.removeprefix("http://").split("/", 1)[0], "--origin")
    from millions.edge.main import run

    try:
        run(
            listen,
            args.origin,
            ops,
            args.memory_bytes,
            args.name,
            args.log_file,
            cache_dir=args.cache_dir,
            disk_bytes=args.disk_bytes,
            admin_token=args.admin_token,
            stream_threshold_bytes=args.stream_threshold,
        )
    except ValueError as exc:
        _config_error(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
