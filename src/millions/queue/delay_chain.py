"""Delayed delivery on RabbitMQ without a broker plugin: a binary chain of TTL queues. Pure.

Each queue `Q` owns `LEVELS` delay levels. Level `i` is a durable queue `Q.delay.<i>`
whose every message waits `2**i` units (`x-message-ttl`) and is then dead-lettered into
the exchange of level `i-1` (level 0 dead-letters into `Q` itself), plus a topic
exchange `Q.delay.<i>` that sends a message on to level queue `i` when bit `i` of the
delay is 1, or straight to level `i-1` (finally `Q`) when it is 0.

A delay of `n` units is published to the exchange of its highest set bit with the bits
of `n` as routing key (`"0.0.1.0.1..."`, most significant first); dead-lettering keeps
the routing key, so the message visits exactly the levels of its set bits and arrives
after `n` units. Every message in a level queue has the same TTL, so it expires from the
head in order (per-message TTLs in one queue would block behind a longer one). Because
delays are rounded up to whole units, a message is never delivered early.

This is NServiceBus's delay infrastructure scaled down to one queue; unlike a queue per
distinct delay value it needs a fixed set of entities, whose depths add up to the
queue's `delayed` count.
"""

from __future__ import annotations

import math

#: One unit of delay (seconds): the granularity delays are rounded up to.
UNIT_S = 0.1
#: 2**23 units is about 9.7 days, above the 7-day `MAX_DELAY_S`.
LEVELS = 23


def delay_units(delay_s: float) -> int:
    """Whole units covering `delay_s` (rounded up, so never early)."""
    units = math.ceil(round(delay_s / UNIT_S, 6))
    if units >= 1 << LEVELS:
        raise ValueError(f"a delay of {delay_s} s is beyond the delay chain's range")
    return max(units, 0)


def routing_key(units: int) -> str:
    """The delay's bits as topic words, most significant level first."""
    return ".".join("1" if units >> level & 1 else "0" for level in reversed(range(LEVELS)))


def entry_level(units: int) -> int:
    """The level a delay of `units` (> 0) is published to: its highest set bit."""
    if units < 1:
        raise ValueError("a delay of zero units needs no delay chain")
    return units.bit_length() - 1


def level_name(queue: str, level: int) -> str:
    """Name of the level's queue and of its exchange (separate namespaces in AMQP)."""
    return f"{queue}.delay.{level:02d}"


def level_ttl_ms(level: int) -> int:
    return round((1 << level) * UNIT_S * 1000)


def bit_pattern(level: int, bit: str) -> str:
    """Topic binding matching routing keys whose bit `level` is `bit`."""
    return "*." * (LEVELS - 1 - level) + bit + ".#"
