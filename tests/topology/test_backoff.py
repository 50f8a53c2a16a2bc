from hypothesis import given
from hypothesis import strategies as st

from millions.topology.backoff import RestartBackoff


def test_backoff_doubles_up_to_cap_and_resets_after_a_stable_run() -> None:
    backoff = RestartBackoff(base_s=0.25, cap_s=2.0, stable_s=10.0)
    delays = [backoff.next_delay(uptime_s=0.1) for _ in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.next_delay(uptime_s=30.0) == 0.25


@given(st.lists(st.floats(min_value=0, max_value=100), max_size=50))
def test_backoff_never_exceeds_cap_nor_falls_below_base(uptimes: list[float]) -> None:
    backoff = RestartBackoff(base_s=0.1, cap_s=5.0)
    for uptime in uptimes:
        assert 0.1 <= backoff.next_delay(uptime) <= 5.0
