"""Message bodies and names: JSON payloads, size limits, queue names, idempotency keys. Pure.

A payload is any JSON value. It is encoded once, at publish, to compact UTF-8 JSON and
checked against the size limit before anything is written, so a producer learns at the
call site that a message cannot be queued (`MessageTooLargeError`,
`UnserializableMessageError`). Decoding never raises anything but `MessageDecodeError`:
a consumer that meets bytes it cannot read (a corrupt row, a foreign publisher)
dead-letters that one message and carries on.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: Longest delay a message may be given (delayed publish, retry backoff). The RabbitMQ
#: engine's delay chain covers this range; the SQLite engine enforces it too so both behave.
MAX_DELAY_S = 7 * 24 * 3600.0
MAX_IDEMPOTENCY_KEY_CHARS = 256
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,119}")
#: Names that passed `check_queue_name`, remembered up to a bound.
_GOOD_NAMES: set[str] = set()
MAX_REMEMBERED_NAMES = 10_000
#: Suffixes the RabbitMQ engine uses for a queue's own dead-letter and delay queues.
RESERVED_SUFFIXES = (".dead", ".delay")


class MessageError(ValueError):
    """A message that cannot be queued; the text says which limit it breaks."""


class MessageTooLargeError(MessageError):
    """The encoded payload is over the configured `max_message_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes encoded, over the {limit}-byte limit "
            "(queue max_message_bytes); store large data elsewhere and queue a reference"
        )
        self.size = size
        self.limit = limit


class UnserializableMessageError(MessageError):
    """The payload is not a JSON value (sets, bytes, objects, NaN, cycles...)."""


class MessageDecodeError(ValueError):
    """Stored message bytes that are not a UTF-8 JSON document."""


def encode_payload(payload: Any, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> bytes:
    """The stored form of `payload`: compact UTF-8 JSON of at most `max_bytes` bytes."""
    try:
        text = _ENCODER.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnserializableMessageError(
            f"message payload must be JSON (dict, list, str, int, float, bool, None): {exc}"
        ) from None
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it as a \uXXXX escape instead
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(body) > max_bytes:
        raise MessageTooLargeError(len(body), max_bytes)
    return body


def decode_payload(body: bytes) -> Any:
    """The payload stored as `body`; `MessageDecodeError` for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageDecodeError(f"message body is not UTF-8: {exc.reason}") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MessageDecodeError(f"message body is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise MessageDecodeError("message body is JSON nested too deeply") from None
    except ValueError as exc:  # e.g. integers longer than Python's int-parsing limit
        raise MessageDecodeError(f"message body is not usable JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension to JSON; `encode_payload` refuses them too."""
    raise ValueError(f"{name} is not JSON")


# Built once: `json.dumps`/`json.loads` with any option build a new coder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


#: Bits of a version-7 UUID below its 48-bit millisecond timestamp: random, but for the
#: version (7) and the variant (binary 10).
_V7_RANDOM = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_V7_MARKS = (0x7 << 76) | (0x2 << 62)


def new_message_id(now_ms: int | None = None) -> str:
    """A version-7 UUID as 32 hex digits: the publish time in milliseconds, then 74 random
    bits. No UUID object (a third of `uuid.uuid4().hex`'s cost, as every publish makes
    one), and the RabbitMQ engine reads the publish time back from the id instead of
    sending it in a header (`message_id_time`)."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10)) & _V7_RANDOM
    return f"{(now_ms & 0xFFFF_FFFF_FFFF) << 80 | _V7_MARKS | random_bits:032x}"


def message_id_time(message_id: str) -> float | None:
    """The creation time (Unix seconds, millisecond precision) a version-7 UUID in hex
    carries; None for any other id (a version-4 UUID, a foreign publisher's id)."""
    if len(message_id) != 32 or message_id[12] != "7" or message_id[16] not in "89ab":
        return None
    try:
        return int(message_id[:12], 16) / 1000
    except ValueError:
        return None


def check_queue_name(name: str) -> str:
    """Queue names are 1-120 of A-Z a-z 0-9 _ . - (starting alphanumeric), so they are safe
    as RabbitMQ queue and topic-routing names and in CLI output."""
    if type(name) is str and name in _GOOD_NAMES:  # checked on every publish and receive
        return name
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ValueError(
            f"queue name must be 1-120 of A-Z a-z 0-9 _ . - starting with a letter or digit, "
            f"got {name!r}"
        )
    if any(name.endswith(suffix) or suffix + "." in name for suffix in RESERVED_SUFFIXES):
        raise ValueError(f"queue name {name!r} uses a reserved part ('.dead' or '.delay')")
    if len(_GOOD_NAMES) < MAX_REMEMBERED_NAMES:
        _GOOD_NAMES.add(name)
    return name


def check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValueError(
            f"idempotency_key must be a str of 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters, "
            f"got {key!r:.80}"
        )
    return key


def check_delay(delay_s: float) -> float:
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
        raise ValueError(f"delay_s must be a number of seconds, got {delay_s!r}")
    if not 0 <= delay_s <= MAX_DELAY_S:  # also rejects NaN
        raise ValueError(f"delay_s must be between 0 and {MAX_DELAY_S:.0f} (7 days), got {delay_s}")
    return float(delay_s)


def check_max_attempts(max_attempts: int | None) -> int | None:
    if max_attempts is None:
        return None
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise ValueError(f"max_attempts must be a whole number, got {max_attempts!r}")
    if not 1 <= max_attempts <= 1000:
        raise ValueError(f"max_attempts must be between 1 and 1000, got {max_attempts}")
    return max_attempts


def error_text(error: str, limit: int = 2000) -> str:
    """A failure reason as stored with the message: one bounded string."""
    return error if len(error) <= limit else error[: limit - 1] + "…"


@dataclass(frozen=True)
class OutgoingMessage:
    """A publish request that passed every check, ready for an engine to store."""

    message_id: str
    body: bytes
    delay_s: float
    idempotency_key: str


def checked_publish(
    queue: str,
    payload: Any,
    delay_s: float,
    idempotency_key: str | None,
    max_attempts: int | None,
    max_message_bytes: int,
) -> OutgoingMessage:
    """Check a publish the same way on every engine, before anything is stored."""
    check_queue_name(queue)
    delay = check_delay(delay_s)
    check_max_attempts(max_attempts)
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    body = encode_payload(payload, max_message_bytes)
    message_id = new_message_id()
    return OutgoingMessage(message_id, body, delay, idempotency_key or message_id)
