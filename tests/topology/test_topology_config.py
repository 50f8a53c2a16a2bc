"""The topology config: defaults, validation errors naming the key, TOML round trip."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.topology.components import RunPaths, initial_specs
from millions.topology.components import command as component_command
from millions.topology.config import ConfigError, MillionsConfig, load, parse, to_toml


def test_default_topology_has_two_dcs_with_an_edge_one_lb_two_web_servers_a_worker() -> None:
    config = MillionsConfig()
    assert list(config.dcs) == ["us-east", "eu-west"]
    specs = initial_specs(config)
    names = [s.name for s in specs]
    assert names == [
        "replicator-us-east",
        "replicator-eu-west",
        "web-us-east-1",
        "web-us-east-2",
        "web-eu-west-1",
        "web-eu-west-2",
        "worker-us-east-1",
        "worker-eu-west-1",
        "lb-us-east",
        "lb-eu-west",
        "edge-us",
        "edge-eu",
        "dns",
    ]
    worker = specs[6]
    assert (worker.address, worker.health_url) == (
        "127.0.1.101:9100",
        "http://127.0.1.101:9100/healthz",
    )
    edge = specs[-3]
    assert (edge.address, edge.health_url) == ("127.0.1.2:8080", "http://127.0.1.2:9000/healthz")
    hosts = [s.host for s in specs]
    assert len(set(hosts)) == len(hosts), "every component has its own loopback address"
    assert all(h.startswith("127.") for h in hosts)
    replicator = specs[1]
    assert (replicator.address, replicator.dc) == ("127.0.2.9:9109", "eu-west")
    argv = component_command(replicator, RunPaths(Path("/run")), config)
    assert argv[3] == "replicator" and argv[argv.index("--dc") + 1] == "eu-west"
    assert argv[argv.index("--metrics") + 1] == "127.0.2.9:9109"
    single = MillionsConfig.model_validate({"dcs": {"solo": {"subnet": "127.0.9"}}})
    assert not single.replicates  # one DC: nothing to replicate to
    assert "replicator" not in {s.kind for s in initial_specs(single)}
    off = MillionsConfig.model_validate({"replication": {"enabled": False}})
    assert "replicator" not in {s.kind for s in initial_specs(off)}


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"lb": {"port": "x"}}, "lb.port", "valid integer"),
        ({"lb": {"port": 70000}}, "lb.port", "less than or equal"),
        ({"sessions": {"engine": "mysql"}}, "sessions.engine", "'sqlite', 'redis' or 'postgres'"),
        ({"dcs": {"us-east": {"subnet": "10.0.0"}}}, "dcs.us-east.subnet", "loopback"),
        ({"dcs": {"us-east": {"subnet": "127.0"}}}, "dcs.us-east.subnet", "three octets"),
        ({"dns": {"host": "10.0.0.1"}}, "dns.host", "loopback"),
        (
            {"dcs": {"us-east": {"subnet": "127.0.1", "clients": "10.0.0.0/8"}}},
            "dcs.us-east.clients",
            "loopback",
        ),
        ({"edge": {"memory_bytes": 10}}, "edge.memory_bytes", "greater than or equal"),
        ({"dcs": {"us-east": {"subnet": "127.0.1", "web": -1}}}, "dcs.us-east.web", "greater"),
        ({"dcs": {}}, "dcs", "at least one"),
        ({"dcs": {"a": {"subnet": "127.0.1"}, "b": {"subnet": "127.0.1"}}}, "dcs", "share"),
        ({"dcs": {"Bad Name": {"subnet": "127.0.1"}}}, "dcs", "must match"),
        ({"surprise": 1}, "surprise", "unknown key"),
        ({"worker": {"metrics_port": 0}}, "worker.metrics_port", "greater than or equal"),
        ({"worker": {"autoscale_queue": "x.dead"}}, "worker.autoscale_queue", "reserved"),
        ({"worker": {"tasks": "no-colon"}}, "worker.tasks", "match pattern"),
        ({"lb": {"colour": "red"}}, "lb.colour", "unknown key"),
        ({"app": "not a path"}, "app", "pattern"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key == key
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_config_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "millions.toml"
    path.write_text('[dcs.ap-south]\nsubnet = "127.0.9"\nweb = 3\n[lb]\nport = 8181\n')
    config = load(path)
    assert list(config.dcs) == ["ap-south"]
    assert config.dcs["ap-south"].web == 3
    assert config.lb.port == 8181
    assert config.lb.ops_port == 9000


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[lb\nport=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_effective_config_round_trips_through_toml() -> None:
    config = MillionsConfig()
    assert parse(tomllib.loads(to_toml(config))) == config


@given(st.integers(min_value=0, max_value=89), st.integers(min_value=2, max_value=250))
def test_web_count_and_subnet_always_give_distinct_loopback_addresses(web: int, octet: int) -> None:
    config = parse({"dcs": {"x": {"subnet": f"127.1.{octet}", "web": web}}})
    hosts = [s.host for s in initial_specs(config)]
    assert len(hosts) == web + 4  # the web servers, a worker, a load balancer, an edge, the DNS
    assert len(set(hosts)) == len(hosts)


def test_edge_names_use_the_region_unless_two_dcs_share_it() -> None:
    config = parse(
        {
            "dcs": {
                "us-east": {"subnet": "127.0.1"},
                "us-west": {"subnet": "127.0.2"},
                "eu-west": {"subnet": "127.0.3"},
            }
        }
    )
    assert [config.edge_name(dc) for dc in config.dcs] == [
        "edge-us-east",
        "edge-us-west",
        "edge-eu",
    ]
    no_edges = parse({"edge": {"enabled": False}, "dns": {"enabled": False}})
    assert {spec.kind for spec in initial_specs(no_edges)} == {"lb", "web", "worker", "replicator"}


def _millions(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "millions", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_config_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sessions]\nengine = "memcached"\n')
    run_dir = ["--run-dir", str(tmp_path / "run")]
    for command in (["config", "show"], ["up", *run_dir], ["up", "--detach", *run_dir]):
        result = _millions(*command, "--config", str(path))
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "config error: sessions.engine: Input should be 'sqlite', 'redis' or 'postgres'"
        ]
    assert not (tmp_path / "run").exists(), "nothing started"


def test_cli_config_show_prints_effective_toml() -> None:
    result = _millions("config", "show", "--config", "/dev/null")
    assert result.returncode == 0
    assert tomllib.loads(result.stdout)["dcs"]["us-east"]["web"] == 2


def test_nested_tier_sections_round_trip_through_config_show(tmp_path: Path) -> None:
    path = tmp_path / "millions.toml"
    path.write_text(
        "[queue]\nmax_attempts = 3\n[queue.workers]\nmax_workers = 6\n"
        '[[shards.shards]]\nname = "a"\n[[shards.shards]]\nname = "b"\n[[shards.shards]]\n'
        'name = "c"\n[shards.cache]\nengine = "none"\n'
    )
    shown = _millions("config", "show", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    data = tomllib.loads(shown.stdout)
    assert data["queue"]["max_attempts"] == 3 and data["queue"]["workers"]["max_workers"] == 6
    assert [s["name"] for s in data["shards"]["shards"]] == ["a", "b", "c"]
    assert parse(data) == parse(tomllib.loads(path.read_text()))


def test_tier_config_errors_name_the_nested_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[queue.workers]\nmax_workers = 0\n")
    result = _millions("config", "show", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: queue.workers.max_workers:")
    worker = _millions("worker", "--tasks", "no_such_module_q:tasks", "--config", "/dev/null")
    assert worker.returncode == 2
    assert worker.stderr.strip().startswith("config error:")
    assert "no_such_module_q" in worker.stderr and "Traceback" not in worker.stderr
