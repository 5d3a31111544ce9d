"""Percentiles, the printed tables, results JSON and the chart."""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SYSTEMS = {
    "fission_ws": "Fission /ws",
    "fission_http": "Fission HTTP",
    "mall": "mall baseline (HTTP)",
    "echo": "raw echo (/ws)",
}


def latencies(chunks: Iterable[bytes]) -> array[float]:
    """Concatenate the latency arrays generators send back as bytes."""
    values: array[float] = array("d")
    for chunk in chunks:
        values.frombytes(chunk)
    return values


def percentile(values: array[float] | list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def merge_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counts by key (refusal codes) summed over generators, the most frequent first."""
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total.most_common())


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def _f(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return [line, rule, *body]


def storm_lookup(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["system"], r["teams"]): r for r in results["storm"]}


def _storm_tables(results: dict[str, Any]) -> list[str]:
    """The join storm's table, its paced run, refusals and CPU shares."""
    out: list[str] = []
    storm = storm_lookup(results)
    levels = sorted({r["teams"] for r in results["storm"]})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results["storm"])]
    out.append("### a–c. Join storm: acked durable commands/s (ack p50 / p99 ms)")
    out.append("")
    header = ["teams (sockets)", *(SYSTEMS[s] for s in systems), "Fission/mall",
              "Fission/echo"]
    rows = []
    for teams in levels:
        cells = []
        for system in systems:
            r = storm.get((system, teams))
            cells.append("–" if r is None else
                         f"{_f(r['ops_per_s'])} ({_f(r['p50_ms'], 1)} / {_f(r['p99_ms'], 1)})")
        fission = storm.get(("fission_ws", teams), {}).get("ops_per_s", math.nan)
        mall = storm.get(("mall", teams), {}).get("ops_per_s", math.nan)
        echo = storm.get(("echo", teams), {}).get("ops_per_s", math.nan)
        sockets = teams * results["team_size"]
        rows.append([f"{teams} ({sockets})", *cells, f"{_f(ratio(fission, mall), 2)}×",
                     f"{_f(100 * ratio(fission, echo), 0)}%"])
    out += _table(header, rows)
    paced = results.get("storm_paced")
    if paced:
        out.append("")
        out.append(f"Fission /ws paced at {_f(paced['target_fraction'] * 100)}% of its peak "
                   f"({_f(paced['target_ops_per_s'])} cmds/s offered by {paced['teams']} teams):"
                   f" {_f(paced['ops_per_s'])} cmds/s, ack p50 {_f(paced['p50_ms'], 1)} ms,"
                   f" p99 {_f(paced['p99_ms'], 1)} ms")
    out += load_line([*results["storm"], *([paced] if paced else [])])
    errors = {f"{r['system']}@{r['teams']}": r["codes"] for r in results["storm"] if r["codes"]}
    if errors:
        out.append("")
        out.append("Refusals by code (expected: group_full, 2 per round for the real systems): "
                   + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    top = max(levels)
    for system in ("fission_ws", "fission_http", "mall"):
        r = storm.get((system, top))
        if r and r.get("cpu"):
            out.append("")
            out.append(f"Cores used during the {top}-team {SYSTEMS[system]} storm: "
                       + ", ".join(f"{role} {share:.2f}" for role, share in r["cpu"].items()
                                   if share >= 0.01))
    return out


def _sweep_table(sweep: list[dict[str, Any]]) -> list[str]:
    """Acked cmds/s and ack p50 / p99 per offered rate, per swept system."""
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in sweep)]
    at = {(r["system"], r["offered_ops_per_s"]): r for r in sweep}
    rows = []
    for rate in sorted({r["offered_ops_per_s"] for r in sweep}):
        cells = []
        for system in systems:
            r = at.get((system, rate))
            cells.append("–" if r is None else
                         f"{_f(r['ops_per_s'])} ({_f(r['p50_ms'], 1)} / {_f(r['p99_ms'], 1)})"
                         + (" saturated" if r["saturated"] else ""))
        rows.append([_f(rate), *cells])
    teams = sweep[0]["teams"]
    return ["", "### Open loop: ack latency against offered load", "",
            f"{teams} teams each start a round every `interval`, phases spread at random, so"
            " that the offered rate of successful commands is the first column; acked"
            " cmds/s (ack p50 / p99 ms). A system's sweep stops at its first saturated"
            " rate (acked under 90% of the offer).", "",
            *_table(["offered cmds/s", *(SYSTEMS[s] for s in systems)], rows),
            *load_line(sweep)]


BARGAIN_SYSTEMS = ("fission_ws", "fission_http", "mall")


def _cell(r: dict[str, Any] | None, rate: str) -> str:
    """A rate with its ack p50 / p99 ms, or a dash when the run was not made."""
    if r is None:
        return "–"
    return f"{_f(r[rate])} ({_f(r['p50_ms'], 1)} / {_f(r['p99_ms'], 1)})"


def bargain_tables(results: dict[str, Any]) -> list[str]:
    """The bargain help storm: acked helps/s per level and system with the ratios to the
    mall, the paced run, refusals, the rounds played to the floor and the checks."""
    runs = results.get("bargain") or []
    if not runs:
        return []
    at = {(r["system"], r["teams"]): r for r in runs}
    systems = [s for s in BARGAIN_SYSTEMS if any(r["system"] == s for r in runs)]
    rows = []
    for teams in sorted({r["teams"] for r in runs}):
        mall = at.get(("mall", teams), {}).get("helps_per_s", math.nan)
        ws = at.get(("fission_ws", teams), {}).get("helps_per_s", math.nan)
        http = at.get(("fission_http", teams), {}).get("helps_per_s", math.nan)
        sockets = next(r["sockets"] for r in runs if r["teams"] == teams)
        rows.append([f"{teams} ({sockets})",
                     *(_cell(at.get((s, teams)), "helps_per_s") for s in systems),
                     f"{_f(ratio(ws, mall), 2)}×", f"{_f(ratio(http, mall), 2)}×"])
    helpers = runs[0]["floors"] and runs[0]["helps"] // max(1, runs[0]["floors"])
    out = ["", "### f. Bargain help storm: acked helps/s (ack p50 / p99 ms)", "",
           "Each team starts a bargain (a fresh one each round, by the next of its users)"
           " and all its other users help it at once: two more than the helpers it takes"
           " to the floor, so two are refused (bargain_closed) per round; then they all"
           " move to the next round's bargain. One campaign, so one owner takes every"
           " help; the mall locks each bargain's row per help."
           + (f" About {helpers} acked helps per round." if helpers else ""), "",
           *_table(["teams (sockets)", *(SYSTEMS[s] for s in systems), "Fission /ws / mall",
                    "Fission HTTP / mall"], rows)]
    for paced in paced_bargain_runs(results):
        arrivals = ("each round's helpers at once" if paced.get("arrivals") != "spread" else
                    "each round's helpers arriving one by one, at random within the first"
                    f" {_f(paced['arrival_share'] * 100)}% of its interval")
        out += ["", f"Fission /ws paced at {_f(paced['target_fraction'] * 100)}% of its peak"
                f" ({_f(paced['target_helps_per_s'])} helps/s offered by {paced['teams']}"
                f" teams, {arrivals}):"
                f" {_f(paced['helps_per_s'])} helps/s, ack p50"
                f" {_f(paced['p50_ms'], 1)} ms, p99 {_f(paced['p99_ms'], 1)} ms"]
    every = bargain_runs(results)
    out += load_line(every)
    codes = {run_label(r): r["codes"] for r in every if r["codes"]}
    if codes:
        out += ["", "Refusals by code (expected: bargain_closed, 2 per round): "
                + "; ".join(f"{k}: {v}" for k, v in codes.items())]
    out += ["", "Bargains brought to the floor (acked starts): " + "; ".join(
        f"{run_label(r)}: {r['floors']} ({r['starts']})"
        for r in every)]
    top = max(r["teams"] for r in runs)
    for system in systems:
        r = at.get((system, top))
        if r and r.get("cpu"):
            out += ["", f"Cores used during the {top}-team {SYSTEMS[system]} help storm: "
                    + ", ".join(f"{role} {share:.2f}" for role, share in r["cpu"].items()
                                if share >= 0.01)]
    out += ["", bargain_checks(results)]
    return out


def paced_bargain_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The bargain's paced runs that ran: bursts, then spread arrivals."""
    return [results[k] for k in ("bargain_paced", "bargain_paced_spread") if results.get(k)]


def bargain_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bargain run: the closed-loop levels, then the paced runs."""
    return [*results.get("bargain", []), *paced_bargain_runs(results)]


def run_label(r: dict[str, Any]) -> str:
    """`system@teams` (`system@users` for a lottery run), with a `p` for a paced run (`ps`
    for a paced run whose helpers arrive spread out)."""
    level = r["teams"] if "teams" in r else r["users"]
    paced = ("ps" if r.get("arrivals") == "spread" else "p") if "target_fraction" in r else ""
    return f"{r['system']}@{level}{paced}"


def load_line(runs: list[dict[str, Any]]) -> list[str]:
    """The machine's load through `runs` (those that recorded it), as a paragraph: the
    1-minute load average as each began, the cores other work took during it."""
    shown = [r for r in runs if "load_1m" in r]
    if not shown:
        return []
    return ["", "Machine load per run (1-minute load average at its start, this bench"
            " included; cores busy with other work during it): " + "; ".join(
                f"{run_label(r)} {r['load_1m']:.2f}, {r['others_cores']:.2f}"
                for r in shown)]


def bargain_checks(results: dict[str, Any]) -> str:
    """The bargain invariants of both systems, as one sentence."""
    def said(inv: dict[str, Any] | None) -> str:
        if inv is None:
            return "not checked"
        return (f"cuts below the floor {inv['below_floor']}, price ≠ list − cuts"
                f" {inv['price_mismatch']}, a helper twice {inv['helped_twice']}, floor"
                f" missed {inv['floor_missed']}, acked-but-not-committed {inv['lost_acks']}"
                f" ({inv['acked']} acked helps, {inv['helps']} committed, {inv['bargains']}"
                " bargains)")
    seen = sum(r["below_floor_seen"] for r in bargain_runs(results))
    return (f"Postgres after the bargain runs — Fission: {said(results.get('bargain_invariants'))};"
            f" mall: {said(results.get('mall_bargain_invariants'))}. Answers showing a price"
            f" below the floor: {seen}.")


def lottery_tables(results: dict[str, Any]) -> list[str]:
    """The lottery draw storm: acked draws/s per level and system with the ratios to the
    mall, the paced run, the machine's load, refusals, the prizes won and the checks."""
    runs = results.get("lottery") or []
    if not runs:
        return []
    at = {(r["system"], r["users"]): r for r in runs}
    systems = [s for s in BARGAIN_SYSTEMS if any(r["system"] == s for r in runs)]
    rows = []
    for users in sorted({r["users"] for r in runs}):
        mall = at.get(("mall", users), {}).get("draws_per_s", math.nan)
        ws = at.get(("fission_ws", users), {}).get("draws_per_s", math.nan)
        http = at.get(("fission_http", users), {}).get("draws_per_s", math.nan)
        rows.append([str(users), *(_cell(at.get((s, users)), "draws_per_s") for s in systems),
                     f"{_f(ratio(ws, mall), 2)}×", f"{_f(ratio(http, mall), 2)}×"])
    out = ["", "### g. Lottery draw storm: acked draws/s (ack p50 / p99 ms)", "",
           "Every user (their own socket or HTTP client) draws again as soon as the answer"
           " comes, on one lottery campaign: one owner takes every draw in Fission; the"
           " mall locks the campaign's prize rows per draw. A product prize of stock 50"
           " and a coupon of stock 2,000 sell out once a system has made enough draws"
           " (the checks below show what each gave).", "",
           *_table(["users (sockets)", *(SYSTEMS[s] for s in systems), "Fission /ws / mall",
                    "Fission HTTP / mall"], rows)]
    paced = results.get("lottery_paced")
    if paced:
        out += ["", f"Fission /ws paced at {_f(paced['target_fraction'] * 100)}% of its peak"
                f" ({_f(paced['target_draws_per_s'])} draws/s offered by {paced['users']}"
                f" users): {_f(paced['draws_per_s'])} draws/s, ack p50"
                f" {_f(paced['p50_ms'], 1)} ms, p99 {_f(paced['p99_ms'], 1)} ms"]
    every = [*runs, *([paced] if paced else [])]
    out += load_line(every)
    codes = {run_label(r): r["codes"] for r in every if r["codes"]}
    out += ["", "Refusals by code (expected: none; no_draws_left stops a user): "
            + ("; ".join(f"{k}: {v}" for k, v in codes.items()) if codes else "none")]
    top = max(r["users"] for r in runs)
    for system in systems:
        r = at.get((system, top))
        if r and r.get("cpu"):
            out += ["", f"Cores used during the {top}-user {SYSTEMS[system]} draw storm: "
                    + ", ".join(f"{role} {share:.2f}" for role, share in r["cpu"].items()
                                if share >= 0.01)]
    out += ["", lottery_checks(results)]
    return out


def _won(inv: dict[str, Any]) -> str:
    """`prize won/stock, ...` in the prize table's order (∞ for unlimited)."""
    stock: dict[str, int | None] = inv.get("stock", {})
    won: dict[str, int] = inv.get("won", {})
    names = [*stock, *(p for p in won if p not in stock)]
    return ", ".join(f"{p} {won.get(p, 0):,}/{'∞' if stock.get(p) is None else f'{stock[p]:,}'}"
                     for p in names)


def lottery_checks(results: dict[str, Any]) -> str:
    """The lottery invariants of both systems and the prizes they gave, as one sentence."""
    def said(inv: dict[str, Any] | None) -> str:
        if inv is None:
            return "not checked"
        return (f"oversold {inv['oversold']}, stock ≠ initial − wins"
                f" {inv['stock_mismatch']}, over the daily limit {inv['over_limit']},"
                f" acked-but-not-committed {inv['lost_acks']} ({inv['acked']:,} acked draws,"
                f" {inv['draws']:,} committed; won/stock: {_won(inv)})")
    return (f"Postgres after the lottery runs — Fission: {said(results.get('lottery_invariants'))};"
            f" mall: {said(results.get('mall_lottery_invariants'))}.")


def paid_orders_line(inv: dict[str, Any], mall: dict[str, Any]) -> list[str]:
    """Payment in the loop, as a paragraph: Fission's paid members against their orders and
    payments (once the outbox drained), the mall's members against its orders."""
    if "paid_members" not in inv and "orders" not in mall:
        return []
    def n(found: dict[str, Any], key: str) -> str:
        value = found.get(key)
        return "–" if value is None else f"{value:,}"
    return ["", f"Payment in the loop — Fission: {n(inv, 'paid_members')} paid members,"
            f" {n(inv, 'orders')} orders, {n(inv, 'payments')} payments; members without an"
            f" order {n(inv, 'members_without_order')}, with more than one"
            f" {n(inv, 'orders_twice')}, orders of no member"
            f" {n(inv, 'orders_without_member')}, |payments − orders|"
            f" {n(inv, 'payments_mismatch')}; mall: {n(mall, 'members')} members,"
            f" {n(mall, 'orders')} orders made in their joins, members without exactly one"
            f" order (or orders of no member) {n(mall, 'orders_mismatch')}."]


def holds_tables(results: dict[str, Any]) -> list[str]:
    """The held seats: how many were pending at once, the lateness of their lapse (the
    owner's timer) and of their release (the provider asked, its answer back, the group
    failed) behind each hold's end, the opens, the machine's load and the checks."""
    h = results.get("holds")
    if not h:
        return []
    rows = [[label, str(h[key]["n"]), _f(h[key]["p50_ms"]), _f(h[key]["p99_ms"]),
             _f(h[key]["max_ms"])]
            for key, label in (("timer", "hold_lapsed − hold_until (the owner's timer)"),
                               ("read", "lapse read by the pipeline − hold_until²"),
                               ("answered", "provider's answer recorded − hold_until²"),
                               ("told", "its word taken by the owner − hold_until²"),
                               ("release", "group_failed − hold_until (released)"))
            if key in h]
    return ["", f"### h. Held seats: expiry of {h['pending_at_once']:,} holds pending at once",
            "", f"{h['opened']:,} users each opened a group over HTTP ({h['concurrency']} opens"
            f" in flight, {_f(h['opens_per_s'])} opens/s, ack p50 {_f(h['open_p50_ms'], 1)} ms,"
            f" p99 {_f(h['open_p99_ms'], 1)} ms), the sandbox paying only on request: each"
            f" leader's seat held {h['hold_seconds']} s, never paid. Lateness is on the owner's"
            " clock (events' `at`), in ms behind each hold's `hold_until`; the release waits"
            " for the provider's word (asked through the outbox) and fails the group.", "",
            *_table(["", "holds", "p50 ms", "p99 ms", "max ms"], rows),
            "", "² the steps between, on Postgres' clock (the same machine's): the end of the"
            " pipeline's work on the hold's `check` outbox row (the question recorded),"
            " the provider's answer recorded with its notice (`provider_checks.answered_at`),"
            " and the notice's `sent_at` (stamped once the owner answered it, so after the"
            " release it caused).",
            "", f"Machine load: {h['load_1m']:.2f} (1-minute load average at the start, this"
            f" bench included); cores busy with other work during it: {h['others_cores']:.2f}.",
            "", holds_checks(h)]


def holds_checks(h: dict[str, Any]) -> str:
    """The held seats' invariants, as one sentence."""
    return (f"Postgres after the holds — {h['holds']:,} holds ({h['acked']:,} acked opens,"
            f" {h['held']:,} answered as held): never lapsed {h['never_lapsed']}, lapsed twice"
            f" {h['lapsed_twice']}, never released {h['unreleased']}, released twice"
            f" {h['released_twice']}, groups still open {h['still_open']}, stock still taken"
            f" {h['stock_taken']}, seats still holding {h['seats_holding']},"
            f" acked-but-not-committed {h['lost_acks']}.")


def boards_tables(results: dict[str, Any]) -> list[str]:
    """The leaderboard on homepage sockets: the lag from a deal's commit to the frame that
    first showed it on each socket, the frames per second per board (on the sockets and
    on the owner's clock), the notices the owner absorbed, the machine's load and the
    checks."""
    b = results.get("boards")
    if not b:
        return []
    lag, sockets, owner, notices = b["lag"], b["on_sockets"], b["owner"], b["notices"]
    rows = [["deal's commit → the board frame showing it, on each socket",
             f"{lag['samples']:,}", _f(lag["p50_ms"]), _f(lag["p99_ms"]), _f(lag["max_ms"])],
            ["deal's commit → its orders committed (the pipeline)", f"{b['deals']:,}",
             _f(b["pipeline_lag_p50_ms"]), _f(b["pipeline_lag_p99_ms"]), "–"],
            ["order committed → its notice taken by the board's owner",
             f"{notices['taken']:,}", _f(notices["wait_p50_ms"]), _f(notices["wait_p99_ms"]),
             _f(notices["wait_max_ms"])]]
    storm = b["storm"]
    return ["", f"### i. Leaderboard: {b['sockets']:,} homepage sockets watching one board",
            "", f"Deal pairs paced at {_f(b['offered_deals_per_s'])} deals/s offered:"
            f" {_f(b['deals_per_s'])} deals/s made ({b['deals']:,} deals, {b['orders']:,}"
            f" orders; ack p50 {_f(storm['p50_ms'], 1)} ms, p99 {_f(storm['p99_ms'], 1)} ms),"
            f" every buyer brought in by one of {b['sellers']} sellers, so each deal moves"
            " the board (sales, all time, everyone's top 10). Lag in ms; a sample is a deal"
            " seen by a socket: the frame that first showed its score's arrival minus the"
            " deal's commit statement (Postgres' clock, the machine's).", "",
            *_table(["", "samples", "p50 ms", "p99 ms", "max ms"], rows),
            "", "Board frames per second per board, from the deals' start to the last frame"
            f" ({_f(b.get('frames_seconds', math.nan), 1)} s):"
            f" {_f(sockets['frames_per_s'], 2)} on the sockets (at most"
            f" {sockets['busiest_1s']} first arriving in any 1 s; closest two"
            f" on one socket {_f(sockets['closest_ms'])} ms apart, {sockets['bursts']} times"
            f" three within 1 s on a socket), {_f(owner['frames_per_s'], 2)} on the owner's"
            f" clock (at most {owner['busiest_1s']} in any 1 s, closest two"
            f" {_f(owner['closest_ms'])} ms apart); {sockets['frames_received']:,} frames"
            f" received, {sockets['gaps']} after a gap. Score updates absorbed by the board's"
            f" owner: {_f(notices['taken_per_s'])} notices/s ({notices['taken']:,} taken, over"
            f" the time from the first taken to the last; the most in one second"
            f" {notices['peak_per_s']:,}).",
            "", f"Machine load: {b['load_1m']:.2f} (1-minute load average at the start, this"
            f" bench included); cores busy with other work during it: {b['others_cores']:.2f}.",
            "", boards_checks(b)]


def boards_checks(b: dict[str, Any]) -> str:
    """The leaderboard's invariants, as one sentence."""
    return (f"Checks — against each seller's sales recomputed from Postgres' orders: the"
            f" board's rows {b['scores_mismatch']} sellers off, its read (the rank cache)"
            f" {b['read_mismatch']} off, sockets whose last frame is not the final board"
            f" {b['sockets_stale']} of {b['sockets']:,} (subscribes refused or timed out:"
            f" {b.get('subscribe_failures', 0)}); deals never shown"
            f" {b['units_unshown']}; frames closer than the coalescing window on the owner's"
            f" clock {b['frames_too_close']}; notices never taken {b['notices_unsent']};"
            f" deals without orders {b['deals_without_orders']}; acked-but-not-committed"
            f" {b['lost_acks']} ({b['acked']:,} acked).")


def mix_tables(mix: dict[str, Any] | None) -> list[str]:
    """What the pipeline mix did beside its deals, and its ledger checks."""
    if not mix:
        return []
    refunds = mix["refunds"]
    rows = [[who, str(refunds.get(who, {}).get("pieces", 0)),
             f"{refunds.get(who, {}).get('fen', 0):,}"] for who in ("buyer", "after_sales")]
    inv = mix["invariants"]
    return ["", f"#### The pipeline mix (return window {mix['window_seconds']} s, one order"
                f" in {mix['refund_every']} of each refund kind)", "",
            f"Grade changes at settlement: {mix['grade_changes']} {mix['grades_reached']};"
            f" orders partly refunded {mix['orders_partly_refunded']}, refunded whole"
            f" {mix['orders_refunded_whole']}; debt incurred {mix['debt_incurred_fen']:,}"
            f" fen, repaid {mix['debt_repaid_fen']:,}, {mix['users_in_debt']} users owing"
            f" {mix['debt_owed_fen']:,} fen at the end; {mix['withdrawals']} withdrawals"
            f" ({mix['withdrawn_fen']:,} fen).", "",
            *_table(["refunds by", "pieces", "fen"], rows), "",
            "Checks: " + ", ".join(f"{k} {inv.get(k)}" for k in
                                   ("unbalanced", "below_zero", "debt_above_zero",
                                    "reversal_mismatch", "refunded_mismatch",
                                    "audit_problems")) + "."]


def render(results: dict[str, Any]) -> str:
    """Every table, as Markdown, with the ratios the targets are stated in."""
    out: list[str] = []
    if results["storm"]:
        out += _storm_tables(results)
    if results.get("sweep"):
        out += _sweep_table(results["sweep"])
    inv, mall_inv = results["invariants"], results.get("mall_invariants", {})
    out.append("")
    out.append(f"Postgres after the run — Fission: over-full groups {inv['overfull']},"
               f" oversold {inv['oversold']}, acked-but-not-committed {inv['lost_acks']}"
               f" ({inv['acked']} acked, {inv['committed']} committed),"
               f" unbalanced ledger transactions {inv.get('ledger_unbalanced', '–')};"
               f" mall: over-full {mall_inv.get('overfull', '–')},"
               f" oversold {mall_inv.get('oversold', '–')}"
               f" (stock mismatch {mall_inv.get('stock_mismatch', '–')}).")
    out += paid_orders_line(inv, mall_inv)

    fan = results.get("fanout", [])
    if fan:
        out.append("")
        out.append("### d. Fan-out to one hot group topic:"
                   " events delivered/s (latency p50 / p99 ms)")
        out.append("")
        memory = {m["sockets"]: m["rss_per_conn_kb"] for m in results.get("idle_memory", [])}
        rows = []
        for f in fan:
            fis, raw = f["fission"], f["raw"]
            rows.append([
                str(f["sockets"]),
                f"{_f(fis['per_s'])} ({_f(fis['p50_ms'], 0)} / {_f(fis['p99_ms'], 0)})",
                f"{fis['events']}/{fis['expected']}",
                f"{_f(raw['per_s'])} ({_f(raw['p50_ms'], 0)} / {_f(raw['p99_ms'], 0)})",
                f"{_f(100 * ratio(fis['per_s'], raw['per_s']), 0)}%",
                _f(memory.get(f["sockets"], math.nan), 1),
            ])
        out += _table(["sockets", "Fission", "delivered", "raw broadcast", "Fission/raw",
                       "gateway KB / idle socket¹"], rows)
        out.append("")
        out.append("¹ the gateway's RSS growth per socket when that many idle, authenticated"
                   " sockets were open, measured at the start of the run (before the storms"
                   " grow and free its heap).")
        if all("load_1m" in f for f in fan):
            out.append("")
            out.append("Machine load (1-minute load average as each socket count's rounds"
                       " began, this bench included): " + "; ".join(
                           f"{f['sockets']} sockets {f['load_1m']:.2f}" for f in fan))
        paced = [f for f in fan if "fission_paced" in f]
        if paced:
            out.append("")
            out.append("Paced: one group filled by joins one every `interval` ms, so that"
                       " deliveries run at half of the slower burst rate above; the raw"
                       " broadcast sends 51 frames at the same interval, the last 3 at once as"
                       " Fission's last join brings group_completed and deal_completed. Latency"
                       " p50 / p99 ms, from the event's `at` (the shard applied the"
                       " command, before its commit) and from its commit statement:")
            out.append("")
            prow = []
            for f in paced:
                fis, raw = f["fission_paced"], f["raw_paced"]
                prow.append([str(f["sockets"]), _f(fis["interval_ms"], 0),
                             f"{_f(fis['per_s'])} ({_f(fis['p50_ms'], 0)} /"
                             f" {_f(fis['p99_ms'], 0)})",
                             f"{_f(fis.get('commit_p50_ms', math.nan), 0)} /"
                             f" {_f(fis.get('commit_p99_ms', math.nan), 0)}",
                             f"{fis['events']}/{fis['expected']}",
                             f"{_f(raw['per_s'])} ({_f(raw['p50_ms'], 0)} /"
                             f" {_f(raw['p99_ms'], 0)})"])
            out += _table(["sockets", "interval ms", "Fission (from apply)",
                           "Fission from commit", "delivered", "raw broadcast"], prow)
    pipes = [(label, results[key]) for key, label in
             (("pipeline", "join storm (teams of 7, size 5)"),
              ("pipeline_deals", "deal pairs (size 2, one campaign per shard)"),
              ("pipeline_deals_paced", "deal pairs paced at "
               f"{(results.get('pipeline_deals_paced') or {}).get('offered_deals_per_s')}"
               " deals/s"),
              ("pipeline_mix", "the mix (grades, refunds) paced at "
               f"{(results.get('pipeline_mix') or {}).get('offered_deals_per_s')}"
               " deals/s"))
             if results.get(key)]
    ins = results.get("inserts")
    durable = next((i["rows_per_s"] for i in ins or [] if i["durable"]), math.nan)
    if pipes:
        out.append("")
        out.append("### e. Deal → orders, payments and commissions committed (the pipeline)")
        out.append("")
        out.append("Lag is from the deal's commit to the commit of its orders, payments,"
                   " commissions and ledger lines (one transaction). Rows are those written:"
                   " an order and a payment per member, a commission and its ledger line"
                   " per share (plus the shop's line per batch; the deal pairs' members were"
                   " all brought in by someone, so each deal earns three shares; the"
                   " storm's players by nobody). The share"
                   " is of the raw durable batched inserts below, the raw limit of writing"
                   " rows (the pipeline writes what the deals bring, so this is headroom, not"
                   " its ceiling).")
        out.append("")
        out += _table(["while", "deals", "deals/s", "orders/s", "commissions/s", "rows/s",
                       "of raw inserts", "lag p50 ms", "lag p99 ms", "lag max ms",
                       "deals without orders", "drain wait s"],
                      [[label, str(pipe["deals"]), _f(pipe["deals_per_s"]),
                        _f(pipe["orders_per_s"]), _f(pipe.get("commissions_per_s", 0.0)),
                        _f(_rows_per_s(pipe)),
                        f"{_f(100 * ratio(_rows_per_s(pipe), durable), 0)}%",
                        _f(pipe["lag_p50_ms"]),
                        _f(pipe["lag_p99_ms"]), _f(pipe["lag_max_ms"]),
                        str(pipe["deals_without_orders"]), _f(pipe["drain_seconds"], 1)]
                       for label, pipe in pipes])
    out += mix_tables(results.get("pipeline_mix"))
    out += bargain_tables(results)
    out += lottery_tables(results)
    out += holds_tables(results)
    out += boards_tables(results)
    if ins:
        out.append("")
        out.append("### c. Postgres batched inserts (executemany, 100-row batches, 1 connection)")
        out.append("")
        out += _table(["table", "rows/s"],
                      [[("regular (WAL, commit per batch)" if i["durable"] else "temp (no WAL)"),
                        _f(i["rows_per_s"])] for i in ins])
    return "\n".join(out)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """results.json and the chart; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    return json_path, chart(results, out_dir / "latency.png")


def _latency_lines(ax: Any, xs: list[float], points: list[dict[str, Any]], label: str) -> None:
    """A system's p99 (solid) and p50 (dotted, same colour) against `xs`."""
    ax.plot(xs, [r["p99_ms"] for r in points], marker="o", label=f"{label} p99")
    ax.plot(xs, [r["p50_ms"] for r in points], marker=".", linestyle=":",
            color=ax.lines[-1].get_color(), label=f"{label} p50")


def _latency_axes(ax: Any, xlabel: str, title: str) -> None:
    """Log-log axes for latency against a rate."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ack latency ms (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _sweep_chart(ax: Any, sweep: list[dict[str, Any]]) -> None:
    """Ack latency against offered load; a saturated point is marked with an x."""
    for system, label in SYSTEMS.items():
        points = sorted((r for r in sweep if r["system"] == system),
                        key=lambda r: r["offered_ops_per_s"])
        if not points:
            continue
        _latency_lines(ax, [r["offered_ops_per_s"] for r in points], points, label)
        for r in points:
            if r["saturated"]:
                ax.plot([r["offered_ops_per_s"]], [r["p99_ms"]], marker="x", markersize=12,
                        color="black")
                ax.annotate(f"acked {r['ops_per_s']:.0f}/s",
                            (r["offered_ops_per_s"], r["p99_ms"]), fontsize=7,
                            textcoords="offset points", xytext=(-70, -3))
    _latency_axes(ax, "offered commands/s (open loop, log)",
                  "Open loop: ack latency against offered load (x: saturated)")
    rates = sorted({r["offered_ops_per_s"] for r in sweep})
    ax.set_xticks(rates, [f"{r:,}" for r in rates], fontsize=7)
    ax.minorticks_off()


def _storm_chart(ax: Any, storm: list[dict[str, Any]]) -> None:
    """Closed-loop levels: ack latency against the throughput each reached."""
    for system, label in SYSTEMS.items():
        points = sorted((r for r in storm if r["system"] == system), key=lambda r: r["teams"])
        if not points:
            continue
        _latency_lines(ax, [r["ops_per_s"] for r in points], points, label)
        for r in points:
            ax.annotate(str(r["teams"]), (r["ops_per_s"], r["p99_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    _latency_axes(ax, "acked commands/s (log)",
                  "Closed loop: teams of 7 race for 4 places (labels: teams)")


def _fan_chart(ax: Any, fan: list[dict[str, Any]]) -> None:
    """Burst deliveries per second, Fission against the raw broadcast."""
    xs = list(range(len(fan)))
    width = 0.38
    fis = [f["fission"]["per_s"] for f in fan]
    raw = [f["raw"]["per_s"] for f in fan]
    ax.bar([x - width / 2 for x in xs], fis, width, label="Fission")
    ax.bar([x + width / 2 for x in xs], raw, width, label="raw broadcast")
    for x, f in zip(xs, fan, strict=True):
        ax.annotate(f"p99 {f['fission']['p99_ms']:.0f} ms", (x - width / 2, fis[x]),
                    fontsize=7, ha="center", textcoords="offset points", xytext=(0, 3))
        ax.annotate(f"p99 {f['raw']['p99_ms']:.0f} ms", (x + width / 2, raw[x]),
                    fontsize=7, ha="center", textcoords="offset points", xytext=(0, 3))
    ax.set_xticks(xs, [f"{f['sockets']} sockets" for f in fan])
    ax.set_ylabel("events delivered/s")
    ax.set_title("Fan-out of one hot group topic (burst)")
    ax.legend(fontsize=8)


def chart(results: dict[str, Any], path: Path) -> Path:
    """Ack latency against offered load (open loop) and against throughput (closed
    loop) per system, and fan-out rates: a panel for each the run measured, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(draw, data) for draw, data in (
        (_sweep_chart, results.get("sweep", [])), (_storm_chart, results.get("storm", [])),
        (_fan_chart, results.get("fanout", []))) if data]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.3 * max(1, len(panels)), 5.5),
                             squeeze=False)
    for ax, (draw, data) in zip(axes[0], panels, strict=False):
        draw(ax, data)
    fig.suptitle(f"Fission bench ({results['mode']}, {results['machine']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rows_per_s(pipe: dict[str, Any]) -> float:
    """Rows the pipeline wrote per second: an order and a payment per member, a
    commission and its ledger line per share (the shop's line per batch left out)."""
    return float(2 * pipe["orders_per_s"] + 2 * pipe.get("commissions_per_s", 0.0))
