"""The shard map: tiling, lookup, reassigning ranges, merging, JSON."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.shards.keyspace import KEYSPACE_END, KeyRange
from millions.shards.shard_map import ShardMap, ShardMapError

SHARDS = ("s1", "s2", "s3", "s4")


def test_initial_map_splits_the_keyspace_evenly() -> None:
    shard_map = ShardMap.initial(["s1", "s2"])
    assert shard_map.version == 1
    assert shard_map.to_dict() == {"version": 1, "ranges": {"-80": "s1", "80-": "s2"}}
    assert shard_map.shard_for(0) == "s1"
    assert shard_map.shard_for((0x80 << 56) - 1) == "s1"
    assert shard_map.shard_for(0x80 << 56) == "s2"
    assert shard_map.shard_for(KEYSPACE_END - 1) == "s2"
    assert ShardMap.initial(["only"]).to_dict()["ranges"] == {"-": "only"}


def test_reassigning_a_subrange_bumps_the_version_and_splits_the_entry() -> None:
    shard_map = ShardMap.initial(["s1", "s2"]).reassign(KeyRange.parse("40-60"), "s3")
    assert shard_map.version == 2
    assert shard_map.to_dict()["ranges"] == {"-40": "s1", "40-60": "s3", "60-80": "s1", "80-": "s2"}
    assert shard_map.ranges_of("s1") == (KeyRange.parse("-40"), KeyRange.parse("60-80"))
    assert shard_map.shards() == ("s1", "s3", "s2")


def test_moving_a_range_back_merges_it_with_its_neighbours() -> None:
    start = ShardMap.initial(["s1", "s2"])
    there = start.reassign(KeyRange.parse("40-80"), "s2")
    assert there.to_dict()["ranges"] == {"-40": "s1", "40-": "s2"}
    back = there.reassign(KeyRange.parse("40-80"), "s1")
    assert back.entries == start.entries and back.version == 3


def test_a_range_spanning_two_owners_cannot_be_reassigned() -> None:
    shard_map = ShardMap.initial(["s1", "s2"])
    with pytest.raises(ShardMapError, match="more than one shard"):
        shard_map.reassign(KeyRange.parse("40-c0"), "s3")
    assert shard_map.owner_of(KeyRange.parse("40-80")) == "s1"


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (((KeyRange.parse("-80"), "s1"),), "end of the keyspace"),
        (((KeyRange.parse("-40"), "s1"), (KeyRange.parse("80-"), "s2")), "gap"),
        (((KeyRange.parse("-80"), "s1"), (KeyRange.parse("40-"), "s2")), "overlaps"),
        (((KeyRange.parse("-"), ""),), "no shard"),
    ],
)
def test_maps_that_do_not_tile_the_keyspace_are_refused(
    entries: tuple[tuple[KeyRange, str], ...], problem: str
) -> None:
    with pytest.raises(ShardMapError, match=problem):
        ShardMap(1, entries)


def test_json_round_trip_and_bad_json() -> None:
    shard_map = ShardMap.initial(["a", "b", "c"]).reassign(KeyRange.parse("-10"), "d")
    assert ShardMap.from_json(shard_map.to_json()) == shard_map
    for text in ("nope", "[]", '{"version": 1}', '{"version": 1, "ranges": {"zz": "a"}}'):
        with pytest.raises(ShardMapError):
            ShardMap.from_json(text)


@st.composite
def moves(draw: st.DrawFn) -> list[tuple[int, int, str]]:
    """Random (start, end, shard) reassignments (each kept inside one owner's range)."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, KEYSPACE_END - 1),
                st.integers(1, KEYSPACE_END),
                st.sampled_from(SHARDS),
            ),
            max_size=8,
        )
    )


@given(moves(), st.lists(st.integers(0, KEYSPACE_END - 1), min_size=1, max_size=20))
def test_lookups_agree_with_a_per_id_model(
    steps: list[tuple[int, int, str]], probes: list[int]
) -> None:
    shard_map = ShardMap.initial(["s1", "s2"])
    model: list[tuple[KeyRange, str]] = list(shard_map.entries)  # later entries win
    for start, end, shard in steps:
        entry_range, _ = shard_map.entry_for(start)
        end = min(max(end, start + 1), entry_range.end)
        key_range = KeyRange(start, end)
        shard_map = shard_map.reassign(key_range, shard)
        model.append((key_range, shard))
    for keyspace_id in probes:
        expected = [shard for r, shard in model if r.contains(keyspace_id)][-1]
        assert shard_map.shard_for(keyspace_id) == expected
    names = [shard for _, shard in shard_map.entries]
    assert all(a != b for a, b in itertools.pairwise(names))  # neighbours merged
    assert shard_map.version == 1 + len(steps)
