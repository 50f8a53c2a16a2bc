"""The DNS config model: defaults, and one clear `key: problem` line per mistake."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from dns_support import config_data

from millions.dns.config import parse, parse_host_port
from millions.topology.config import ConfigError


def test_defaults_and_derived_values() -> None:
    config = parse(config_data())
    assert config.zone == "millions.test"
    assert config.ttl_s == 5
    assert config.negative_ttl_s == 5
    assert (config.fall, config.rise) == (2, 2)
    assert config.check_interval_s == 1.0
    assert config.listen_address == ("127.0.130.1", 0)
    assert config.nameserver_glue() == {"ns1": "127.0.130.1"}
    assert config.maxmind is None


def test_zone_is_normalised() -> None:
    assert parse(config_data(zone="Example.ORG.")).zone == "example.org"


def _error(**overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(config_data(**overrides))
    return caught.value


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"surprise": 1}, "surprise", "unknown key"),
        ({"ttl_s": -1}, "ttl_s", "greater than or equal to 0"),
        ({"listen": "localhost:53"}, "listen", "IPv4 address"),
        ({"listen": "127.0.0.1"}, "listen", "IPV4:PORT"),
        ({"listen": "127.0.0.1:70000"}, "listen", "out of range"),
        ({"admin": "10.0.0.1:9053"}, "admin", "loopback"),
        ({"zone": "."}, "zone", "root"),
        ({"zone": "a..b"}, "zone", "not a DNS name"),
        ({"prefixes": {"127.0.131.5/24": "us"}}, "prefixes", "host bits set"),
        ({"prefixes": {"not-a-net": "us"}}, "prefixes", "not-a-net"),
        ({"prefixes": {"10.0.0.0/8": "mars"}}, "", "no region named 'mars'"),
        ({"default_region": "mars"}, "", "default_region"),
        ({"regions": {"us": ["us-east", "nowhere"]}, "default_region": "us"}, "", "nowhere"),
        ({"regions": {"us": []}, "default_region": "us"}, "", "at least one data center"),
        ({"regions": {"us": ["us-east", "us-east"]}, "default_region": "us"}, "", "twice"),
        ({"nameservers": {"www": "127.0.130.1"}}, "nameservers", "other than www"),
        ({"nameservers": {"ns1": "::1"}}, "nameservers", "IPv4"),
        ({"dcs": {}}, "dcs", "at least one"),
        ({"listen": "0.0.0.0:53"}, "", "nameservers: give the NS addresses"),
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, Any], key: str, problem: str) -> None:
    error = _error(**overrides)
    assert error.key == key
    assert problem in str(error)


def test_bad_target_fields_name_the_key() -> None:
    data = config_data()
    data["dcs"]["us-east"]["health_url"] = "ftp://x/healthz"
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert caught.value.key == "dcs.us-east.health_url"
    data = config_data()
    data["edges"]["edge-us"]["dc"] = "moon-base"
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert "edges.edge-us.dc: no data center named 'moon-base'" in str(caught.value)


@pytest.mark.skipif(
    importlib.util.find_spec("maxminddb") is not None, reason="maxminddb is installed"
)
def test_maxmind_without_the_package_is_a_clear_config_error() -> None:
    error = _error(maxmind={"path": "/nonexistent/GeoLite2-Country.mmdb"})
    assert error.key == "maxmind.path"
    assert "maxminddb package" in error.problem


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:53") == ("127.0.0.1", 53)
    with pytest.raises(ValueError, match="IPV4:PORT"):
        parse_host_port("127.0.0.1:x")
