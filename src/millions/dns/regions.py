"""Which region a client address belongs to, and for how wide a network that holds.

The prefix table is a longest-prefix match over configured networks (one dict per prefix
length, longest first: at most 33 or 129 probes, no tree to maintain). The scope is what
an EDNS Client Subnet answer must carry (RFC 7871 7.2.1): the prefix length over which the
answer is the same for every address, so a resolver may cache it for that network only.
It is the matched prefix's length, made longer when a more specific configured network
lies inside the matched one close to the client's address.

A MaxMind DB, when configured, is asked first; it needs the optional `maxminddb` package,
imported only then.
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Source addresses remembered by `Locator.region_of_source` before it starts over.
SOURCE_CACHE_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Location:
    region: str
    scope: int  # prefix length of the network this answer is valid for


class _FamilyTable:
    """The prefixes of one address family."""

    def __init__(self, bits: int, prefixes: list[tuple[int, int, str]]) -> None:
        self.bits = bits
        self.by_length: dict[int, dict[int, str]] = {}
        for network, length, region in prefixes:
            self.by_length.setdefault(length, {})[network] = region
        self.lengths = sorted(self.by_length, reverse=True)
        self.prefixes = [(network, length) for network, length, _ in prefixes]

    def match(self, address: int) -> tuple[str, int] | None:
        bits = self.bits
        for length in self.lengths:
            shift = bits - length
            region = self.by_length[length].get(address >> shift << shift)
            if region is not None:
                return region, length
        return None

    def scope(self, address: int, matched: int) -> int:
        """The shortest prefix of `address`, at least `matched` bits long, that holds no
        network longer than `matched` (whose clients would get another answer)."""
        scope = matched
        for network, length in self.prefixes:
            if length <= matched:
                continue
            differing = (address ^ network) >> (self.bits - length)
            if differing:  # the network does not hold the address: split just past it
                scope = max(scope, length - differing.bit_length() + 1)
        return scope


class PrefixTable:
    """Client network (CIDR) -> region, longest match."""

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        v4: list[tuple[int, int, str]] = []
        v6: list[tuple[int, int, str]] = []
        for text, region in prefixes.items():
            network = ipaddress.ip_network(text)
            entry = (int(network.network_address), network.prefixlen, region)
            (v4 if network.version == 4 else v6).append(entry)
        self.families = {4: _FamilyTable(32, v4), 6: _FamilyTable(128, v6)}

    def lookup(self, address: IPAddress) -> tuple[str | None, int]:
        """The region of `address` (None when no prefix matches) and the scope."""
        table = self.families[address.version]
        value = int(address)
        found = table.match(value)
        if found is None:
            return None, table.scope(value, 0)
        region, length = found
        return region, table.scope(value, length)


class GeoIpError(Exception):
    """The MaxMind DB cannot be used; the message says why."""


class GeoIpDatabase:
    """Region by country (else continent) from a MaxMind DB reader."""

    def __init__(
        self, reader: Any, countries: Mapping[str, str], continents: Mapping[str, str]
    ) -> None:
        self.reader = reader
        self.countries = dict(countries)
        self.continents = dict(continents)

    @classmethod
    def open(
        cls, path: str, countries: Mapping[str, str], continents: Mapping[str, str]
    ) -> GeoIpDatabase:
        try:
            maxminddb = importlib.import_module("maxminddb")
        except ImportError:
            raise GeoIpError(
                "a MaxMind DB needs the maxminddb package (pip install maxminddb)"
            ) from None
        try:
            reader = maxminddb.open_database(path)
        except (OSError, ValueError) as exc:
            raise GeoIpError(f"cannot open MaxMind DB {path}: {exc}") from None
        return cls(reader, countries, continents)

    def lookup(self, address: IPAddress) -> tuple[str | None, int]:
        """The region of `address` (None when unknown or unmapped) and the DB's prefix."""
        try:
            record, prefix_length = self.reader.get_with_prefix_len(str(address))
        except ValueError:
            return None, 0
        if not isinstance(record, dict):
            return None, int(prefix_length)
        country = record.get("country")
        continent = record.get("continent")
        region = None
        if isinstance(country, dict):
            region = self.countries.get(str(country.get("iso_code")))
        if region is None and isinstance(continent, dict):
            region = self.continents.get(str(continent.get("code")))
        return region, int(prefix_length)

    def close(self) -> None:
        self.reader.close()


class Locator:
    """Address -> region: the MaxMind DB if any, then the prefix table, then the default."""

    def __init__(
        self, table: PrefixTable, default_region: str, geoip: GeoIpDatabase | None = None
    ) -> None:
        self.table = table
        self.default_region = default_region
        self.geoip = geoip
        self._sources: dict[str, str] = {}

    def locate(self, address: IPAddress) -> Location:
        geo_scope = 0
        if self.geoip is not None:
            region, geo_scope = self.geoip.lookup(address)
            if region is not None:
                return Location(region, geo_scope)
        region, scope = self.table.lookup(address)
        return Location(region or self.default_region, max(scope, geo_scope))

    def region_of_source(self, source: str) -> str:
        """The region of a packet's source address (remembered: this runs per query)."""
        region = self._sources.get(source)
        if region is None:
            try:
                region = self.locate(ipaddress.ip_address(source)).region
            except ValueError:
                region = self.default_region
            if len(self._sources) >= SOURCE_CACHE_SIZE:
                self._sources.clear()
            self._sources[source] = region
        return region
