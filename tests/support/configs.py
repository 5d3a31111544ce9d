"""Config documents for tests, built as data (and as TOML for server processes)."""

from __future__ import annotations

import json
from typing import Any

SECRET = "test-secret-0123456789abcdef0123456789"


def campaign(cid: str, *, size: int = 5, stock: int = 1000, time_limit: int = 3600,
             led: int = 1, joined: int = 1, ratio: float | None = None,
             starts_at: str = "2020-01-01T00:00:00+00:00",
             ends_at: str = "2099-01-01T00:00:00+00:00", pay: bool | None = None,
             pay_within: int | None = None) -> dict[str, Any]:
    """One group-buy campaign table (`pay`: its `pay_to_join`, the config's default when
    None)."""
    data: dict[str, Any] = {
        "id": cid, "kind": "groupbuy", "title": f"Test {cid}", "starts_at": starts_at,
        "ends_at": ends_at, "group_size": size, "time_limit_seconds": time_limit,
        "stock": stock, "max_groups_led": led, "max_groups_joined": joined,
        "product": {"sku": f"SKU-{cid}", "title": f"Product {cid}", "list_price": 10000,
                    "group_price": 6000},
    }
    if ratio is not None:
        data["virtual_fill_ratio"] = ratio
    if pay is not None:
        data["pay_to_join"] = pay
    if pay_within is not None:
        data["pay_within_seconds"] = pay_within
    return data


def bargain(cid: str, *, helpers: int = 5, stock: int = 1000, time_limit: int = 3600,
            list_price: int = 10000, floor_price: int = 1000, started: int = 1,
            per_day: int = 1000, per_campaign: int = 1000, before_floor: bool = False,
            pay_within: int = 900, starts_at: str = "2020-01-01T00:00:00+00:00",
            ends_at: str = "2099-01-01T00:00:00+00:00", **extra: Any) -> dict[str, Any]:
    """One bargain campaign table."""
    return {
        "id": cid, "kind": "bargain", "title": f"Test {cid}", "starts_at": starts_at,
        "ends_at": ends_at, "stock": stock, "helpers_to_floor": helpers,
        "time_limit_seconds": time_limit, "max_bargains_started": started,
        "max_helps_per_day": per_day, "max_helps_per_campaign": per_campaign,
        "buy_before_floor": before_floor, "pay_within_seconds": pay_within, **extra,
        "product": {"sku": f"SKU-{cid}", "title": f"Product {cid}", "list_price": list_price,
                    "floor_price": floor_price},
    }


def lottery(cid: str, *, free: int = 3, per_order: int = 1, reset_at: str = "00:00",
            prizes: list[dict[str, Any]] | None = None,
            starts_at: str = "2020-01-01T00:00:00+00:00",
            ends_at: str = "2099-01-01T00:00:00+00:00", **extra: Any) -> dict[str, Any]:
    """One lottery campaign table: by default a product of stock 10 (one per user), a
    coupon, and the thanks slot."""
    return {
        "id": cid, "kind": "lottery", "title": f"Test {cid}", "starts_at": starts_at,
        "ends_at": ends_at, "free_draws_per_day": free, "draws_per_order": per_order,
        "reset_at": reset_at, **extra,
        "prizes": prizes if prizes is not None else [
            {"id": "teapot", "title": "Teapot", "kind": "product", "sku": f"POT-{cid}",
             "weight": 10, "stock": 10, "max_wins_per_user": 1},
            {"id": "coupon", "title": "Coupon", "kind": "coupon", "coupon": "TEN",
             "weight": 30, "stock": 1000},
            {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 60},
        ],
    }


def document(campaigns: list[dict[str, Any]], *, shards: int = 2, namespace: str = "test",
             database_url: str | None = None, redis_url: str | None = None,
             ray_address: str | None = None, data_dir: str = ".fission",
             server: dict[str, Any] | None = None) -> dict[str, Any]:
    """A whole config document."""
    storage: dict[str, Any] = {"data_dir": data_dir}
    if database_url:
        storage["database_url"] = database_url
    if redis_url:
        storage["redis_url"] = redis_url
    ray: dict[str, Any] = {"shards": shards, "namespace": namespace}
    if ray_address:
        ray["address"] = ray_address
    return {
        "server": server or {},
        "auth": {"secret": SECRET},
        "storage": storage,
        "ray": ray,
        "pipeline": {"poll_interval_ms": 100},
        "campaigns": campaigns,
    }


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _tables(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def to_toml(doc: dict[str, Any]) -> str:
    """Serialise a document of the shape `document` builds (tables, one array of tables)."""
    lines: list[str] = []
    for section in ("server", "auth", "storage", "ray", "pipeline", "commission"):
        lines.append(f"[{section}]")
        values = doc.get(section, {})
        arrays = {k: v for k, v in values.items() if isinstance(v, list) and _tables(v)}
        lines += [f"{k} = {_value(v)}" for k, v in values.items() if k not in arrays]
        for k, v in arrays.items():  # arrays of tables after the keys: the grades
            for table in v:
                lines.append(f"[[{section}.{k}]]")
                lines += [f"{kk} = {_value(vv)}" for kk, vv in table.items()]
    for item in doc.get("campaigns", []):
        lines.append("[[campaigns]]")
        lines += [f"{k} = {_value(v)}" for k, v in item.items() if not _tables(v)]
        for k, v in item.items():
            if isinstance(v, dict):
                lines.append(f"[campaigns.{k}]")
                lines += [f"{kk} = {_value(vv)}" for kk, vv in v.items()]
            elif _tables(v):  # an array of tables: a lottery's prizes
                for table in v:
                    lines.append(f"[[campaigns.{k}]]")
                    lines += [f"{kk} = {_value(vv)}" for kk, vv in table.items()]
    return "\n".join(lines) + "\n"
