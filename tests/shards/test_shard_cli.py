"""`millions shards ...` on a SQLite cluster: status, migrate, split, move, reverse, cleanup,
hot, and one-line errors with exit code 2 for bad arguments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from millions.shards import ShardRouter
from millions.shards.cli import shards_app
from millions.shards.config import load as load_config

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "shards.toml"
    path.write_text(
        f'tables = "shard_support:SCHEMA"\ndirectory = "{tmp_path / "data"}"\n{extra}\n'
        '[[shards]]\nname = "s1"\n[[shards]]\nname = "s2"\n'
        "[hot]\nthreshold_ops_s = 5.0\n",
        encoding="utf-8",
    )
    return path


def shards(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(shards_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def seed_and_load(config: Path) -> None:
    async def run() -> None:
        settings, run_dir = load_config(config)
        router = await ShardRouter.open(settings, run_dir)
        try:
            for user in range(1, 31):
                await router.insert("users", {"id": user, "username": f"u{user}"})
            for _ in range(40):
                await router.get("users", {"id": 7})
            await router.publish_load()
        finally:
            await router.close()

    asyncio.run(run())


def test_the_resharding_workflow_from_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out, _ = shards("status", "-c", str(config))
    assert code == 0 and "not initialized" in out
    code, out, _ = shards("migrate", "-c", str(config))
    assert code == 0 and "s1: 1, 2" in out and "s2: 1, 2" in out
    code, out, _ = shards("migrate", "-c", str(config))
    assert "s1: up to date" in out
    seed_and_load(config)

    code, out, _ = shards("split", "s1", "-c", str(config))
    assert code == 0, out
    assert "split 40-80 s1 -> s3: switched" in out and "write pause per switch" in out
    assert "verified users" in out
    code, out, _ = shards("status", "-c", str(config), "--json")
    status = json.loads(out)
    assert status["map"]["ranges"] == {"-40": "s1", "40-80": "s3", "80-": "s2"}
    assert status["operation"]["phase"] == "switched"
    assert sum(s["rows"]["users"] for s in status["shards"] if s["name"] != "s1") > 0
    code, out, _ = shards("status", "-c", str(config))
    assert code == 0 and "shard map version 2" in out and "40-80" in out

    code, _, err = shards("move", "-40", "--to", "s2", "-c", str(config))
    assert code == 1 and err.count("\n") == 1 and "another resharding operation is active" in err
    code, out, _ = shards("reverse", "-c", str(config))
    assert code == 0 and ": reversed" in out
    code, out, _ = shards("cleanup", "-c", str(config))
    assert code == 0 and ": cancelled" in out
    code, out, _ = shards("move", "40-80", "--to", "s2", "-c", str(config))
    assert code == 0 and "move 40-80 s1 -> s2: switched" in out
    code, out, _ = shards("cleanup", "-c", str(config))
    assert code == 0 and ": completed" in out


def test_hot_lists_keys_and_split_decisions(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out, _ = shards("hot", "-c", str(config))
    assert code == 1 or "no load" in out  # not migrated: the metadata store is still empty
    shards("migrate", "-c", str(config))
    code, out, _ = shards("hot", "-c", str(config))
    assert code == 0 and "no load reported" in out
    seed_and_load(config)
    code, out, _ = shards("hot", "-c", str(config), "--json")
    report = json.loads(out)
    assert report["keys"][0][0] == "7"
    assert report["decisions"] and report["decisions"][0]["too_hot_key"] == "7"
    assert "7" in report["cached_keys"]  # (and the seeded keys: each write is fast here)
    code, out, _ = shards("hot", "-c", str(config), "--top", "3")
    assert code == 0 and "hottest keys" in out and "alone takes" in out
    assert "key '7': served from the read cache by every router" in out
    assert "from the read cache" in out.split("ranges")[0]  # the keys table marks it


def test_autosplit_runs_once_with_one_line_per_decision(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    shards("migrate", "-c", str(config))
    code, _, err = shards("autosplit", "--once", "-c", str(config))
    assert code == 2 and err.count("\n") == 1 and "shards.hot.auto_split is off" in err
    code, out, _ = shards("autosplit", "--once", "--force", "-c", str(config))
    assert code == 0 and out.count("\n") == 1 and "idle: no load reported" in out
    seed_and_load(config)
    code, out, _ = shards("autosplit", "--once", "--force", "-c", str(config))
    assert code == 0 and out.count("\n") == 1, out
    assert "key '7' alone takes" in out and "served from the read cache" in out
    code, _, err = shards("autosplit", "--interval", "0", "-c", str(config))
    assert code == 2 and "--interval" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["move", "zz", "--to", "s2"], "key range 'zz' must look like"),
        (["move", "40-80", "--to", "S2"], "not a shard name"),
        (["split", "S1"], "not a shard name"),
        (["split", "s1", "--at", "6"], "--at: keyspace id bound '6' must be whole bytes"),
        (["split", "s1", "--into", "New"], "--into 'New' must match"),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = shards(*args, "-c", str(write_config(tmp_path)))
    assert code == 2
    assert err.count("\n") == 1 and message in err and out == ""


def test_config_problems_print_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[shards]\nbogus = 1\n", encoding="utf-8")
    code, _, err = shards("status", "-c", str(bad))
    assert code == 2 and err == "config error: shards.bogus: unknown key\n"
    code, _, err = shards("status", "-c", str(tmp_path / "missing.toml"))
    assert code == 2 and err.startswith("config error: cannot read config file")
    schema = write_config(tmp_path, 'tables = "no_such_module:SCHEMA"').read_text()
    (tmp_path / "schema.toml").write_text(schema.replace('tables = "shard_support:SCHEMA"\n', ""))
    code, _, err = shards("migrate", "-c", str(tmp_path / "schema.toml"))
    assert code == 2 and err.startswith("config error: shards.tables: cannot load schema")


def test_a_topology_file_with_a_shards_table_works(tmp_path: Path) -> None:
    topology = tmp_path / "millions.toml"
    topology.write_text(
        f'run_dir = "{tmp_path / "run"}"\n[sessions]\nengine = "sqlite"\n'
        '[shards]\ntables = "shard_support:SCHEMA"\n'
        '[[shards.shards]]\nname = "a1"\n[[shards.shards]]\nname = "a2"\n'
        '[[shards.shards]]\nname = "a3"\n',
        encoding="utf-8",
    )
    code, out, _ = shards("migrate", "-c", str(topology))
    assert code == 0 and "a3: 1, 2" in out
    assert (tmp_path / "run" / "shards" / "a1.sqlite3").exists()


@pytest.mark.parametrize(
    "command", ["status", "migrate", "split", "move", "reverse", "cleanup", "hot", "autosplit"]
)
def test_every_command_has_help(command: str) -> None:
    code, out, _ = shards(command, "--help")
    assert code == 0 and "Usage" in out and "--config" in out


def test_the_sub_app_mounts_under_a_main_cli(tmp_path: Path) -> None:
    main = typer.Typer()

    @main.command()
    def up() -> None:
        """Stands in for the main CLI's own commands."""

    main.add_typer(shards_app, name="shards")
    config = write_config(tmp_path)
    result = runner.invoke(main, ["shards", "migrate", "-c", str(config)])
    assert result.exit_code == 0 and "s2: 1, 2" in result.stdout
    result = runner.invoke(main, ["shards", "move", "-40", "--to", "s2", "-c", str(config)])
    assert result.exit_code == 0 and "move -40 s1 -> s2: switched" in result.stdout


def test_a_topology_config_gives_the_shards_its_apps_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`millions shards split` on the default topology must copy the reference app's tables:
    a topology file (with or without a [shards] table), or none at all, names them."""
    from millions.shards.cli import _settings

    monkeypatch.chdir(tmp_path)
    app_tables = "millions.app.schema:APP_SCHEMA"
    assert _settings(None, None)[0].tables == app_tables  # the built-in topology
    topology = tmp_path / "millions.toml"
    topology.write_text('run_dir = "run"\n[shards.hot]\nauto_split = true\n')
    settings, run_dir = _settings(topology, None)
    assert settings.tables == app_tables and settings.hot.auto_split
    assert run_dir == (tmp_path / "run").resolve()
    topology.write_text('[dcs.solo]\nsubnet = "127.0.9"\n')
    assert _settings(topology, None)[0].tables == app_tables
    shards_only = tmp_path / "shards.toml"
    shards_only.write_text('engine = "sqlite"\n[[shards]]\nname = "a"\n')
    alone, _ = _settings(shards_only, None)
    assert alone.tables == "" and [s.name for s in alone.shards] == ["a"]
