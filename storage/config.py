"""Configuration: `config.toml` plus `FISSION_*` overrides, loaded once into frozen objects.

`parse(data, env, source)` is pure so every rule is tested without files; `load(path)` is
the only place that reads the file and the environment. A bad config raises ConfigError
naming the file, the key and the reason.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from games.campaign import GroupBuyCampaign
from games.commission import BINDING_MODES, BPS, EARNERS, BindingPolicy, Grade, Rates, grade_of
from games.core import Campaign
from games.registry import GAMES
from games.settings import ConfigError, Table, read_rates
from games.withdrawal import Limits

__all__ = ["Config", "ConfigError", "load", "parse"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_frame_bytes: int = 16_384
    max_body_bytes: int = 16_384
    frames_per_second: float = 20.0
    frame_burst: int = 40
    send_queue: int = 256
    history_size: int = 200
    history_ttl_seconds: int = 3600
    # One INFO line per command (an access log); off, only failures are logged.
    log_commands: bool = False
    # WebSocket handshakes from browsers must come from one of these origins (exact
    # `scheme://host[:port]`); empty admits any (the development default).
    allowed_origins: tuple[str, ...] = ()
    max_sockets_per_user: int = 16
    max_sockets_per_ip: int = 2000  # 0: no cap (behind a proxy every client shares its IP)
    auth_timeout_seconds: float = 10.0  # a socket must prove who it is this soon
    idle_timeout_seconds: float = 60.0  # ... and send a first frame this soon


@dataclass(frozen=True)
class AuthConfig:
    secret: str


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = ".fission"
    database_url: str | None = None
    redis_url: str | None = None


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None
    namespace: str = "fission"
    shards: int = 2
    # Actor calls a gateway keeps in flight per shard. Few calls carrying many commands
    # beat many small ones: a call costs ~1 ms of CPU across processes whatever it carries,
    # and a shard commits what arrived during its previous commit in one statement anyway.
    calls_in_flight: int = 1


@dataclass(frozen=True)
class PipelineConfig:
    payment_adapter: str = "sandbox"
    poll_interval_ms: int = 500
    batch_size: int = 500
    # When the sandbox's payer pays: "immediate" (within the join itself, so its answer
    # already shows a paid member) or "on_request" (`POST /api/sandbox/payments/{id}/pay`,
    # for demos and tests of held seats).
    sandbox_pays: str = "immediate"


@dataclass(frozen=True)
class WechatPaySettings:
    """`[wechatpay]`: a merchant's WeChat Pay v3 credentials (files are PEM paths, read
    when the gateway is made). `api_v3_key` is better given by `FISSION_WECHATPAY_API_V3_KEY`
    than written in the file."""

    mchid: str
    appid: str
    merchant_serial: str
    merchant_key_file: str
    api_v3_key: str = field(repr=False)
    platform_certificates: tuple[str, ...]
    notify_url: str
    base_url: str = "https://api.mch.weixin.qq.com"


@dataclass(frozen=True)
class CommissionConfig:
    """Two-level commission: rates in basis points of the order, and the return window.

    A commission is pending for `return_window_days` after its order (the buyer may
    still return it), then settles; 0 settles at once and allows no returns.
    `window_seconds` (the key `return_window_seconds`), when set, is the window in
    seconds instead: a window that ends within minutes, for a staging shop or the bench.
    """

    rates: Rates = field(default_factory=lambda: Rates(level1_bps=1000, level2_bps=300))
    return_window_days: int = 30
    # Settled commission is withdrawn in amounts of at least `min_fen`; from `review_fen`
    # up, a marketer approves each withdrawal before it is paid.
    withdrawals: Limits = field(default_factory=lambda: Limits(min_fen=100,
                                                               review_fen=50_000))
    # 个税: a user whose settled commission in a calendar year of `tax_zone` reaches this
    # is flagged once that year (100,000 CNY by default).
    tax_threshold_fen: int = 10_000_000
    tax_zone: str = "Asia/Shanghai"
    # Who may earn (games.commission.may_earn): "everyone", "approved" distributors, or
    # users whose own paid spend reached `earner_min_spend_fen` ("spend").
    earners: str = "everyone"
    earner_min_spend_fen: int = 0
    # An eligible distributor's own order earns them level 1 (their referrer level 2).
    self_purchase: bool = False
    # Distributor grades (分销等级), lowest first; empty: everyone earns `rates`.
    grades: tuple[Grade, ...] = ()
    # Who a bound buyer may be taken over by, and when (games.commission.BindingPolicy):
    # `binding_mode`, `binding_valid_days`, `binding_protect_minutes`.
    binding: BindingPolicy = field(default_factory=BindingPolicy)
    # `return_window_seconds`: the window in seconds instead of days; None: the days'.
    window_seconds: int | None = None

    @property
    def return_window_seconds(self) -> int:
        """The return window, in seconds: `window_seconds` when set, else the days'."""
        if self.window_seconds is not None:
            return self.window_seconds
        return self.return_window_days * 86_400


@dataclass(frozen=True)
class Config:
    """Everything Fission reads from config, validated and frozen."""

    source: str
    server: ServerConfig
    auth: AuthConfig
    storage: StorageConfig
    ray: RayConfig
    pipeline: PipelineConfig
    campaigns: tuple[Campaign, ...]
    commission: CommissionConfig = field(default_factory=CommissionConfig)
    wechatpay: WechatPaySettings | None = None
    # Campaigns with a `[campaigns.commission]` table of their own: their rates beat the
    # grades' (a campaign with both rates 0 earns nobody anything).
    own_rates: frozenset[str] = frozenset()
    _by_id: dict[str, Campaign] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update((c.id, c) for c in self.campaigns)

    @property
    def groupbuys(self) -> tuple[GroupBuyCampaign, ...]:
        """The group-buy campaigns."""
        return tuple(c for c in self.campaigns if isinstance(c, GroupBuyCampaign))

    def campaign(self, campaign_id: str) -> Campaign | None:
        """The campaign called `campaign_id`, of any kind, if configured."""
        return self._by_id.get(campaign_id)

    def commission_rates(self, campaign_id: str) -> Rates:
        """What an order of `campaign_id` earns up the referral chain: the campaign's own
        rates, or the shop's (also for a campaign since removed from the config)."""
        campaign = self.campaign(campaign_id)
        if campaign is None or campaign.commission is None:
            return self.commission.rates
        return campaign.commission

    def graded_rates(self, campaign_id: str, users: Iterable[str],
                     grades: Mapping[str, str]) -> dict[str, Rates]:
        """The rates each of `users` earns on an order of `campaign_id` by their grade
        (`grades`: user -> recorded grade id; a user without one is at the first grade):
        empty when grades are off or the campaign sets its own rates, for then
        `commission_rates` alone decides, for everyone."""
        configured = self.commission.grades
        if not configured or campaign_id in self.own_rates:
            return {}
        return {user: grade.rates for user in users
                if (grade := grade_of(configured, grades.get(user))) is not None}


# Environment variable -> (section, key). Nothing else in Fission reads the environment.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "FISSION_DATABASE_URL": ("storage", "database_url"),
    "FISSION_REDIS_URL": ("storage", "redis_url"),
    "FISSION_DATA_DIR": ("storage", "data_dir"),
    "FISSION_RAY_ADDRESS": ("ray", "address"),
    "FISSION_RAY_NAMESPACE": ("ray", "namespace"),
    "FISSION_SHARDS": ("ray", "shards"),
    "FISSION_AUTH_SECRET": ("auth", "secret"),
    "FISSION_HOST": ("server", "host"),
    "FISSION_PORT": ("server", "port"),
    "FISSION_WECHATPAY_API_V3_KEY": ("wechatpay", "api_v3_key"),
}

PAYMENT_ADAPTERS = frozenset({"sandbox", "wechatpay"})


def _apply_env(data: dict[str, Any], env: Mapping[str, str], source: str) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for var, (section, key) in ENV_OVERRIDES.items():
        if var not in env:
            continue
        value: Any = env[var]
        if key in {"port", "shards"}:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(source, var, "must be an integer") from None
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(source, section, "must be a table")
        table[key] = value
    return merged


def parse(data: Mapping[str, Any], env: Mapping[str, str], source: str = "config") -> Config:
    """Validate `data` (a parsed TOML document) with `env` overrides into a Config."""
    root = Table(source, "", _apply_env(dict(data), env, source))
    server = _server(Table(source, "server", root.get("server", dict, {})))
    auth_s = Table(source, "auth", root.get("auth", dict, {}))
    secret = auth_s.get("secret", str)
    auth_s.check("secret", len(secret) >= 32,
                 "must be at least 32 characters (HS256 wants a 256-bit key)")
    auth_s.done()
    storage_s = Table(source, "storage", root.get("storage", dict, {}))
    storage = StorageConfig(
        data_dir=storage_s.get("data_dir", str, ".fission"),
        database_url=storage_s.get("database_url", str, None) or None,
        redis_url=storage_s.get("redis_url", str, None) or None,
    )
    storage_s.done()
    ray_s = Table(source, "ray", root.get("ray", dict, {}))
    ray = RayConfig(
        address=ray_s.get("address", str, None) or None,
        namespace=ray_s.get("namespace", str, "fission"),
        shards=ray_s.get("shards", int, 2),
        calls_in_flight=ray_s.get("calls_in_flight", int, 1),
    )
    ray_s.check("shards", 1 <= ray.shards <= 64, "must be from 1 to 64")
    ray_s.check("calls_in_flight", 1 <= ray.calls_in_flight <= 64, "must be from 1 to 64")
    ray_s.done()
    pipe_s = Table(source, "pipeline", root.get("pipeline", dict, {}))
    pipeline = PipelineConfig(
        payment_adapter=pipe_s.get("payment_adapter", str, "sandbox"),
        poll_interval_ms=pipe_s.get("poll_interval_ms", int, 500),
        batch_size=pipe_s.get("batch_size", int, 500),
        sandbox_pays=pipe_s.get("sandbox_pays", str, "immediate"),
    )
    pipe_s.check("sandbox_pays", pipeline.sandbox_pays in ("immediate", "on_request"),
                 'must be "immediate" or "on_request"')
    pipe_s.check("payment_adapter", pipeline.payment_adapter in PAYMENT_ADAPTERS,
                 f"must be one of {sorted(PAYMENT_ADAPTERS)}")
    pipe_s.check("poll_interval_ms", 10 <= pipeline.poll_interval_ms <= 60_000,
                 "must be from 10 to 60000")
    pipe_s.check("batch_size", 1 <= pipeline.batch_size <= 10_000, "must be from 1 to 10000")
    pipe_s.done()
    # `[wechatpay]` is read when it is the adapter (its API v3 key may come from the
    # environment alone, so the table can exist without a file saying so).
    table = root.get("wechatpay", dict, {})
    wechatpay = None
    if pipeline.payment_adapter == "wechatpay":
        wechatpay = _wechatpay(Table(source, "wechatpay", table))
    commission = _commission(Table(source, "commission", root.get("commission", dict, {})))
    campaigns_raw = root.get("campaigns", list, [])
    campaigns: list[Campaign] = []
    seen: set[str] = set()
    for index, raw in enumerate(campaigns_raw):
        campaign = _campaign(Table(source, f"campaigns[{index}]", raw), commission.rates)
        if campaign.id in seen:
            raise ConfigError(source, f"campaigns[{index}].id", f"{campaign.id!r} is used twice")
        seen.add(campaign.id)
        # A board must still hold an order when its refund comes, or the refund would
        # take back nothing: it keeps orders longer than the shop's return window.
        keep = getattr(campaign, "keep_days", None)
        if keep is not None and keep * 86_400 <= commission.return_window_seconds:
            window = (f"return_window_seconds ({commission.window_seconds})"
                      if commission.window_seconds is not None
                      else f"return_window_days ({commission.return_window_days})")
            raise ConfigError(source, f"campaigns[{index}].keep_days",
                              f"must be more than commission.{window}")
        campaigns.append(campaign)
    root.done()
    return Config(source=source, server=server, auth=AuthConfig(secret), storage=storage,
                  ray=ray, pipeline=pipeline, campaigns=tuple(campaigns),
                  commission=commission, wechatpay=wechatpay,
                  own_rates=frozenset(c.id for c, raw in zip(campaigns, campaigns_raw,
                                                             strict=True)
                                      if isinstance(raw, dict) and "commission" in raw))


def _wechatpay(s: Table) -> WechatPaySettings:
    digits = re.compile(r"[0-9]{1,32}")
    found = WechatPaySettings(
        mchid=s.get("mchid", str), appid=s.get("appid", str),
        merchant_serial=s.get("merchant_serial", str),
        merchant_key_file=s.get("merchant_key_file", str),
        api_v3_key=s.get("api_v3_key", str),
        platform_certificates=tuple(s.get("platform_certificates", list)),
        notify_url=s.get("notify_url", str),
        base_url=s.get("base_url", str, "https://api.mch.weixin.qq.com"),
    )
    s.check("mchid", digits.fullmatch(found.mchid) is not None, "must be the merchant's digits")
    s.check("appid", re.fullmatch(r"[A-Za-z0-9]{1,32}", found.appid) is not None,
            "must be the app's id, such as wxd678efh567hg6787")
    s.check("merchant_serial", re.fullmatch(r"[0-9A-Fa-f]{8,64}", found.merchant_serial)
            is not None, "must be the merchant certificate's serial (hex)")
    s.check("api_v3_key", len(found.api_v3_key.encode()) == 32, "must be 32 bytes")
    s.check("platform_certificates", bool(found.platform_certificates) and all(
        isinstance(p, str) and p for p in found.platform_certificates),
        "must list the platform certificates' PEM files")
    for name in ("notify_url", "base_url"):
        s.check(name, getattr(found, name).startswith("https://"), "must be an https:// URL")
    s.done()
    return found


def _commission(s: Table) -> CommissionConfig:
    d = CommissionConfig()
    rates = read_rates(s, d.rates)
    window = s.get("return_window_days", int, d.return_window_days)
    s.check("return_window_days", 0 <= window <= 365, "must be from 0 to 365")
    # A window in seconds instead (a staging shop's, the bench's): one of the two keys.
    seconds: int | None = None
    if "return_window_seconds" in s.data:
        seconds = s.get("return_window_seconds", int)
        s.check("return_window_seconds", 0 <= seconds <= 365 * 86_400,
                "must be from 0 to 31536000 (365 days)")
        s.check("return_window_seconds", "return_window_days" not in s.data,
                "set return_window_days or return_window_seconds, not both")
    least = s.get("withdrawal_min_fen", int, d.withdrawals.min_fen)
    s.check("withdrawal_min_fen", least >= 1, "must be at least 1 fen")
    review = s.get("withdrawal_review_fen", int, d.withdrawals.review_fen)
    s.check("withdrawal_review_fen", review >= least, "must not be below withdrawal_min_fen")
    fee_bps = s.get("withdrawal_fee_bps", int, d.withdrawals.fee_bps)
    s.check("withdrawal_fee_bps", 0 <= fee_bps < 10_000, "must be from 0 to 9999")
    min_fee = s.get("withdrawal_min_fee_fen", int, d.withdrawals.min_fee_fen)
    s.check("withdrawal_min_fee_fen", 0 <= min_fee < least,
            "must be at least 0 and below withdrawal_min_fen")
    threshold = s.get("tax_threshold_fen", int, d.tax_threshold_fen)
    s.check("tax_threshold_fen", threshold >= 1, "must be at least 1 fen")
    zone = s.get("tax_zone", str, d.tax_zone)
    s.check("tax_zone", _zone_exists(zone), "must be an IANA time zone, e.g. Asia/Shanghai")
    earners = s.get("earners", str, d.earners)
    s.check("earners", earners in EARNERS, f"must be one of {', '.join(EARNERS)}")
    min_spend = s.get("earner_min_spend_fen", int, d.earner_min_spend_fen)
    s.check("earner_min_spend_fen", min_spend >= 0, "must be at least 0 fen")
    s.check("earner_min_spend_fen", earners != "spend" or min_spend >= 1,
            'must be at least 1 fen when earners = "spend"')
    self_purchase = s.get("self_purchase", bool, d.self_purchase)
    raw_grades = s.get("grades", list, [])
    grades = tuple(_grade(Table(s.source, f"{s.key('grades')}[{index}]", raw), rates, index)
                   for index, raw in enumerate(raw_grades))
    ids = [g.id for g in grades]
    for index, gid in enumerate(ids):
        if gid in ids[:index]:
            raise ConfigError(s.source, f"{s.key('grades')}[{index}].id",
                              f"{gid!r} is used twice")
    # An order's two levels are paid at two earners' grades: the highest level-1 rate
    # and the highest level-2 rate together must still fit in the order.
    if grades and max(g.rates.level1_bps for g in grades) + max(
            g.rates.level2_bps for g in grades) > BPS:
        raise ConfigError(s.source, s.key("grades"),
                          "the highest level1_bps plus the highest level2_bps of the grades"
                          " must not exceed 10000 (an order's two earners may be of"
                          " different grades)")
    binding = _binding(s, d.binding)
    s.done()
    return CommissionConfig(rates, window, Limits(least, review, fee_bps, min_fee),
                            threshold, zone, earners, min_spend, self_purchase, grades,
                            binding, seconds)


_GRADE_ID = re.compile(r"[a-z0-9_-]{1,32}")
_CONDITIONS = ("min_settled_sales_month_fen", "min_direct_buyers", "min_own_spend_fen")


def _grade(s: Table, shop: Rates, index: int) -> Grade:
    """One `[[commission.grades]]` table; its rates default to the shop's key by key."""
    gid = s.get("id", str)
    s.check("id", _GRADE_ID.fullmatch(gid) is not None,
            "must be 1-32 characters of a-z, 0-9, - and _")
    title = s.get("title", str)
    s.check("title", 1 <= len(title) <= 40 and title.isprintable(),
            "must be 1-40 printable characters")
    rates = read_rates(s, shop)
    limits: dict[str, int | None] = {}
    for name in _CONDITIONS:
        need: int | None = s.get(name, int, None)
        s.check(name, need is None or need >= 0, "must be at least 0")
        limits[name] = need
    match = s.get("match", str, "all")
    s.check("match", match in ("all", "any"), 'must be "all" or "any"')
    asked = [name for name in _CONDITIONS if limits[name] is not None]
    # Everyone starts at the first grade, so it asks nothing; any other must ask something,
    # or everyone would be there at once.
    if index == 0 and asked:
        raise s.fail(asked[0], "the first grade is everyone's start: it has no conditions")
    if index > 0 and not asked:
        raise s.fail("id", f"a grade above the first needs a condition ({', '.join(_CONDITIONS)})")
    s.done()
    return Grade(gid, title, rates, limits["min_settled_sales_month_fen"],
                 limits["min_direct_buyers"], limits["min_own_spend_fen"], match)


def _binding(s: Table, d: BindingPolicy) -> BindingPolicy:
    """The binding keys of `[commission]`. A key the mode does not use is refused rather
    than ignored: `binding_valid_days` under "latest" would silently mean nothing."""
    mode = s.get("binding_mode", str, d.mode)
    s.check("binding_mode", mode in BINDING_MODES,
            "must be " + ", ".join(f'"{m}"' for m in BINDING_MODES[:-1])
            + f' or "{BINDING_MODES[-1]}"')
    days = s.get("binding_valid_days", int, d.valid_days)
    s.check("binding_valid_days", 1 <= days <= 3650, "must be from 1 to 3650")
    s.check("binding_valid_days", mode == "expiring" or "binding_valid_days" not in s.data,
            'is only for binding_mode = "expiring"')
    minutes = s.get("binding_protect_minutes", int, d.protect_minutes)
    s.check("binding_protect_minutes", 0 <= minutes <= 525_600, "must be from 0 to 525600")
    s.check("binding_protect_minutes",
            mode != "permanent" or "binding_protect_minutes" not in s.data,
            'is not for binding_mode = "permanent" (a binding there is never taken over)')
    return BindingPolicy(mode, days, minutes)


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _server(s: Table) -> ServerConfig:
    d = ServerConfig()
    ints: dict[str, tuple[int, int]] = {
        "port": (1, 65535), "max_frame_bytes": (64, 1 << 20), "max_body_bytes": (64, 1 << 20),
        "frame_burst": (1, 10_000), "send_queue": (8, 100_000), "history_size": (1, 100_000),
        "history_ttl_seconds": (1, 30 * 86400), "max_sockets_per_user": (1, 10_000),
        "max_sockets_per_ip": (0, 1_000_000),
    }
    values: dict[str, Any] = {"host": s.get("host", str, d.host),
                              "log_commands": s.get("log_commands", bool, d.log_commands)}
    for name, (low, high) in ints.items():
        values[name] = s.get(name, int, getattr(d, name))
        s.check(name, low <= values[name] <= high, f"must be from {low} to {high}")
    fps = s.get("frames_per_second", (int, float), d.frames_per_second)
    s.check("frames_per_second", 0 < fps <= 10_000 and math.isfinite(fps),
            "must be above 0 and at most 10000")
    values["frames_per_second"] = float(fps)
    for name in ("auth_timeout_seconds", "idle_timeout_seconds"):
        seconds = s.get(name, (int, float), getattr(d, name))
        s.check(name, 0 < seconds <= 86_400 and math.isfinite(seconds),
                "must be above 0 and at most 86400")
        values[name] = float(seconds)
    origins = s.get("allowed_origins", list, list(d.allowed_origins))
    s.check("allowed_origins", all(isinstance(o, str) and "://" in o for o in origins),
            "must be an array of origins such as \"https://shop.example.com\"")
    values["allowed_origins"] = tuple(o.rstrip("/") for o in origins)
    s.done()
    return ServerConfig(**values)


def _campaign(s: Table, rates: Rates) -> Campaign:
    """A `[[campaigns]]` table, parsed by the game its `kind` names."""
    kind = s.get("kind", str)
    s.check("kind", kind in GAMES, f"must be one of {sorted(GAMES)}")
    s.used.discard("kind")  # the game reads its own table whole
    campaign: Campaign = GAMES[kind].parse_campaign(s, rates)
    return campaign


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` and the process environment (the one place that does) into a Config."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, "-", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "-", f"is not valid TOML ({exc})") from None
    return parse(data, os.environ if env is None else env, source)


