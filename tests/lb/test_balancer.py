"""The pure balancer core: health state machine and least-outstanding choice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from millions.lb.backends_file import BackendsFileError, parse_backends
from millions.lb.balancer import Backend, Balancer, Health

ADDRESSES = [f"127.0.51.{i}:8000" for i in range(1, 6)]


def _up(balancer: Balancer, *addresses: str) -> list[Backend]:
    balancer.set_backends(addresses)
    backends = [balancer.backends[a] for a in addresses]
    for backend in backends:
        balancer.check_passed(backend)
    return backends


def test_new_backend_comes_up_after_its_first_check() -> None:
    balancer = Balancer(rise=3, fall=2)
    added, draining = balancer.set_backends(ADDRESSES[:1])
    (backend,) = added
    assert draining == [] and backend.state == "checking" and balancer.choose() is None
    assert balancer.check_passed(backend) and backend.state == "up"
    assert balancer.choose() is backend


def test_rise_and_fall_counts() -> None:
    balancer = Balancer(rise=3, fall=2)
    (backend,) = _up(balancer, ADDRESSES[0])
    assert not balancer.check_failed(backend) and backend.health is Health.UP
    assert balancer.check_passed(backend) is False  # resets the failure count
    assert not balancer.check_failed(backend)
    assert balancer.check_failed(backend) and backend.health is Health.DOWN
    assert not balancer.check_passed(backend)
    assert not balancer.check_passed(backend)
    assert balancer.check_passed(backend) and backend.health is Health.UP


def test_passive_failure_marks_down_at_once() -> None:
    balancer = Balancer(rise=2, fall=5)
    first, second = _up(balancer, *ADDRESSES[:2])
    assert balancer.passive_failure(first)
    assert [balancer.choose() for _ in range(3)] == [second, second, second]


def test_least_outstanding_with_round_robin_ties() -> None:
    balancer = Balancer(rise=1, fall=1)
    a, b, c = _up(balancer, *ADDRESSES[:3])
    # equal load: round-robin
    picks = []
    for _ in range(6):
        chosen = balancer.choose()
        assert chosen is not None
        picks.append(chosen)
        balancer.finish(chosen)
    assert picks == [a, b, c, a, b, c]
    # a slow backend keeps its requests: the others are preferred
    slow = balancer.choose()
    assert slow is not None
    others = [balancer.choose() for _ in range(2)]
    assert slow not in others and set(others) == {a, b, c} - {slow}


def test_exclusion_and_drain() -> None:
    balancer = Balancer(rise=1, fall=1)
    a, b = _up(balancer, *ADDRESSES[:2])
    assert balancer.choose([a]) is b
    assert balancer.choose([a, b]) is None
    balancer.finish(b)
    held = balancer.choose()  # b is in flight now... or a: keep whichever
    assert held is not None
    _, draining = balancer.set_backends([ADDRESSES[1]] if held is a else [ADDRESSES[0]])
    assert draining == [held] and held.state == "draining"
    assert not balancer.drained(held)
    balancer.finish(held)
    assert balancer.drained(held)
    balancer.forget(held)
    assert held.address not in balancer.backends


def test_readded_draining_backend_keeps_its_health() -> None:
    balancer = Balancer(rise=1, fall=1)
    (a,) = _up(balancer, ADDRESSES[0])
    balancer.set_backends([])
    assert a.draining and balancer.choose() is None
    added, _ = balancer.set_backends([ADDRESSES[0]])
    assert added == [] and a.state == "up" and balancer.choose() is a


class BalancerMachine(RuleBasedStateMachine):
    """Random membership changes, checks, passive failures, picks and finishes."""

    def __init__(self) -> None:
        super().__init__()
        self.balancer = Balancer(rise=2, fall=2)
        self.outstanding: list[Backend] = []

    @rule(addresses=st.lists(st.sampled_from(ADDRESSES), max_size=5))
    def configure(self, addresses: list[str]) -> None:
        self.balancer.set_backends(addresses)
        for backend in list(self.balancer.backends.values()):
            if self.balancer.drained(backend):
                self.balancer.forget(backend)

    @precondition(lambda self: self.balancer.backends)
    @rule(data=st.data(), passed=st.booleans())
    def check(self, data: st.DataObject, passed: bool) -> None:
        backend = data.draw(
            st.sampled_from(sorted(self.balancer.backends.values(), key=lambda b: b.address))
        )
        if passed:
            self.balancer.check_passed(backend)
        else:
            self.balancer.check_failed(backend)

    @precondition(lambda self: self.balancer.backends)
    @rule(data=st.data())
    def passive(self, data: st.DataObject) -> None:
        backend = data.draw(
            st.sampled_from(sorted(self.balancer.backends.values(), key=lambda b: b.address))
        )
        self.balancer.passive_failure(backend)
        assert backend.health is Health.DOWN

    @rule(data=st.data())
    def pick(self, data: st.DataObject) -> None:
        candidates = list(self.balancer.backends.values())
        exclude = data.draw(st.lists(st.sampled_from(candidates), max_size=2)) if candidates else []
        eligible = [b for b in candidates if b.eligible and b not in exclude]
        low = min((b.in_flight for b in eligible), default=None)
        chosen = self.balancer.choose(exclude)
        if not eligible:
            assert chosen is None
            return
        assert chosen is not None and chosen in eligible
        assert chosen.in_flight - 1 == low  # it was among the least loaded
        self.outstanding.append(chosen)

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        backend = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1)))
        self.balancer.finish(backend)

    @invariant()
    def counts_match(self) -> None:
        for backend in self.balancer.backends.values():
            assert backend.in_flight == sum(1 for b in self.outstanding if b is backend)
            assert backend.in_flight >= 0
        assert self.balancer.up_count == sum(
            1 for b in self.balancer.backends.values() if b.eligible
        )


TestBalancerMachine = BalancerMachine.TestCase
TestBalancerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(st.integers(1, 6), st.integers(0, 30))
def test_round_robin_is_fair_when_idle(count: int, rounds: int) -> None:
    balancer = Balancer(rise=1, fall=1)
    backends = _up(balancer, *[f"127.0.52.{i}:80" for i in range(count)])
    seen: dict[str, int] = {b.address: 0 for b in backends}
    for _ in range(rounds * count):
        chosen = balancer.choose()
        assert chosen is not None
        seen[chosen.address] += 1
        balancer.finish(chosen)
    assert set(seen.values()) == {rounds}


def test_backends_file_validation() -> None:
    assert parse_backends({"backends": ["127.0.0.1:80", "127.0.0.1:80", "h:1"]}) == [
        "127.0.0.1:80",
        "h:1",
    ]
    for bad in (
        {},
        {"backends": "x"},
        {"backends": [1]},
        {"backends": ["nohost"]},
        {"backends": ["h:0"]},
        {"backends": ["h:99999"]},
    ):
        with pytest.raises(BackendsFileError):
            parse_backends(bad)
