"""Client address -> region: longest prefix match, the ECS scope, the MaxMind lookup."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from millions.dns.regions import GeoIpDatabase, Location, Locator, PrefixTable

TABLE = PrefixTable(
    {
        "127.0.131.0/24": "us",
        "127.0.132.0/24": "eu",
        "127.0.132.128/25": "us",
        "10.0.0.0/8": "eu",
        "2001:db8::/32": "eu",
    }
)
LOCATOR = Locator(TABLE, "us")


def locate(address: str) -> Location:
    return LOCATOR.locate(ipaddress.ip_address(address))


def test_longest_prefix_wins() -> None:
    assert locate("127.0.131.9") == Location("us", 24)
    assert locate("127.0.132.9") == Location("eu", 25)  # /25 "us" lies next to it
    assert locate("127.0.132.200") == Location("us", 25)
    assert locate("10.1.2.3") == Location("eu", 8)
    assert locate("2001:db8:1::5") == Location("eu", 32)


def test_unmatched_addresses_get_the_default_region_and_a_scope_that_excludes_prefixes() -> None:
    assert locate("127.0.133.1") == Location("us", 24)  # a /23 would hold the eu /24
    assert locate("192.0.2.1") == Location("us", 1)  # 0/1 holds 10/8 and 127/8
    assert locate("2001:db9::1") == Location("us", 32)
    assert Locator(PrefixTable({}), "us").locate(ipaddress.ip_address("1.2.3.4")) == Location(
        "us", 0
    )


def test_source_addresses_are_remembered() -> None:
    locator = Locator(TABLE, "us")
    assert locator.region_of_source("127.0.132.9") == "eu"
    assert locator.region_of_source("127.0.132.9") == "eu"
    assert locator.region_of_source("not an address") == "us"
    assert len(locator._sources) == 2


def _network(low_bits: int, length: int) -> str:
    return str(ipaddress.ip_network((0x0A000000 | low_bits, length), strict=False))


prefixes = st.dictionaries(
    st.builds(_network, st.integers(0, 0xFFFFFF), st.integers(9, 30)),
    st.sampled_from(["a", "b", "c"]),
    max_size=8,
)


@given(table=prefixes, host=st.integers(0x0A000000, 0x0AFFFFFF), data=st.data())
def test_every_address_in_the_scope_gets_the_same_region(
    table: dict[str, str], host: int, data: Any
) -> None:
    locator = Locator(PrefixTable(table), "z")
    address = ipaddress.IPv4Address(host)
    located = locator.locate(address)
    block = ipaddress.ip_network((host, located.scope), strict=False)
    probes = [int(ipaddress.ip_network(p).network_address) for p in table]
    probes += [int(ipaddress.ip_network(p).broadcast_address) for p in table]
    probes += data.draw(
        st.lists(st.integers(int(block.network_address), int(block.broadcast_address)), max_size=20)
    )
    for probe in probes:
        if ipaddress.IPv4Address(probe) in block:
            assert locator.locate(ipaddress.IPv4Address(probe)).region == located.region


class FakeReader:
    """Stands in for a maxminddb Reader."""

    def __init__(self, records: dict[str, tuple[dict[str, Any] | None, int]]) -> None:
        self.records = records
        self.closed = False

    def get_with_prefix_len(self, address: str) -> tuple[dict[str, Any] | None, int]:
        return self.records.get(address, (None, 8))

    def close(self) -> None:
        self.closed = True


def test_maxmind_country_then_continent_then_prefix_table() -> None:
    reader = FakeReader(
        {
            "192.0.2.1": ({"country": {"iso_code": "DE"}, "continent": {"code": "EU"}}, 20),
            "198.51.100.1": ({"country": {"iso_code": "FR"}, "continent": {"code": "EU"}}, 22),
            "203.0.113.1": ({"country": {"iso_code": "JP"}, "continent": {"code": "AS"}}, 18),
        }
    )
    geoip = GeoIpDatabase(reader, countries={"DE": "eu", "US": "us"}, continents={"EU": "eu"})
    locator = Locator(TABLE, "us", geoip)
    assert locator.locate(ipaddress.ip_address("192.0.2.1")) == Location("eu", 20)
    assert locator.locate(ipaddress.ip_address("198.51.100.1")) == Location("eu", 22)
    assert locator.locate(ipaddress.ip_address("203.0.113.1")) == Location("us", 18)
    assert locator.locate(ipaddress.ip_address("127.0.132.9")) == Location("eu", 25)
    geoip.close()
    assert reader.closed
