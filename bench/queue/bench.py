"""Queue engines vs a plain aio-pika loop and Celery: durable publish and consume, side by side.

    .venv/bin/python bench/queue/bench.py [--messages 20000] [--rounds 3] [--publishers 50]
        [--prefetch 100] [--systems sqlite,rabbitmq,aio-pika,celery]
        [--url amqp://guest:guest@127.0.0.1:5672/]

Systems: `sqlite` (the embedded engine, a fresh file per run on the machine's disk),
`rabbitmq` (the millions RabbitMQ engine), `aio-pika` (a plain aio-pika producer and
`queue.iterator()` consumer on the same broker) and `celery` (Celery on the same broker,
one `-P solo` worker). Every consumer is its own process (for the millions engines a
`millions.workers.Worker` running a no-op task, as in production); the producer runs in
this process with `--publishers` publishes in flight (coroutines, or threads for Celery,
whose publish blocks). The message is `{"i": n, "p": phase, "t": monotonic time}`.

Parity: durable queues and persistent messages everywhere; every publish returns only once
it is durable (publisher confirms on RabbitMQ, group commit with `synchronous = FULL` for
SQLite); the consumer acknowledges after the handler returned (`acks_late` for Celery);
the same message count and payload; the same prefetch (`--prefetch`: the worker's
concurrency, the AMQP `basic.qos`, Celery's prefetch multiplier with the solo pool).

Each round, per system, on a queue of its own: (1) publish-only: publish `--messages`
with no consumer running; (2) drain: start the consumer and time it from its first
delivery to its last ack; (3) end to end: publish `--messages` more while that consumer
runs, timed from the first publish to the last ack, with the latency from each publish
call to the start of its handler (p50, p99). CPU per message: this process, the consumer
process (first delivery to last ack) and the RabbitMQ server (`beam.smp`), over both
phases. Rounds interleave the systems in a rotating order; medians are reported, and the
ratios between systems are medians of per-round ratios (the machine's other load changes
between rounds, less within one). Queues, files and processes are removed afterwards.
Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aio_pika
import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import payload

from millions.queue import QueueConfig
from millions.queue.rabbitmq import RabbitQueue
from millions.queue.sqlite import SqliteQueue

HERE = Path(__file__).resolve().parent
SYSTEMS = ("sqlite", "rabbitmq", "aio-pika", "celery")
LABELS = {
    "sqlite": "millions SQLite engine",
    "rabbitmq": "millions RabbitMQ engine",
    "aio-pika": "plain aio-pika loop",
    "celery": "Celery (solo, acks_late)",
}
SQLITE_TARGET = 10_000.0
AIO_PIKA_RATIO_TARGET = 0.9

Publish = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class RoundResult:
    publish_only: float
    drain: float
    end_to_end: float
    publish_during: float
    p50_ms: float
    p99_ms: float
    redeliveries: int
    producer_cpu_us: float
    consumer_cpu_us: float
    broker_cpu_us: float


async def publish_lanes(publish: Publish, messages: int, phase: int, lanes: int) -> float:
    """Publish `messages` with `lanes` publishes in flight; the seconds it took."""
    indices = iter(range(messages))

    async def lane() -> None:
        for index in indices:
            await publish(payload(index, phase))

    start = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(lanes)))
    return time.monotonic() - start


def publish_threads(
    send: Callable[[dict[str, Any]], Any], messages: int, phase: int, lanes: int
) -> float:
    """`publish_lanes` for a blocking client: `lanes` threads."""
    indices = iter(range(messages))
    lock = threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            send(payload(index, phase))

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - start


class Producer:
    """Publishes one phase of one system; `setup` before, `cleanup` after the run."""

    def __init__(self, system: str, queue: str, args: argparse.Namespace, workdir: Path) -> None:
        self.system = system
        self.queue = queue
        self.args = args
        self.db_path = workdir / f"{queue}.sqlite3"
        self._close: list[Callable[[], Awaitable[Any]]] = []
        self._publish: Publish | None = None
        self._celery: Any = None

    async def setup(self) -> None:
        queue, url = self.queue, self.args.url
        if self.system == "sqlite":
            engine = SqliteQueue(self.db_path, QueueConfig())
            self._close.append(engine.close)
            self._publish = lambda message: engine.publish(queue, message)
        elif self.system == "rabbitmq":
            rabbit = RabbitQueue(url, QueueConfig())
            self._close.append(rabbit.close)
            self._publish = lambda message: rabbit.publish(queue, message)
        elif self.system == "aio-pika":
            connection = await aio_pika.connect(url)
            self._close.append(connection.close)
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(queue, durable=True)
            exchange = channel.default_exchange

            def publish(message: dict[str, Any]) -> Awaitable[Any]:
                body = aio_pika.Message(
                    json.dumps(message).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                return exchange.publish(body, routing_key=queue)

            self._publish = publish
        else:
            from celery_app import make_app

            app = make_app(url, queue, self.args.prefetch, self.args.publishers)
            with app.connection_for_write() as connection:
                app.amqp.queues[queue].bind(connection.default_channel).declare()
            self._celery = app

    async def run_phase(self, phase: int) -> float:
        if self._celery is not None:
            app, queue = self._celery, self.queue

            def send(message: dict[str, Any]) -> None:
                app.send_task("bench.noop", args=[message], queue=queue)

            return await asyncio.to_thread(
                publish_threads, send, self.args.messages, phase, self.args.publishers
            )
        assert self._publish is not None
        return await publish_lanes(self._publish, self.args.messages, phase, self.args.publishers)

    async def cleanup(self) -> None:
        url, queue = self.args.url, self.queue
        if self.system == "rabbitmq":
            admin = RabbitQueue(url, QueueConfig())
            await admin.delete_queue(queue)
            await admin.close()
        elif self.system in ("aio-pika", "celery"):
            connection = await aio_pika.connect(url)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(queue)
                if self.system == "celery":
                    await channel.exchange_delete(queue)
        for close in reversed(self._close):
            await close()
        if self._celery is not None:
            self._celery.close()
        remove_database(self.db_path)


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def start_consumer(
    system: str, queue: str, args: argparse.Namespace, out: Path, db_path: Path
) -> subprocess.Popen[bytes]:
    log = (out / "consumer.log").open("wb")
    if system == "celery":
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "BENCH_QUEUE": queue,
            "BENCH_URL": args.url,
            "BENCH_MESSAGES": str(args.messages),
            "BENCH_PREFETCH": str(args.prefetch),
            "BENCH_OUT": str(out),
        }
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "celery_app",
            "worker",
            "-P",
            "solo",
            "-Q",
            queue,
            "-n",
            f"{queue}@%h",
            "--prefetch-multiplier",
            str(args.prefetch),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        return subprocess.Popen(command, cwd=HERE, env=env, stdout=log, stderr=log)
    command = [
        sys.executable,
        str(HERE / "consumers.py"),
        system,
        "--queue",
        queue,
        "--messages",
        str(args.messages),
        "--prefetch",
        str(args.prefetch),
        "--out",
        str(out),
    ]
    command += ["--path", str(db_path)] if system == "sqlite" else ["--url", args.url]
    return subprocess.Popen(command, stdout=log, stderr=log)


async def phase_result(
    out: Path, phase: int, consumer: subprocess.Popen[bytes], timeout_s: float
) -> dict[str, Any]:
    """The consumer's numbers for `phase`, once it has acknowledged every message."""
    target = out / f"phase{phase}.json"
    deadline = time.monotonic() + timeout_s
    while not target.exists():
        if consumer.poll() is not None:
            log = (out / "consumer.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"consumer exited with {consumer.returncode}:\n{log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"phase {phase} not acknowledged within {timeout_s:.0f} s")
        await asyncio.sleep(0.02)
    result: dict[str, Any] = json.loads(target.read_text())
    return result


def stop(consumer: subprocess.Popen[bytes]) -> None:
    if consumer.poll() is None:
        consumer.send_signal(signal.SIGTERM)
    try:
        consumer.wait(20)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait()


async def run_system(system: str, args: argparse.Namespace, workdir: Path) -> RoundResult:
    queue = f"bench.{system}.{uuid.uuid4().hex[:8]}"
    out = workdir / queue
    out.mkdir()
    producer = Producer(system, queue, args, workdir)
    timeout_s = max(120.0, args.messages / 200)
    consumer: subprocess.Popen[bytes] | None = None
    try:
        await producer.setup()
        broker_before = broker_cpu_s(system)
        cpu_before = time.process_time()
        publish_only = await producer.run_phase(0)
        producer_cpu = time.process_time() - cpu_before
        consumer = start_consumer(system, queue, args, out, producer.db_path)
        drain = await phase_result(out, 0, consumer, timeout_s)
        start = time.monotonic()
        cpu_before = time.process_time()
        publish_during = await producer.run_phase(1)
        producer_cpu += time.process_time() - cpu_before
        end_to_end = await phase_result(out, 1, consumer, timeout_s)
        broker_cpu = broker_cpu_s(system) - broker_before
    finally:
        if consumer is not None:
            stop(consumer)
        await producer.cleanup()
    n = args.messages
    return RoundResult(
        publish_only=n / publish_only,
        drain=n / (drain["last_ack"] - drain["first_start"]),
        end_to_end=n / (end_to_end["last_ack"] - start),
        publish_during=n / publish_during,
        p50_ms=end_to_end["p50_ms"],
        p99_ms=end_to_end["p99_ms"],
        redeliveries=drain["deliveries"] + end_to_end["deliveries"] - 2 * n,
        producer_cpu_us=producer_cpu / (2 * n) * 1e6,
        consumer_cpu_us=end_to_end["cpu_s"] / (2 * n) * 1e6,
        broker_cpu_us=broker_cpu / (2 * n) * 1e6,
    )


def broker_cpu_s(system: str) -> float:
    """CPU seconds the RabbitMQ server (beam.smp) has used; 0 for the SQLite engine."""
    if system == "sqlite":
        return 0.0
    found = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True)
    total = 0.0
    for pid in found.stdout.split():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rabbitmq_version() -> str:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def paired_ratio(ours: list[RoundResult], theirs: list[RoundResult]) -> float:
    """The median over rounds of ours/theirs end to end, each pair run minutes apart, so
    the load other programs put on the machine shifts both sides of a ratio alike."""
    return statistics.median(a.end_to_end / b.end_to_end for a, b in zip(ours, theirs, strict=True))


def total_cpu_us(results: list[RoundResult]) -> float:
    return statistics.median(
        r.producer_cpu_us + r.consumer_cpu_us + r.broker_cpu_us for r in results
    )


def median(results: list[RoundResult], name: str) -> float:
    return statistics.median(getattr(result, name) for result in results)


def report(results: dict[str, list[RoundResult]], args: argparse.Namespace, command: str) -> bool:
    console = Console(width=150)
    table = Table(
        title=f"durable queue, no-op task, {args.messages} messages, medians of {args.rounds}"
    )
    for column in (
        "system",
        "publish-only msg/s",
        "drain msg/s",
        "end-to-end msg/s",
        "publish (during e2e) msg/s",
        "latency p50 ms",
        "latency p99 ms",
        "CPU µs/msg producer / consumer / broker",
    ):
        table.add_column(column, justify="left" if column == "system" else "right")
    summary: dict[str, dict[str, float]] = {}
    for system, rounds in results.items():
        row = {
            name: median(rounds, name)
            for name in (
                "publish_only",
                "drain",
                "end_to_end",
                "publish_during",
                "p50_ms",
                "p99_ms",
                "producer_cpu_us",
                "consumer_cpu_us",
                "broker_cpu_us",
            )
        }
        row["redeliveries"] = sum(result.redeliveries for result in rounds)
        summary[system] = row
        table.add_row(
            LABELS[system],
            f"{row['publish_only']:,.0f}",
            f"{row['drain']:,.0f}",
            f"{row['end_to_end']:,.0f}",
            f"{row['publish_during']:,.0f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['producer_cpu_us']:.0f} / {row['consumer_cpu_us']:.0f} / "
            + (f"{row['broker_cpu_us']:.0f}" if system != "sqlite" else "-"),
        )
    console.print(table)
    for system, rounds in results.items():
        e2e = ", ".join(f"{result.end_to_end:,.0f}" for result in rounds)
        print(f"{system:9} end-to-end per round: {e2e} msg/s")
    print(json.dumps({"command": command, "summary": summary}, indent=2))
    checks: list[tuple[str, float, bool]] = []
    if "sqlite" in summary:
        ratio = summary["sqlite"]["end_to_end"] / SQLITE_TARGET
        checks.append(("SQLite engine end to end vs 10,000 msg/s (>= 1)", ratio, ratio >= 1))
    if "rabbitmq" in summary and "aio-pika" in summary:
        ratio = paired_ratio(results["rabbitmq"], results["aio-pika"])
        met = ratio >= AIO_PIKA_RATIO_TARGET
        checks.append(("RabbitMQ engine vs plain aio-pika, end to end (>= 0.9)", ratio, met))
    if "rabbitmq" in summary and "celery" in summary:
        ratio = paired_ratio(results["rabbitmq"], results["celery"])
        checks.append(("RabbitMQ engine vs Celery, end to end (> 1)", ratio, ratio > 1))
    for name, ratio, met in checks:
        print(f"{name}: {ratio:.2f}x {'met' if met else 'NOT met'}")
    for other in ("aio-pika", "celery"):
        if "rabbitmq" in results and other in results:
            cpu = total_cpu_us(results["rabbitmq"]) / total_cpu_us(results[other])
            print(f"CPU per message, RabbitMQ engine / {other} (all three processes): {cpu:.2f}")
    ok = all(met for _, _, met in checks)
    return ok


async def run(args: argparse.Namespace, systems: list[str]) -> dict[str, list[RoundResult]]:
    results: dict[str, list[RoundResult]] = {system: [] for system in systems}
    with tempfile.TemporaryDirectory(prefix="millions-queue-bench-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        for round_index in range(args.rounds):
            # Rotate the order each round, so no system always runs first or last.
            shift = round_index % len(systems)
            for system in systems[shift:] + systems[:shift]:
                result = await run_system(system, args, workdir)
                results[system].append(result)
                print(
                    f"round {round_index + 1} {system:9} publish-only {result.publish_only:8,.0f}"
                    f"  drain {result.drain:8,.0f}  end-to-end {result.end_to_end:8,.0f} msg/s"
                    f"  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms",
                    flush=True,
                )
    return results


def systems_list(text: str) -> list[str]:
    systems = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        raise argparse.ArgumentTypeError(f"systems are a comma list of {', '.join(SYSTEMS)}")
    return systems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=50, help="publishes in flight")
    parser.add_argument("--prefetch", type=int, default=100, help="consumer prefetch/concurrency")
    parser.add_argument("--systems", type=systems_list, default=list(SYSTEMS))
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/queue/bench.py", *sys.argv[1:]])
    print(command)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version},"
        f" RabbitMQ {rabbitmq_version()}, aio-pika {version('aio-pika')},"
        f" celery {version('celery')}",
        flush=True,
    )
    load_before = os.getloadavg()[0]
    results = uvloop.run(run(args, args.systems))
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    ok = report(results, args, command)
    print("targets:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
