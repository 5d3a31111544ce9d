"""Unit tests for storage/config.py: `parse` is pure, `load` only reads the file."""

from __future__ import annotations

import copy
import math
import random
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from games.campaign import GroupBuyCampaign
from games.commission import BindingPolicy, Rates
from games.groupbuy import OpenGroup, apply, initial_state
from storage.config import (
    ENV_OVERRIDES,
    CommissionConfig,
    Config,
    ConfigError,
    load,
    parse,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_TOML = REPO_ROOT / "config.toml"
SOURCE = "conf/fission-test.toml"
CST = timezone(timedelta(hours=8))


def good() -> dict[str, Any]:
    """A small valid document, as tomllib would return it (fresh on every call)."""
    return {
        "server": {"host": "0.0.0.0", "port": 9000},
        "auth": {"secret": "file-secret-0123456789abcdef-0123456789"},
        "storage": {
            "data_dir": "/var/lib/fission",
            "database_url": "postgresql://file@db/fission",
            "redis_url": "redis://file:6379/0",
        },
        "ray": {"address": "file:6380", "namespace": "file-ns", "shards": 4,
                "calls_in_flight": 3},
        "pipeline": {"payment_adapter": "sandbox", "poll_interval_ms": 250, "batch_size": 100},
        "campaigns": [
            {
                "id": "tea-duo",
                "kind": "groupbuy",
                "title": "Tea for two",
                "starts_at": "2026-01-01T00:00:00+08:00",
                "ends_at": "2026-02-01T00:00:00+08:00",
                "group_size": 2,
                "time_limit_seconds": 3600,
                "stock": 100,
                "max_groups_led": 3,
                "max_groups_joined": 5,
                "product": {
                    "sku": "TEA-1", "title": "Tea", "list_price": 19900, "group_price": 12900,
                },
            },
            {
                "id": "fruit-five",
                "kind": "groupbuy",
                "title": "Fruit for five",
                # tomllib gives an unquoted TOML offset date-time as an aware datetime.
                "starts_at": datetime(2026, 1, 1, tzinfo=CST),
                "ends_at": datetime(2026, 3, 1, tzinfo=UTC),
                "group_size": 5,
                "time_limit_seconds": 60,
                "stock": 0,
                "virtual_fill_ratio": 0.6,
                "product": {
                    "sku": "FRUIT-1", "title": "Fruit", "list_price": 8800,
                    "group_price": 8800,
                },
            },
        ],
    }


def test_good_document_parses() -> None:
    config = parse(good(), {}, SOURCE)
    assert isinstance(config, Config)
    assert config.source == SOURCE
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9000
    assert config.server.max_frame_bytes == 16_384  # defaults fill the rest
    assert config.server.frames_per_second == 20.0
    assert config.server.log_commands is False
    assert config.auth.secret == "file-secret-0123456789abcdef-0123456789"
    assert config.storage.data_dir == "/var/lib/fission"
    assert config.storage.database_url == "postgresql://file@db/fission"
    assert config.storage.redis_url == "redis://file:6379/0"
    assert config.ray.address == "file:6380"
    assert config.ray.namespace == "file-ns"
    assert config.ray.shards == 4
    assert config.ray.calls_in_flight == 3
    assert config.pipeline.poll_interval_ms == 250
    assert config.pipeline.batch_size == 100

    tea, fruit = config.groupbuys
    assert tea.id == "tea-duo"
    assert tea.kind == "groupbuy"
    assert tea.starts_at == 1_767_196_800_000  # 2026-01-01T00:00:00+08:00 in epoch ms
    assert tea.ends_at == 1_769_875_200_000
    assert tea.time_limit_ms == 3_600_000
    assert tea.product.group_price == 12900
    assert tea.max_groups_led == 3
    assert tea.max_groups_joined == 5
    assert tea.virtual_fill_ratio is None
    assert fruit.starts_at == tea.starts_at  # datetime and string forms agree
    assert fruit.ends_at == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert fruit.max_groups_led == 1  # defaults
    assert fruit.max_groups_joined == 1
    assert fruit.virtual_fill_ratio == 0.6
    assert fruit.stock == 0
    assert config.campaign("fruit-five") is fruit
    assert config.campaign("nope") is None


def test_minimal_document_uses_defaults() -> None:
    config = parse({"auth": {"secret": "x" * 40}}, {}, SOURCE)
    assert config.groupbuys == ()
    assert config.server.port == 8080
    assert config.storage.data_dir == ".fission"
    assert config.storage.database_url is None
    assert config.storage.redis_url is None
    assert config.ray.address is None
    assert config.ray.shards == 2
    assert config.ray.calls_in_flight == 1
    assert config.pipeline.payment_adapter == "sandbox"


def test_parse_does_not_mutate_its_input() -> None:
    data = good()
    before = copy.deepcopy(data)
    parse(data, {"FISSION_PORT": "1234", "FISSION_AUTH_SECRET": "y" * 40}, SOURCE)
    assert data == before


def test_parse_from_toml_text() -> None:
    text = """
[auth]
secret = "0123456789abcdef0123456789abcdef-toml"

[[campaigns]]
id = "c1"
kind = "groupbuy"
title = "T"
starts_at = 2026-01-01T00:00:00+08:00
ends_at = "2026-01-02T00:00:00Z"
group_size = 3
time_limit_seconds = 600
stock = 5
virtual_fill_ratio = 1
[campaigns.product]
sku = "S"
title = "P"
list_price = 100
group_price = 90
"""
    config = parse(tomllib.loads(text), {}, SOURCE)
    (campaign,) = config.groupbuys
    assert campaign.starts_at == 1_767_196_800_000
    assert campaign.ends_at == 1_767_312_000_000
    assert campaign.virtual_fill_ratio == 1.0
    assert isinstance(campaign.virtual_fill_ratio, float)


# --- the shipped config.toml ----------------------------------------------------------------


def test_repo_config_toml_loads() -> None:
    config = load(CONFIG_TOML, env={})
    assert config.source == str(CONFIG_TOML)
    groupbuys = [c for c in config.groupbuys if c.kind == "groupbuy"]
    assert len(groupbuys) >= 2
    assert len({c.id for c in groupbuys}) == len(groupbuys)
    for campaign in groupbuys:
        assert isinstance(campaign, GroupBuyCampaign)
        assert campaign.ends_at > campaign.starts_at
        assert 2 <= campaign.group_size
        assert 0 < campaign.product.group_price <= campaign.product.list_price
        # Each configured campaign is playable by the reducer.
        state, events = apply(initial_state(campaign), OpenGroup("u"), campaign.starts_at,
                              random.Random(0))
        if campaign.stock > 0:
            assert events and state.stock_left == campaign.stock - 1


def test_repo_config_load_with_relative_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    config = load("config.toml", env={})
    assert config.source == "config.toml"
    assert len(config.groupbuys) >= 2


def test_load_with_explicit_env_ignores_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FISSION_PORT", "4321")
    monkeypatch.setenv("FISSION_SHARDS", "not-a-number")
    # With env={} neither the port nor the bad shard count in os.environ is seen.
    assert load(CONFIG_TOML, env={}).server.port != 4321
    monkeypatch.setenv("FISSION_SHARDS", "3")
    config = load(CONFIG_TOML)  # env=None reads the process environment
    assert config.server.port == 4321
    assert config.ray.shards == 3


def test_load_missing_file_names_it() -> None:
    missing = REPO_ROOT / "tests" / "unit" / "no-such-config.toml"
    with pytest.raises(ConfigError) as info:
        load(missing, env={})
    assert info.value.source == str(missing)
    assert info.value.key == "-"
    assert str(missing) in str(info.value)


# --- bad configs ----------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def camp(i: int, **changes: Any) -> Mutation:
    return lambda d: d["campaigns"][i].update(changes)


def prod(i: int, **changes: Any) -> Mutation:
    return lambda d: d["campaigns"][i]["product"].update(changes)


def section(name: str, **changes: Any) -> Mutation:
    return lambda d: d[name].update(changes)


def drop(*path: str | int) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def put(key: str, value: Any) -> Mutation:
    return lambda d: d.__setitem__(key, value)


BAD: list[Any] = [
    # campaign rules
    pytest.param(camp(0, group_size=1), "campaigns[0].group_size", id="group-size-1"),
    pytest.param(camp(0, group_size=0), "campaigns[0].group_size", id="group-size-0"),
    pytest.param(camp(0, group_size=51), "campaigns[0].group_size", id="group-size-51"),
    pytest.param(camp(1, group_size=1), "campaigns[1].group_size", id="second-campaign"),
    pytest.param(prod(0, group_price=19901), "campaigns[0].product.group_price",
                 id="price-above-list"),
    pytest.param(prod(0, group_price=0), "campaigns[0].product.group_price", id="price-0"),
    pytest.param(prod(0, group_price=-1), "campaigns[0].product.group_price",
                 id="price-negative"),
    pytest.param(prod(0, list_price=0), "campaigns[0].product.list_price", id="list-price-0"),
    pytest.param(prod(0, group_price="129.00"), "campaigns[0].product.group_price",
                 id="price-string"),
    pytest.param(prod(0, group_price=129.0), "campaigns[0].product.group_price",
                 id="price-float"),
    pytest.param(prod(0, colour="red"), "campaigns[0].product.colour", id="product-unknown"),
    pytest.param(drop("campaigns", 0, "product", "sku"), "campaigns[0].product.sku",
                 id="product-no-sku"),
    pytest.param(drop("campaigns", 0, "product"), "campaigns[0].product", id="no-product"),
    pytest.param(camp(0, product="TEA-1"), "campaigns[0].product", id="product-not-table"),
    pytest.param(camp(0, ends_at="2025-12-31T00:00:00+08:00"), "campaigns[0].ends_at",
                 id="end-before-start"),
    pytest.param(camp(0, ends_at="2026-01-01T00:00:00+08:00"), "campaigns[0].ends_at",
                 id="end-equals-start"),
    pytest.param(camp(0, ends_at="2025-12-31T16:00:00Z"), "campaigns[0].ends_at",
                 id="end-equals-start-other-zone"),
    pytest.param(camp(0, starts_at="2026-01-01T00:00:00"), "campaigns[0].starts_at",
                 id="start-no-timezone"),
    pytest.param(camp(0, ends_at="2026-02-01T00:00:00"), "campaigns[0].ends_at",
                 id="end-no-timezone"),
    pytest.param(camp(0, starts_at="2026-01-01"), "campaigns[0].starts_at",
                 id="start-date-only"),
    pytest.param(camp(1, starts_at=datetime(2026, 1, 1)), "campaigns[1].starts_at",
                 id="toml-local-datetime"),
    pytest.param(camp(0, starts_at="next tuesday"), "campaigns[0].starts_at",
                 id="start-garbage"),
    pytest.param(camp(0, starts_at=1767196800), "campaigns[0].starts_at",
                 id="start-number"),
    pytest.param(camp(1, id="tea-duo"), "campaigns[1].id", id="duplicate-id"),
    pytest.param(camp(0, id="Tea Duo"), "campaigns[0].id", id="id-bad-chars"),
    pytest.param(camp(0, id=""), "campaigns[0].id", id="id-empty"),
    pytest.param(camp(0, id="x" * 65), "campaigns[0].id", id="id-too-long"),
    pytest.param(drop("campaigns", 0, "id"), "campaigns[0].id", id="id-missing"),
    pytest.param(camp(0, kind="raffle"), "campaigns[0].kind", id="kind-unknown"),
    pytest.param(drop("campaigns", 0, "kind"), "campaigns[0].kind", id="kind-missing"),
    pytest.param(drop("campaigns", 0, "group_size"), "campaigns[0].group_size",
                 id="group-size-missing"),
    pytest.param(camp(0, colour="red"), "campaigns[0].colour", id="campaign-unknown-key"),
    pytest.param(camp(0, stock=True), "campaigns[0].stock", id="stock-boolean"),
    pytest.param(camp(0, stock=-1), "campaigns[0].stock", id="stock-negative"),
    pytest.param(camp(0, stock=10.0), "campaigns[0].stock", id="stock-float"),
    pytest.param(camp(0, stock="10"), "campaigns[0].stock", id="stock-string"),
    pytest.param(camp(0, group_size=True), "campaigns[0].group_size", id="size-boolean"),
    pytest.param(camp(0, time_limit_seconds=0), "campaigns[0].time_limit_seconds",
                 id="time-limit-0"),
    pytest.param(camp(0, time_limit_seconds=-60), "campaigns[0].time_limit_seconds",
                 id="time-limit-negative"),
    pytest.param(camp(0, time_limit_seconds=30 * 86400 + 1),
                 "campaigns[0].time_limit_seconds", id="time-limit-long"),
    pytest.param(camp(0, max_groups_led=0), "campaigns[0].max_groups_led", id="led-0"),
    pytest.param(camp(0, max_groups_joined=0), "campaigns[0].max_groups_joined",
                 id="joined-0"),
    pytest.param(camp(0, virtual_fill_ratio=0), "campaigns[0].virtual_fill_ratio",
                 id="ratio-0"),
    pytest.param(camp(0, virtual_fill_ratio=1.5), "campaigns[0].virtual_fill_ratio",
                 id="ratio-above-1"),
    pytest.param(camp(0, virtual_fill_ratio=math.nan), "campaigns[0].virtual_fill_ratio",
                 id="ratio-nan"),
    pytest.param(camp(0, virtual_fill_ratio=True), "campaigns[0].virtual_fill_ratio",
                 id="ratio-boolean"),
    pytest.param(camp(0, virtual_fill_ratio="0.6"), "campaigns[0].virtual_fill_ratio",
                 id="ratio-string"),
    pytest.param(lambda d: d["campaigns"].__setitem__(0, "tea-duo"), "campaigns[0]",
                 id="campaign-not-table"),
    pytest.param(put("campaigns", {"id": "x"}), "campaigns", id="campaigns-not-array"),
    # server
    pytest.param(section("server", port="8080"), "server.port", id="port-string"),
    pytest.param(section("server", port=0), "server.port", id="port-0"),
    pytest.param(section("server", port=65536), "server.port", id="port-65536"),
    pytest.param(section("server", port=True), "server.port", id="port-boolean"),
    pytest.param(section("server", port=8080.0), "server.port", id="port-float"),
    pytest.param(section("server", host=127), "server.host", id="host-number"),
    pytest.param(section("server", colour="red"), "server.colour", id="server-unknown"),
    pytest.param(section("server", max_frame_bytes=63), "server.max_frame_bytes",
                 id="frame-bytes-small"),
    pytest.param(section("server", send_queue=7), "server.send_queue", id="send-queue-small"),
    pytest.param(section("server", frames_per_second=0), "server.frames_per_second",
                 id="fps-0"),
    pytest.param(section("server", frames_per_second=math.inf), "server.frames_per_second",
                 id="fps-inf"),
    pytest.param(section("server", frames_per_second=math.nan), "server.frames_per_second",
                 id="fps-nan"),
    pytest.param(put("server", "127.0.0.1:8080"), "server", id="server-not-table"),
    pytest.param(section("server", log_commands="yes"), "server.log_commands",
                 id="log-commands-string"),
    # auth
    pytest.param(drop("auth", "secret"), "auth.secret", id="secret-missing"),
    pytest.param(drop("auth"), "auth.secret", id="auth-missing"),
    pytest.param(section("auth", secret="short"), "auth.secret", id="secret-short"),
    pytest.param(section("auth", secret=""), "auth.secret", id="secret-empty"),
    pytest.param(section("auth", secret=1234567890123456789), "auth.secret",
                 id="secret-number"),
    pytest.param(section("auth", issuer="me"), "auth.issuer", id="auth-unknown"),
    # storage, ray, pipeline, top level
    pytest.param(section("storage", database_url=5432), "storage.database_url",
                 id="database-url-number"),
    pytest.param(section("storage", colour="red"), "storage.colour", id="storage-unknown"),
    pytest.param(section("ray", shards=0), "ray.shards", id="shards-0"),
    pytest.param(section("ray", shards=65), "ray.shards", id="shards-65"),
    pytest.param(section("ray", shards="2"), "ray.shards", id="shards-string"),
    pytest.param(section("ray", calls_in_flight=0), "ray.calls_in_flight", id="inflight-0"),
    pytest.param(section("ray", calls_in_flight=65), "ray.calls_in_flight",
                 id="inflight-65"),
    pytest.param(section("pipeline", payment_adapter="stripe"), "pipeline.payment_adapter",
                 id="adapter-unknown"),
    pytest.param(section("pipeline", poll_interval_ms=9), "pipeline.poll_interval_ms",
                 id="poll-fast"),
    pytest.param(section("pipeline", batch_size=0), "pipeline.batch_size", id="batch-0"),
    pytest.param(put("colour", "red"), "colour", id="top-level-unknown"),
]


def assert_refused(data: dict[str, Any], key: str) -> None:
    """`data` fails to parse with an error naming the file, `key` and a reason."""
    with pytest.raises(ConfigError) as info:
        parse(data, {}, SOURCE)
    error = info.value
    assert error.key == key
    assert error.source == SOURCE
    assert error.reason
    assert str(error) == f"{SOURCE}: {key}: {error.reason}"


@pytest.mark.parametrize(("mutate", "key"), BAD)
def test_bad_config_names_key(mutate: Mutation, key: str) -> None:
    data = good()
    mutate(data)
    assert_refused(data, key)


def test_wrong_type_reasons_are_readable() -> None:
    data = good()
    data["server"]["port"] = "8080"
    with pytest.raises(ConfigError) as info:
        parse(data, {}, SOURCE)
    assert info.value.reason == "must be an integer, not str"
    data = good()
    data["campaigns"][0]["stock"] = True
    with pytest.raises(ConfigError) as info:
        parse(data, {}, SOURCE)
    assert "boolean" in info.value.reason


def test_first_unknown_key_is_named() -> None:
    data = good()
    data["campaigns"][0]["zebra"] = 1
    data["campaigns"][0]["colour"] = "red"
    with pytest.raises(ConfigError) as info:
        parse(data, {}, SOURCE)
    assert info.value.key == "campaigns[0].colour"


@pytest.mark.parametrize(
    ("field", "value"),
    [("group_size", 2), ("group_size", 50), ("time_limit_seconds", 60),
     ("time_limit_seconds", 30 * 86400), ("stock", 0), ("virtual_fill_ratio", 1.0),
     ("virtual_fill_ratio", 0.01)],
)
def test_boundary_values_are_accepted(field: str, value: int | float) -> None:
    data = good()
    data["campaigns"][0][field] = value
    campaign = parse(data, {}, SOURCE).groupbuys[0]
    if field == "time_limit_seconds":
        assert campaign.time_limit_ms == value * 1000
    else:
        assert getattr(campaign, field) == value


def test_price_equal_to_list_price_is_allowed() -> None:
    assert parse(good(), {}, SOURCE).groupbuys[1].product.group_price == 8800


# --- environment overrides ------------------------------------------------------------------

ENV = {
    "FISSION_DATABASE_URL": "postgresql://env@db/fission",
    "FISSION_REDIS_URL": "redis://env:6379/1",
    "FISSION_RAY_ADDRESS": "env:6380",
    "FISSION_RAY_NAMESPACE": "env-ns",
    "FISSION_AUTH_SECRET": "an-env-secret-0123456789abcdef-0123456789",
    "FISSION_DATA_DIR": "/env/data",
    "FISSION_SHARDS": "7",
    "FISSION_HOST": "10.0.0.1",
    "FISSION_PORT": "9443",
    "FISSION_WECHATPAY_API_V3_KEY": "0123456789abcdef0123456789abcdef",
}


def test_env_overrides_win_over_file_values() -> None:
    config = parse(good(), ENV, SOURCE)
    assert config.storage.database_url == "postgresql://env@db/fission"
    assert config.storage.redis_url == "redis://env:6379/1"
    assert config.storage.data_dir == "/env/data"
    assert config.ray.address == "env:6380"
    assert config.ray.namespace == "env-ns"
    assert config.ray.shards == 7
    assert config.auth.secret == "an-env-secret-0123456789abcdef-0123456789"
    assert config.server.host == "10.0.0.1"
    assert config.server.port == 9443
    assert config.wechatpay is None  # read only where WeChat Pay is the adapter
    assert set(ENV) == set(ENV_OVERRIDES)


@pytest.mark.parametrize(
    ("var", "value", "read"),
    [
        ("FISSION_DATABASE_URL", "postgresql://x", lambda c: c.storage.database_url),
        ("FISSION_REDIS_URL", "redis://x", lambda c: c.storage.redis_url),
        ("FISSION_RAY_ADDRESS", "x:1", lambda c: c.ray.address),
        ("FISSION_AUTH_SECRET", "s" * 40, lambda c: c.auth.secret),
        ("FISSION_DATA_DIR", "/x", lambda c: c.storage.data_dir),
        ("FISSION_SHARDS", "64", lambda c: c.ray.shards),
    ],
)
def test_each_env_override_alone(var: str, value: str, read: Callable[[Config], Any]) -> None:
    base = parse(good(), {}, SOURCE)
    config = parse(good(), {var: value}, SOURCE)
    expected: Any = int(value) if var == "FISSION_SHARDS" else value
    assert read(base) != expected
    assert read(config) == expected
    # Nothing else changes.
    assert config.groupbuys == base.groupbuys
    assert config.pipeline == base.pipeline


def test_env_fills_sections_missing_from_the_file() -> None:
    data = good()
    del data["storage"], data["ray"], data["auth"]
    config = parse(data, {"FISSION_DATABASE_URL": "postgresql://env", "FISSION_SHARDS": "3",
                          "FISSION_AUTH_SECRET": "e" * 40}, SOURCE)
    assert config.storage.database_url == "postgresql://env"
    assert config.ray.shards == 3
    assert config.auth.secret == "e" * 40


def test_env_ignores_unrelated_variables() -> None:
    config = parse(good(), {"FISSION_COLOUR": "red", "PATH": "/bin"}, SOURCE)
    assert config == parse(good(), {}, SOURCE)


def test_empty_url_env_means_unset() -> None:
    config = parse(good(), {"FISSION_DATABASE_URL": "", "FISSION_REDIS_URL": "",
                            "FISSION_RAY_ADDRESS": ""}, SOURCE)
    assert config.storage.database_url is None
    assert config.storage.redis_url is None
    assert config.ray.address is None


@pytest.mark.parametrize("value", ["two", "", "2.5", "0x10"])
def test_non_integer_shards_env_is_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(good(), {"FISSION_SHARDS": value}, SOURCE)
    assert info.value.key == "FISSION_SHARDS"
    assert info.value.source == SOURCE
    assert str(info.value).startswith(f"{SOURCE}: FISSION_SHARDS: ")


def test_non_integer_port_env_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse(good(), {"FISSION_PORT": "http"}, SOURCE)
    assert info.value.key == "FISSION_PORT"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"FISSION_SHARDS": "0"}, "ray.shards"),
        ({"FISSION_SHARDS": "65"}, "ray.shards"),
        ({"FISSION_PORT": "70000"}, "server.port"),
        ({"FISSION_AUTH_SECRET": "short"}, "auth.secret"),
    ],
)
def test_env_values_are_validated_like_file_values(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(good(), env, SOURCE)
    assert info.value.key == key
    assert SOURCE in str(info.value)


def test_env_override_into_non_table_section_is_config_error() -> None:
    data = good()
    data["storage"] = "nope"
    with pytest.raises(ConfigError) as info:
        parse(data, {"FISSION_DATA_DIR": "/x"}, SOURCE)
    assert info.value.key == "storage"


def test_load_applies_env_overrides_to_repo_config() -> None:
    config = load(CONFIG_TOML, env=ENV)
    assert config.storage.database_url == ENV["FISSION_DATABASE_URL"]
    assert config.storage.redis_url == ENV["FISSION_REDIS_URL"]
    assert config.ray.address == ENV["FISSION_RAY_ADDRESS"]
    assert config.auth.secret == ENV["FISSION_AUTH_SECRET"]
    assert config.storage.data_dir == ENV["FISSION_DATA_DIR"]
    assert config.ray.shards == 7
    with pytest.raises(ConfigError) as info:
        load(CONFIG_TOML, env={"FISSION_SHARDS": "many"})
    assert str(CONFIG_TOML) in str(info.value)
    assert info.value.key == "FISSION_SHARDS"


# --- [commission] ---------------------------------------------------------------------------


def with_commission(table: Any) -> dict[str, Any]:
    data = good()
    data["commission"] = table
    return data


def test_commission_defaults_without_a_table() -> None:
    commission = parse(good(), {}, SOURCE).commission
    assert commission == CommissionConfig()
    assert commission.rates == Rates(level1_bps=1000, level2_bps=300)
    assert commission.return_window_days == 30
    assert commission.return_window_seconds == 30 * 86_400
    # An empty table means the same.
    assert parse(with_commission({}), {}, SOURCE).commission == commission


def test_commission_explicit_values() -> None:
    table = {"level1_bps": 1500, "level2_bps": 450, "return_window_days": 7}
    commission = parse(with_commission(table), {}, SOURCE).commission
    assert commission.rates.level1_bps == 1500
    assert commission.rates.level2_bps == 450
    assert commission.return_window_days == 7
    assert commission.return_window_seconds == 7 * 86_400


def test_a_return_window_in_seconds_replaces_the_days() -> None:
    commission = parse(with_commission({"return_window_seconds": 20}), {}, SOURCE).commission
    assert commission.window_seconds == 20
    assert commission.return_window_seconds == 20
    # 0 seconds settles at once, as 0 days does.
    assert parse(with_commission({"return_window_seconds": 0}), {},
                 SOURCE).commission.return_window_seconds == 0


@pytest.mark.parametrize(("table", "reason"), [
    pytest.param({"return_window_seconds": -1}, "from 0", id="negative"),
    pytest.param({"return_window_seconds": 365 * 86_400 + 1}, "from 0", id="above-365-days"),
    pytest.param({"return_window_seconds": 1.5}, "integer", id="float"),
    pytest.param({"return_window_seconds": "20"}, "integer", id="string"),
    pytest.param({"return_window_seconds": True}, "boolean", id="boolean"),
    pytest.param({"return_window_seconds": 20, "return_window_days": 1}, "not both",
                 id="both-keys"),
])
def test_a_bad_return_window_in_seconds_is_refused(table: dict[str, Any], reason: str
                                                   ) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(with_commission(table), {}, SOURCE)
    assert refused.value.key == "commission.return_window_seconds"
    assert reason in refused.value.reason


def test_commission_partial_table_keeps_other_defaults() -> None:
    commission = parse(with_commission({"level2_bps": 0}), {}, SOURCE).commission
    assert commission.rates == Rates(level1_bps=1000, level2_bps=0)
    assert commission.return_window_days == 30


def test_commission_from_toml_text() -> None:
    text = """
[auth]
secret = "0123456789abcdef0123456789abcdef-toml"

[commission]
level1_bps = 800
level2_bps = 200
return_window_days = 14
withdrawal_min_fen = 1000
withdrawal_review_fen = 200000
"""
    commission = parse(tomllib.loads(text), {}, SOURCE).commission
    assert commission.rates == Rates(800, 200)
    assert commission.return_window_seconds == 14 * 86_400
    assert (commission.withdrawals.min_fen, commission.withdrawals.review_fen) == (
        1_000, 200_000)


@pytest.mark.parametrize(
    ("level1", "level2", "days"),
    [(0, 0, 0), (10_000, 0, 365), (0, 10_000, 1), (5000, 5000, 30), (9999, 1, 0)],
)
def test_commission_boundary_values_are_accepted(level1: int, level2: int, days: int) -> None:
    table = {"level1_bps": level1, "level2_bps": level2, "return_window_days": days}
    commission = parse(with_commission(table), {}, SOURCE).commission
    assert commission.rates == Rates(level1, level2)
    assert commission.return_window_days == days
    assert commission.return_window_seconds == days * 86_400


BAD_COMMISSION: list[Any] = [
    # rates: each within 0..10000 basis points
    pytest.param({"level1_bps": -1}, "commission.level1_bps", id="level1-negative"),
    pytest.param({"level1_bps": 10_001, "level2_bps": 0}, "commission.level1_bps",
                 id="level1-above-100pct"),
    pytest.param({"level2_bps": -1}, "commission.level2_bps", id="level2-negative"),
    pytest.param({"level1_bps": 0, "level2_bps": 10_001}, "commission.level2_bps",
                 id="level2-above-100pct"),
    # together at most the whole order
    pytest.param({"level1_bps": 5001, "level2_bps": 5000}, "commission.level2_bps",
                 id="sum-above-100pct"),
    pytest.param({"level1_bps": 10_000, "level2_bps": 1}, "commission.level2_bps",
                 id="sum-one-over"),
    # return window: 0..365 days
    pytest.param({"return_window_days": -1}, "commission.return_window_days",
                 id="window-negative"),
    pytest.param({"return_window_days": 366}, "commission.return_window_days",
                 id="window-366"),
    # types: integers only, never strings, floats or booleans
    pytest.param({"level1_bps": "1000"}, "commission.level1_bps", id="level1-string"),
    pytest.param({"level1_bps": 1000.0}, "commission.level1_bps", id="level1-float"),
    pytest.param({"level1_bps": True}, "commission.level1_bps", id="level1-boolean"),
    pytest.param({"level2_bps": "3%"}, "commission.level2_bps", id="level2-string"),
    pytest.param({"level2_bps": 0.03}, "commission.level2_bps", id="level2-float"),
    pytest.param({"return_window_days": "30"}, "commission.return_window_days",
                 id="window-string"),
    pytest.param({"return_window_days": 7.5}, "commission.return_window_days",
                 id="window-float"),
    pytest.param({"return_window_days": False}, "commission.return_window_days",
                 id="window-boolean"),
    # withdrawal fees and tax
    pytest.param({"withdrawal_fee_bps": -1}, "commission.withdrawal_fee_bps",
                 id="fee-negative"),
    pytest.param({"withdrawal_fee_bps": 10_000}, "commission.withdrawal_fee_bps",
                 id="fee-whole"),
    pytest.param({"withdrawal_min_fee_fen": 100}, "commission.withdrawal_min_fee_fen",
                 id="min-fee-not-below-min"),
    pytest.param({"tax_threshold_fen": 0}, "commission.tax_threshold_fen", id="tax-zero"),
    pytest.param({"tax_zone": "Mars/Olympus"}, "commission.tax_zone", id="tax-zone-unknown"),
    pytest.param({"tax_zone": "../etc"}, "commission.tax_zone", id="tax-zone-path"),
    # binding modes: a known mode, keys only where the mode uses them
    pytest.param({"binding_mode": "forever"}, "commission.binding_mode", id="mode-unknown"),
    pytest.param({"binding_mode": "Latest"}, "commission.binding_mode", id="mode-case"),
    pytest.param({"binding_mode": 1}, "commission.binding_mode", id="mode-number"),
    pytest.param({"binding_mode": "expiring", "binding_valid_days": 0},
                 "commission.binding_valid_days", id="valid-days-zero"),
    pytest.param({"binding_mode": "expiring", "binding_valid_days": 3651},
                 "commission.binding_valid_days", id="valid-days-over"),
    pytest.param({"binding_mode": "expiring", "binding_valid_days": 1.5},
                 "commission.binding_valid_days", id="valid-days-float"),
    pytest.param({"binding_mode": "latest", "binding_valid_days": 30},
                 "commission.binding_valid_days", id="valid-days-not-expiring"),
    pytest.param({"binding_valid_days": 30}, "commission.binding_valid_days",
                 id="valid-days-permanent"),
    pytest.param({"binding_mode": "latest", "binding_protect_minutes": -1},
                 "commission.binding_protect_minutes", id="protect-negative"),
    pytest.param({"binding_mode": "latest", "binding_protect_minutes": "30"},
                 "commission.binding_protect_minutes", id="protect-string"),
    pytest.param({"binding_protect_minutes": 30}, "commission.binding_protect_minutes",
                 id="protect-permanent"),
    # unknown keys
    pytest.param({"level3_bps": 100}, "commission.level3_bps", id="level3-unknown"),
    pytest.param({"return_window": 30}, "commission.return_window", id="misspelled-key"),
    pytest.param({"level1_bps": 1000, "zeta": 1, "alpha": 1}, "commission.alpha",
                 id="first-unknown-named"),
    # the table itself
    pytest.param(1000, "commission", id="commission-not-table"),
    pytest.param([{"level1_bps": 1000}], "commission", id="commission-array"),
]


@pytest.mark.parametrize(("table", "policy"), [
    ({}, BindingPolicy("permanent")),  # today's behaviour by default
    ({"binding_mode": "permanent"}, BindingPolicy()),
    ({"binding_mode": "expiring"}, BindingPolicy("expiring", valid_days=30)),
    ({"binding_mode": "expiring", "binding_valid_days": 7, "binding_protect_minutes": 60},
     BindingPolicy("expiring", valid_days=7, protect_minutes=60)),
    ({"binding_mode": "latest"}, BindingPolicy("latest", protect_minutes=0)),
    ({"binding_mode": "latest", "binding_protect_minutes": 525_600},
     BindingPolicy("latest", protect_minutes=525_600)),
])
def test_commission_binding_modes(table: dict[str, Any], policy: BindingPolicy) -> None:
    assert parse(with_commission(table), {}, SOURCE).commission.binding == policy


def test_commission_sum_above_whole_order_with_default_level2_is_refused() -> None:
    # level1 alone is in range, but with the default 300 bps of level 2 it exceeds 100%.
    with pytest.raises(ConfigError) as info:
        parse(with_commission({"level1_bps": 9_800}), {}, SOURCE)
    assert info.value.key.startswith("commission.")


@pytest.mark.parametrize("key", ["level1_bps", "return_window_days", "withdrawal_min_fen",
                                 "withdrawal_review_fen"])
def test_commission_wrong_type_reason_is_readable(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_commission({key: "1000"}), {}, SOURCE)
    assert info.value.reason == "must be an integer, not str"
    with pytest.raises(ConfigError) as info:
        parse(with_commission({key: True}), {}, SOURCE)
    assert "boolean" in info.value.reason


# --- [commission] withdrawal limits ---------------------------------------------------------


def test_fee_and_tax_keys_are_read() -> None:
    commission = parse(with_commission({"withdrawal_fee_bps": 60, "withdrawal_min_fee_fen": 20,
                                        "tax_threshold_fen": 500, "tax_zone": "Asia/Tokyo"}),
                       {}, SOURCE).commission
    assert (commission.withdrawals.fee_bps, commission.withdrawals.min_fee_fen) == (60, 20)
    assert (commission.tax_threshold_fen, commission.tax_zone) == (500, "Asia/Tokyo")
    default = parse(good(), {}, SOURCE).commission
    assert (default.tax_threshold_fen, default.tax_zone) == (10_000_000, "Asia/Shanghai")


def test_withdrawal_limits_default() -> None:
    limits = parse(good(), {}, SOURCE).commission.withdrawals
    assert limits == CommissionConfig().withdrawals
    assert (limits.min_fen, limits.review_fen) == (100, 50_000)
    assert parse(with_commission({}), {}, SOURCE).commission.withdrawals == limits


@pytest.mark.parametrize(
    ("table", "least", "review"),
    [
        pytest.param({"withdrawal_min_fen": 1}, 1, 50_000, id="min-only-smallest"),
        pytest.param({"withdrawal_min_fen": 50_000}, 50_000, 50_000, id="min-only-at-review"),
        pytest.param({"withdrawal_review_fen": 100}, 100, 100, id="review-only-at-min"),
        pytest.param({"withdrawal_review_fen": 10**9}, 100, 10**9, id="review-only-large"),
        pytest.param({"withdrawal_min_fen": 1, "withdrawal_review_fen": 1}, 1, 1,
                     id="both-one"),
        pytest.param({"withdrawal_min_fen": 500, "withdrawal_review_fen": 500}, 500, 500,
                     id="equal"),
        pytest.param({"withdrawal_min_fen": 200, "withdrawal_review_fen": 20_000}, 200,
                     20_000, id="both-set"),
        pytest.param({"withdrawal_min_fen": 60_000, "withdrawal_review_fen": 60_001}, 60_000,
                     60_001, id="both-above-default-review"),
    ],
)
def test_withdrawal_limits_accepted(table: dict[str, int], least: int, review: int) -> None:
    commission = parse(with_commission(table), {}, SOURCE).commission
    limits = commission.withdrawals
    assert (limits.min_fen, limits.review_fen) == (least, review)
    # The other commission keys keep their defaults.
    assert commission.rates == CommissionConfig().rates
    assert commission.return_window_days == CommissionConfig().return_window_days


BAD_WITHDRAWAL: list[Any] = [
    pytest.param({"withdrawal_min_fen": 0}, "commission.withdrawal_min_fen", id="min-zero"),
    pytest.param({"withdrawal_min_fen": -1}, "commission.withdrawal_min_fen",
                 id="min-negative"),
    pytest.param({"withdrawal_min_fen": 0, "withdrawal_review_fen": 0},
                 "commission.withdrawal_min_fen", id="both-zero"),
    pytest.param({"withdrawal_min_fen": 101, "withdrawal_review_fen": 100},
                 "commission.withdrawal_review_fen", id="review-one-below-min"),
    pytest.param({"withdrawal_review_fen": 99}, "commission.withdrawal_review_fen",
                 id="review-below-default-min"),
    pytest.param({"withdrawal_review_fen": 0}, "commission.withdrawal_review_fen",
                 id="review-zero"),
    # A minimum above the default review threshold needs its own threshold.
    pytest.param({"withdrawal_min_fen": 50_001}, "commission.withdrawal_review_fen",
                 id="min-above-default-review"),
    pytest.param({"withdrawal_min_fen": "100"}, "commission.withdrawal_min_fen",
                 id="min-string"),
    pytest.param({"withdrawal_min_fen": 100.0}, "commission.withdrawal_min_fen",
                 id="min-float"),
    pytest.param({"withdrawal_min_fen": True}, "commission.withdrawal_min_fen",
                 id="min-boolean"),
    pytest.param({"withdrawal_review_fen": "50000"}, "commission.withdrawal_review_fen",
                 id="review-string"),
    pytest.param({"withdrawal_review_fen": 5e4}, "commission.withdrawal_review_fen",
                 id="review-float"),
    pytest.param({"withdrawal_review_fen": False}, "commission.withdrawal_review_fen",
                 id="review-boolean"),
    pytest.param({"withdrawal_max_fen": 100}, "commission.withdrawal_max_fen",
                 id="unknown-withdrawal-key"),
    pytest.param({"withdrawal_min": 100}, "commission.withdrawal_min", id="misspelled-min"),
]


@pytest.mark.parametrize(("table", "key"), [*BAD_COMMISSION, *BAD_WITHDRAWAL])
def test_bad_commission_config_names_key(table: Any, key: str) -> None:
    assert_refused(with_commission(table), key)


# --- [campaigns.commission]: a campaign's own rates ------------------------------------------


def test_a_campaign_without_rates_earns_the_shops() -> None:
    config = parse(with_commission({"level1_bps": 800, "level2_bps": 100}), {}, SOURCE)
    assert config.groupbuys[0].commission == Rates(800, 100)
    assert config.commission_rates("tea-duo") == Rates(800, 100)
    assert config.groupbuys[0].public()["commission"] == {"level1_bps": 800, "level2_bps": 100}


@pytest.mark.parametrize(("own", "expected"), [
    ({"level1_bps": 2000, "level2_bps": 0}, Rates(2000, 0)),
    ({"level1_bps": 0}, Rates(0, 300)),  # a key it leaves out is the shop's
    ({}, Rates(1000, 300)),
])
def test_a_campaign_overrides_the_shops_rates_key_by_key(own: dict[str, int],
                                                         expected: Rates) -> None:
    data = good()
    data["campaigns"][0]["commission"] = own
    config = parse(data, {}, SOURCE)
    assert config.commission_rates("tea-duo") == expected
    # A campaign no longer configured (its orders may still be in the outbox): the shop's.
    assert config.commission_rates("gone") == Rates(1000, 300)


@pytest.mark.parametrize(("own", "key"), [
    ({"level1_bps": -1}, "campaigns[0].commission.level1_bps"),
    ({"level1_bps": 9_000, "level2_bps": 1_001}, "campaigns[0].commission.level2_bps"),
    ({"level3_bps": 5}, "campaigns[0].commission.level3_bps"),
    ({"return_window_days": 7}, "campaigns[0].commission.return_window_days"),
    (5, "campaigns[0].commission"),
])
def test_bad_campaign_rates_name_their_key(own: Any, key: str) -> None:
    data = good()
    data["campaigns"][0]["commission"] = own
    assert_refused(data, key)


def test_a_board_keeping_orders_no_longer_than_the_return_window_is_refused() -> None:
    from tests.support import configs

    doc = configs.document([{"id": "wk", "kind": "leaderboard", "title": "Sales",
                             "metric": "sales", "scope": "everyone", "period": "weekly",
                             "keep_days": 30,
                             "starts_at": "2020-01-01T00:00:00+00:00",
                             "ends_at": "2099-01-01T00:00:00+00:00"}])
    doc["commission"] = {"return_window_days": 30}
    with pytest.raises(ConfigError) as refused:
        parse(doc, {}, SOURCE)
    assert refused.value.key == "campaigns[0].keep_days"
    doc["campaigns"][0]["keep_days"] = 31
    assert parse(doc, {}, SOURCE).campaign("wk") is not None
    # A window in seconds is compared in seconds: a day's board outlives 86399 s.
    doc["campaigns"][0]["keep_days"] = 1
    doc["commission"] = {"return_window_seconds": 86_400}
    with pytest.raises(ConfigError) as refused:
        parse(doc, {}, SOURCE)
    assert "return_window_seconds (86400)" in refused.value.reason
    doc["commission"] = {"return_window_seconds": 86_399}
    assert parse(doc, {}, SOURCE).campaign("wk") is not None
