"""The RabbitMQ delay chain, simulated with AMQP topic matching (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.queue import delay_chain
from millions.queue.messages import MAX_DELAY_S


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def simulate(units: int) -> tuple[int, list[int]]:
    """Follow a message through the declared bindings: total wait and levels visited."""
    key = delay_chain.routing_key(units)
    level = delay_chain.entry_level(units)
    waited, visited = 0, []
    while level >= 0:
        to_queue = topic_matches(delay_chain.bit_pattern(level, "1"), key)
        onwards = topic_matches(delay_chain.bit_pattern(level, "0"), key)
        assert to_queue != onwards, "exactly one binding of each level must match"
        if to_queue:
            waited += delay_chain.level_ttl_ms(level)
            visited.append(level)
        level -= 1  # the level queue dead-letters, or the exchange binds, one level down
    return waited, visited


@given(st.integers(1, (1 << delay_chain.LEVELS) - 1))
def test_a_message_waits_exactly_its_units(units: int) -> None:
    waited, visited = simulate(units)
    assert waited == round(units * delay_chain.UNIT_S * 1000)
    assert visited == [level for level in reversed(range(delay_chain.LEVELS)) if units >> level & 1]


@given(st.floats(0.0, MAX_DELAY_S))
def test_delays_round_up_never_early(delay_s: float) -> None:
    units = delay_chain.delay_units(delay_s)
    assert units * delay_chain.UNIT_S >= delay_s - 1e-6
    assert units * delay_chain.UNIT_S < delay_s + delay_chain.UNIT_S + 1e-6


def test_the_chain_covers_the_longest_delay() -> None:
    assert delay_chain.delay_units(MAX_DELAY_S) < 1 << delay_chain.LEVELS
    with pytest.raises(ValueError, match="beyond"):
        delay_chain.delay_units(2 * MAX_DELAY_S)


def test_names_and_ttls() -> None:
    assert delay_chain.level_name("photo.process", 3) == "photo.process.delay.03"
    assert delay_chain.level_ttl_ms(0) == 100
    assert delay_chain.level_ttl_ms(10) == 102_400
    assert delay_chain.delay_units(0.3) == 3
    assert delay_chain.delay_units(0.0) == 0
    with pytest.raises(ValueError):
        delay_chain.entry_level(0)
