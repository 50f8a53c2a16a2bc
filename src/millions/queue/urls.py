"""Queue URLs: which engine and where. Pure.

* `sqlite:///var/lib/millions/queue.db` (absolute), `sqlite://queue.db` (relative), or a
  plain path starting with `/` or `.`: the embedded engine, one SQLite file.
* `amqp://user:password@host:5672/vhost` or `amqps://...`: RabbitMQ.

Anything else is a `QueueURLError` whose message shows the accepted forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

Engine = Literal["sqlite", "rabbitmq"]
EXAMPLES = "sqlite:///path/queue.db or amqp://guest:guest@127.0.0.1:5672/"
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class QueueURLError(ValueError):
    """A queue URL that names no usable engine; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class QueueURL:
    """A parsed queue URL: `path` for sqlite, `url` (as given) for rabbitmq."""

    engine: Engine
    url: str
    path: Path | None = None

    def redacted(self) -> str:
        """The URL with any password replaced, for logs and status output."""
        if self.engine != "rabbitmq":
            return self.url
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return SplitResult(parts.scheme, f"{user}:***@{host}", *parts[2:]).geturl()


def parse_queue_url(url: str) -> QueueURL:
    """Parse `url`; raise `QueueURLError` naming the problem and the accepted forms."""
    if not isinstance(url, str) or not url.strip():
        raise QueueURLError(f"the queue URL is empty; expected {EXAMPLES}")
    if url.startswith("sqlite:"):
        return _sqlite(url, url.removeprefix("sqlite:").removeprefix("//"))
    if url.startswith(("/", ".")):
        return _sqlite(url, url)
    if url.startswith(("amqp://", "amqps://")):
        return _amqp(url)
    scheme = url.partition(":")[0]
    raise QueueURLError(f"unsupported queue URL scheme {scheme[:40]!r}; expected {EXAMPLES}")


def _sqlite(url: str, path_text: str) -> QueueURL:
    if not path_text:
        raise QueueURLError(f"{url!r} names no file; expected e.g. sqlite:///path/queue.db")
    if "\x00" in path_text:
        raise QueueURLError("the sqlite queue path contains a NUL character")
    if path_text.endswith("/"):
        raise QueueURLError(f"{path_text!r} is a directory; name the database file in it")
    return QueueURL("sqlite", url, Path(path_text))


def _amqp(url: str) -> QueueURL:
    if _CONTROL.search(url):
        raise QueueURLError("the amqp URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise QueueURLError(f"bad amqp URL: {exc}; expected {EXAMPLES}") from None
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):
        host = host_port.partition("]")[0] + "]"
    else:
        host = host_port.partition(":")[0]
    if not _HOST.fullmatch(host):
        raise QueueURLError(f"the amqp URL needs a host name or address; expected {EXAMPLES}")
    if port == 0:
        raise QueueURLError("the amqp port must be between 1 and 65535")
    if parts.fragment or parts.query:
        raise QueueURLError("the amqp URL must not have a ?query or #fragment")
    return QueueURL("rabbitmq", url)
