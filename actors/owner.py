"""The generic owner: hosts the campaigns of every game that hash to one shard.

It knows no game (see games.core): a campaign's game decides and evolves, names the
instance each event changes, its frames, deals and deadlines, and its read-model rows;
the owner keeps idempotency answers, commits, arms deadlines, publishes and rebuilds.

Plain asyncio (no Ray) so it can be driven directly; `actors.hosts` hosts it in a Ray
actor. Commands are applied to the in-memory state at once, with no await in between,
so the state is only ever touched by one command at a time. Their writes accumulate in
the pending batch, which a single committer task writes in one statement while the
next batch accumulates: that is the group commit. A command is answered only after its
batch committed; its live events are published after that, in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from actors import answers, backoff, gcstats, waits
from actors.answers import Answer
from actors.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram
from actors.routing import shard_of
from games.core import Campaign, Game
from games.errors import GameError
from games.registry import GAMES
from storage import db, events, read_models
from storage.clock import Clock, wall
from storage.config import Config
from storage.live import Live, LiveEvent
from storage.ranks import RankCache, entries
from storage.text import clean_token, storable

log = logging.getLogger("fission.shard")

Result = dict[str, Any]
SLOW_COMMIT = 0.1  # seconds: a commit slower than this is logged
FORGET_EVERY = 600.0  # seconds between sweeps of expired idempotency answers
# Seconds between freezes of the grown state (see actors.gcstats). Every second: a
# lottery's owner keeps each draw, ~1,000 a second at half its peak, and at 10 s its full
# collections paused up to 61 ms; at 1 s the paced run saw none.
SETTLE_EVERY = 1.0


_json = answers.compact
_error = answers.error


def stream_of(kind: str, campaign_id: str) -> str:
    """The event stream holding a campaign."""
    return f"{kind}:{campaign_id}"


# A remembered answer: (fingerprint, text, epoch ms, whether the text is a note).
Remembered = tuple[str, str, int, bool]


@dataclass
class _Campaign:
    game: Game[Any, Any, Any, Any]
    config: Campaign
    state: Any
    # Answers by (user, key): the fingerprint of the command answered, the answer as JSON
    # text (or the game's note to render it from, see `Game.note`), and when (epoch ms).
    # Text, not dicts: a day of answers is a large part of the heap, and strings are one
    # object each that the garbage collector never walks. Insertion order is time order,
    # so expiry pops from the front.
    results: OrderedDict[tuple[str, str], Remembered] = field(default_factory=OrderedDict)

    # The game's mutating methods: the commands this campaign takes.
    commands: frozenset[str] = frozenset()

    @property
    def stream(self) -> str:
        return stream_of(self.game.kind, self.config.id)


@dataclass
class _Pending:
    batch: events.Batch = field(default_factory=events.Batch)
    live: list[LiveEvent] = field(default_factory=list)
    answers: list[tuple[asyncio.Future[Answer], Answer]] = field(default_factory=list)
    keyed: list[tuple[_Campaign, tuple[str, str], Remembered, asyncio.Future[Answer]]] = \
        field(default_factory=list)
    commands: int = 0
    # Where each command's writes end in the batch: (events, outbox, results) counts
    # after it, and its answer's future (None for a timer's). Used only to find the
    # command that a commit's data error came from.
    marks: list[tuple[int, int, int, asyncio.Future[Answer] | None]] = field(
        default_factory=list)

    def mark(self, done: asyncio.Future[Answer] | None) -> None:
        """Close the current command's share of the batch."""
        batch = self.batch
        self.marks.append((len(batch.events), len(batch.outbox), len(batch.results), done))


class _GameFailed(Exception):
    """Game code raised something other than a refusal (a bug in the game): the command
    fails alone, with nothing of it queued."""

    def __init__(self, kind: str, command: Any) -> None:
        super().__init__(f"{kind}: {command!r}")


class Owner:
    """Hosts every campaign, of any game, whose id hashes to shard `index`."""

    def __init__(
        self,
        config: Config,
        database_url: str,
        redis_url: str,
        index: int,
        *,
        clock: Clock = wall,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self._database_url = database_url
        self._redis_url = redis_url
        self._clock = clock
        # From the operating system's entropy: games draw secrets from it (a lottery's
        # committed seed, a bargain's cuts), which must not be predictable from outputs.
        self._rng: random.Random = random.SystemRandom()
        self._on_fatal = on_fatal
        self._campaigns: dict[str, _Campaign] = {}
        self._pending = _Pending()
        self._has_pending = asyncio.Event()
        self._inflight: dict[tuple[str, str, str], tuple[str, asyncio.Future[Answer]]] = {}
        self._deadlines: list[tuple[int, str, str]] = []  # (at, campaign, the game's key)
        self._deadline_changed = asyncio.Event()
        self._publish_queue: asyncio.Queue[list[LiveEvent]] = asyncio.Queue()
        # Per ranked campaign, the stream version this owner last brought its rank cache
        # to (None: a write failed, rebuild on the next commit). A cache found at another
        # version was lost or restored from an older snapshot behind the owner's back.
        self._rank_versions: dict[str, int | None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self.batch_sizes = Histogram(BATCH_BUCKETS)  # commands per commit
        self.commands_total = 0
        # Each commit's time (its statements' round trips and the rank cache's mirror).
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self.commit_longest = 0.0

    # --- life -------------------------------------------------------------------------

    async def start(self, *, retry: bool = False) -> None:
        """Connect, rebuild every campaign from Postgres, re-arm deadlines, go live.

        With `retry`, an unreachable Postgres or Redis is waited out with backoff (an owner
        restarted by Ray while the database is down comes up once it is back); without,
        the first failure is final.
        """
        try:
            await backoff.until_started(self._connect_and_load, self._close_connections,
                                        retry=retry, what=f"shard {self.index}")
        except Exception as exc:
            self._failed = exc
            self._ready.set()
            raise
        self._tasks = [
            asyncio.create_task(self._commit_loop()),
            asyncio.create_task(self._timer_loop()),
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._housekeeping_loop()),
        ]
        self.retire_finished()
        gcstats.settle()  # the rebuilt state lives as long as its campaign
        self._ready.set()
        log.info("shard %d ready with %d campaigns", self.index, len(self._campaigns))

    async def _connect_and_load(self) -> None:
        self._campaigns = {}
        self._deadlines = []
        self._pool = await db.create_pool(self._database_url, min_size=1, max_size=3)
        self._redis = aioredis.from_url(self._redis_url)
        await self._redis.ping()
        server = self.config.server
        self._live = Live(self._redis, server.history_size, server.history_ttl_seconds)
        self._ranks = RankCache(self._redis)
        for campaign in self.config.campaigns:
            if shard_of(campaign.id, self.config.ray.shards) == self.index:
                await self._load(campaign)

    async def _close_connections(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()
        client = getattr(self, "_redis", None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _load(self, campaign: Campaign) -> None:
        game = GAMES[campaign.kind]
        stream = stream_of(game.kind, campaign.id)
        version = await events.stream_version(self._pool, stream)
        state = None
        if game.read_model.snapshot:
            rows = await read_models.load(self._pool, game.read_model, campaign.id)
            state = game.rebuild(campaign, rows, version)
            if state is None:
                log.warning("%s: read model disagrees with events; replaying events", stream)
        if state is None:
            state = await self._replay(game, campaign, stream)
        results: OrderedDict[tuple[str, str], Remembered] = OrderedDict()
        for user, key, fingerprint, answer, note, at in await events.load_results(
                self._pool, stream):
            results[(user, key)] = ((fingerprint, note, at, True) if note is not None
                                    else (fingerprint, answer or "", at, False))
        commands = frozenset(m.name for m in game.methods
                             if m.mutating or m.read == "owner")
        self._campaigns[campaign.id] = _Campaign(game, campaign, state, results, commands)
        if game.read_model.ranked is not None:
            if await self._ranks.version(campaign.id) != version:
                # The rank cache is missing or behind the stream: rebuilt from Postgres.
                count = await self._ranks.rebuild(self._pool, game.read_model, campaign.id,
                                                  version)
                log.info("%s: rank cache rebuilt with %d entries", stream, count)
            self._rank_versions[campaign.id] = version
        for at, key in game.deadlines(state):
            heapq.heappush(self._deadlines, (at, campaign.id, key))

    async def _replay(self, game: Game[Any, Any, Any, Any], campaign: Campaign, stream: str
                      ) -> Any:
        state = game.initial(campaign)
        for expected, item in enumerate(await events.load_stream(self._pool, stream), start=1):
            if item.version != expected:
                raise RuntimeError(f"{stream}: event {expected} missing (found {item.version})")
            state = game.evolve(state, game.decode(item.data))
        return state

    async def ready(self) -> dict[str, Any]:
        """Wait until started; a summary of what this shard hosts."""
        await self._ready.wait()
        if self._failed is not None:
            raise RuntimeError(f"shard {self.index} failed to start: {self._failed!r}")
        return {
            "shard": self.index,
            "campaigns": {cid: {"kind": c.game.kind, "version": c.game.version(c.state),
                                **c.game.summary(c.state)}
                          for cid, c in self._campaigns.items()},
            "deadlines": len(self._deadlines),
        }

    async def stop(self) -> None:
        """Finish the pending commit and publishes, then close connections."""
        if self._failed is None and self._tasks:
            await self.flush()
            await self._publish_queue.join()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return  # never started, or stopped already
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_connections()

    async def flush(self) -> None:
        """Return once everything applied so far is committed."""
        # A marker answered by the committer after everything queued before it.
        marker: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.answers.append((marker, '{"ok":true}'))
        self._has_pending.set()
        await marker

    # --- commands ---------------------------------------------------------------------

    async def submit(self, commands: list[dict[str, Any]]) -> list[Result]:
        """Apply a batch of client commands; answers in the same order, once durable."""
        return [json.loads(answer) for answer in await self.submit_json(commands)]

    async def submit_json(self, commands: list[dict[str, Any]]) -> list[Answer]:
        """`submit`, with each answer as its JSON text (what the gateway sends on)."""
        if not self._ready.is_set() or self._failed is not None:
            # Starting (or restarting) owners answer at once; clients retry with their key.
            return [_error("unavailable", "this game is starting; try again") for _ in commands]
        futures = [self._accept(command) for command in commands]
        return list(await asyncio.gather(*futures))

    def _accept(self, command: dict[str, Any]) -> asyncio.Future[Answer]:
        """Apply one command now (no await); a future of its durable answer.

        A command is `{"method", "campaign", "user", "key", "params"}`: a mutating method
        of the campaign's game, with params the gateway checked against its declaration.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Answer] = loop.create_future()
        campaign = self._campaigns.get(str(command.get("campaign")))
        if campaign is None:
            done.set_result(_error("not_found", f"no campaign {command.get('campaign')}"))
            return done
        user, key = command.get("user"), command.get("key")
        method, params = command.get("method"), command.get("params") or {}
        # The gateway checks these already; the owner checks again, because one string
        # Postgres refuses would fail the commit of every command batched with it.
        if not clean_token(user, 64) or (key is not None and not clean_token(key, 128)) \
                or not isinstance(params, dict) or not all(
                    storable(v) and len(v) <= 256 for v in params.values()
                    if isinstance(v, str)):
            done.set_result(_error("invalid_request", "user, key and params must be short "
                                   "UTF-8 texts without control characters"))
            return done
        assert isinstance(user, str)
        if method not in campaign.commands:
            done.set_result(_error("invalid_request", f"unknown method {method}"))
            return done
        game = campaign.game
        try:
            game_command = game.command(str(method), user, params)
        except GameError as exc:
            done.set_result(_json({"ok": False, "error": exc.to_dict()}))
            return done
        # What the key was first used for: the same key for another command is a client
        # bug that must not silently answer with the first command's result.
        fingerprint = f"{method}|{game.fingerprint(game_command)}"
        if key is not None:
            seen: tuple[str, str | asyncio.Future[Answer]] | None = None
            stored = campaign.results.get((user, key))
            if stored is not None:
                seen = stored[0], (self._recall(campaign, stored[1]) if stored[3]
                                   else stored[1])
            else:
                seen = self._inflight.get((campaign.config.id, user, key))
            if seen is not None:
                first, answer = seen
                if first != fingerprint:
                    done.set_result(_error("invalid_request",
                                           "this idempotency key was used for another request"))
                    return done
                if isinstance(answer, asyncio.Future):
                    return answer
                done.set_result(answer)
                return done
        self.commands_total += 1
        try:
            ok, answer, note = self._apply(campaign, game_command)
        except _GameFailed:
            log.exception("shard %d: the game failed on a command", self.index)
            done.set_result(_error("internal", "the game failed to run this command"))
            return done  # nothing queued, nothing remembered: a retry runs it again
        pending = self._pending
        if key is not None:
            self._inflight[(campaign.config.id, user, key)] = (fingerprint, done)
            # A game's note stands for a long answer it can render again (see Game.note):
            # a bargain's help answer carries every helper, so a day of them remembered
            # whole would be O(helpers) bytes each, in Postgres and here.
            stored_as = (f'"answer":{answer}' if note is None else f'"note":{_json(note)}')
            pending.batch.results.append((campaign.stream, user, key,
                                          f'{{"fingerprint":{_json(fingerprint)},'
                                          f'{stored_as}}}'))
            pending.keyed.append((campaign, (user, key),
                                  (fingerprint, answer if note is None else note,
                                   self._clock(), note is not None), done))
        elif not ok:
            done.set_result(answer)  # nothing to make durable
            return done
        pending.answers.append((done, answer))
        pending.mark(done)
        pending.commands += 1
        self._has_pending.set()
        return done

    def _recall(self, campaign: _Campaign, note: str) -> Answer:
        """A remembered answer again, from the game's note."""
        try:
            return answers.ok_text(campaign.game.recall(campaign.config, campaign.state, note))
        except Exception:
            # Nothing the state still holds answers to it (it cannot happen while the
            # game keeps its instances for the retention, see retire_finished).
            log.exception("shard %d: no answer to recall from note %r", self.index, note)
            return _error("unavailable", "this request's answer cannot be given again")

    def _apply(self, campaign: _Campaign, command: Any) -> tuple[bool, Answer, str | None]:
        """Apply `command` to the campaign and queue its writes; whether it was accepted,
        the answer it earns, and the game's note to remember instead of it (or None)."""
        game, config = campaign.game, campaign.config
        now = self._clock()
        try:
            produced = game.decide(campaign.state, command, now, self._rng)
        except GameError as exc:
            return False, _json({"ok": False, "error": exc.to_dict()}), None
        except Exception as exc:
            raise _GameFailed(game.kind, command) from exc
        if not produced:
            # A read of the owner's state, or a command that changed nothing.
            try:
                text = game.answer(config, campaign.state, command, produced, now)
            except Exception as exc:
                raise _GameFailed(game.kind, command) from exc
            return True, answers.ok_text(text), None
        cid, stream, kind = config.id, campaign.stream, game.kind
        version = game.version(campaign.state)
        state = campaign.state
        stored: list[events.StoredEvent] = []
        outbox: list[events.StoredEvent] = []
        live: list[LiveEvent] = []
        deadlines: list[tuple[int, str]] = []
        changed: dict[str, None] = {}  # instances, in the order they changed
        try:
            # Everything the game computes first, nothing queued yet: game code that fails
            # halfway leaves the batch, the deadlines and the state as they were.
            for event in produced:
                state = game.evolve(state, event)
                version += 1
                applied = game.applied(config, state, event)
                stored.append(events.StoredEvent(stream, version, applied.type, applied.data))
                if applied.outbox is not None:
                    outbox.append(events.StoredEvent(stream, version, applied.outbox.kind, {
                        "campaign": cid, "kind": kind, "at": now,
                        "lines": [{"user": line.user, "sku": line.sku, "amount": line.amount,
                                   "instance": line.instance, "line": line.line,
                                   **({"payment": line.payment} if line.payment else {})}
                                  for line in applied.outbox.lines]}))
                live.extend(LiveEvent(frame.topic, frame.seq, _json(frame.data))
                            for frame in applied.frames)
                if applied.deadline is not None:
                    deadlines.append(applied.deadline)
                deadlines.extend(applied.also)
                changed[applied.instance] = None
            rows = game.rows(config, state, changed)
            answer = answers.ok_text(game.answer(config, state, command, produced, now))
            note = game.note(config, state, command, produced)
        except Exception as exc:
            raise _GameFailed(game.kind, command) from exc
        campaign.state = state
        pending = self._pending
        pending.batch.events += stored
        pending.batch.outbox += outbox
        pending.live += live
        for at, key in deadlines:
            self._arm(at, cid, key)
        model = game.read_model
        for row in rows:
            pending.batch.rows[(model.table, cid, row[1])] = (model, row)
        self._has_pending.set()
        return True, answer, note

    # --- group commit -------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            self._has_pending.clear()
            pending, self._pending = self._pending, _Pending()
            if not pending.batch:
                for future, result in pending.answers:
                    future.set_result(result)
                continue
            started = time.perf_counter()
            refused: set[asyncio.Future[Answer]] = set()
            try:
                async with self._pool.acquire() as conn:
                    try:
                        await events.commit(conn, pending.batch)
                    except asyncpg.DataError:
                        log.exception("shard %d: a command's data was refused; finding it",
                                      self.index)
                        refused = await self._commit_apart(conn, pending)
            except Exception as exc:
                # The in-memory state is now ahead of Postgres: refuse everything and let
                # the owner restart us so we rebuild from what was really committed.
                log.exception("commit failed; shard %d must restart", self.index)
                self._failed = exc
                failure = _error("unavailable", "the game could not be saved; try again")
                for future, _ in pending.answers:
                    if not future.done():
                        future.set_result(failure)
                if self._on_fatal is not None:
                    self._on_fatal(exc)
                return
            await self._mirror_ranks(pending.batch)
            took = time.perf_counter() - started
            self.batch_sizes.observe(pending.commands)  # (beside its time: the same count)
            self.commit_seconds.observe(took)
            self.commit_longest = max(self.commit_longest, took)
            if took > SLOW_COMMIT:
                log.warning("shard %d: slow commit, %d commands in %.0f ms", self.index,
                            pending.commands, took * 1000)
            for campaign, key, remembered, done in pending.keyed:
                # A refused command changed nothing: its key is free again. One whose
                # stored answer Postgres refused (but not its events) stays remembered
                # here, so a retry is still answered, not run again.
                if done not in refused:
                    campaign.results[key] = remembered
                self._inflight.pop((campaign.config.id, *key), None)
            refusal = _error("invalid_request", "this request could not be saved")
            for future, result in pending.answers:
                if not future.done():
                    future.set_result(refusal if future in refused else result)
            if pending.live:
                self._publish_queue.put_nowait(pending.live)

    async def _mirror_ranks(self, batch: events.Batch) -> None:
        """Bring the rank cache up to what `batch` committed (ranked read models only),
        before its commands are answered: a read after an answer sees what it did. The
        cache is not the truth: a failed write marks it stale, for the next start to
        rebuild."""
        found: dict[str, list[tuple[tuple[str, ...], str, int, int]]] = {}
        for (_, cid, _), (model, row) in batch.rows.items():
            if model.ranked is not None:
                found.setdefault(cid, []).extend(entries(model, [row]))
        if not found:
            return
        versions: dict[str, int] = {}
        for event in batch.events:
            versions[event.stream] = max(versions.get(event.stream, 0), event.version)
        for cid, changed in found.items():
            campaign = self._campaigns.get(cid)
            version = None if campaign is None else versions.get(campaign.stream)
            if campaign is None or version is None:
                # Rows change only with their stream's events: a row without one is a bug,
                # and the cache, not knowing the version, is left for a rebuild.
                log.warning("shard %d: ranked rows of %s changed without an event; its rank "
                            "cache is rebuilt on its next commit", self.index, cid)
                self._rank_versions[cid] = None
                continue
            model = campaign.game.read_model
            try:
                known = self._rank_versions.get(cid)
                if known is None:
                    await self._ranks.rebuild(self._pool, model, cid, version)
                elif await self._ranks.write(cid, changed, version) != known:
                    # Not the cache this owner wrote (Redis lost it, or came back from an
                    # older snapshot): all of it again, from Postgres.
                    log.warning("shard %d: the rank cache of %s was not as written; "
                                "rebuilding it", self.index, cid)
                    await self._ranks.rebuild(self._pool, model, cid, version)
                self._rank_versions[cid] = version
            except Exception:
                # Rebuilt from Postgres on a later commit (or the next start).
                log.exception("shard %d: the rank cache of %s could not be written",
                              self.index, cid)
                self._rank_versions[cid] = None
                with contextlib.suppress(Exception):
                    await self._ranks.forget(cid)

    async def _commit_apart(self, conn: asyncpg.Connection, pending: _Pending
                            ) -> set[asyncio.Future[Answer]]:
        """Commit `pending` command by command, each behind a savepoint, after the batch
        as a whole hit a data error. Returns the answers to refuse: a command whose
        idempotency answer Postgres refused keeps its events (answered as it was, its
        answer remembered in memory only) or, with none, changed nothing (refused).
        Every other command commits and is answered as usual.

        A command whose events Postgres refuses cannot be taken back from memory, where
        later commands may build on it: that error is raised, and the owner restarts.
        """
        refused: set[asyncio.Future[Answer]] = set()
        batch = pending.batch
        events_at = outbox_at = results_at = 0
        marks = [*pending.marks, (len(batch.events), len(batch.outbox), len(batch.results),
                                  None)]
        async with conn.transaction():
            for events_end, outbox_end, results_end, done in marks:
                writes = events.Batch(events=batch.events[events_at:events_end],
                                      outbox=batch.outbox[outbox_at:outbox_end])
                answer = events.Batch(results=batch.results[results_at:results_end])
                events_at, outbox_at, results_at = events_end, outbox_end, results_end
                if writes.events or writes.outbox:
                    async with conn.transaction():  # a savepoint
                        await events.commit(conn, writes)
                if answer.results:
                    try:
                        async with conn.transaction():
                            await events.commit(conn, answer)
                    except asyncpg.DataError:
                        if done is None:
                            raise  # no command of a client's: not a client's data
                        if not writes.events:
                            refused.add(done)
            await events.commit(conn, events.Batch(rows=batch.rows))
        return refused

    async def _publish_loop(self) -> None:
        while True:
            frames = await self._publish_queue.get()
            try:
                await self._live.publish(frames)
            except Exception:
                # Durable already; a subscriber that misses these resyncs from a snapshot.
                log.exception("publishing %d live events failed", len(frames))
            finally:
                self._publish_queue.task_done()

    # --- idempotency retention ---------------------------------------------------------

    def forget_answers(self) -> int:
        """Drop remembered answers older than the retention; how many were dropped."""
        horizon = self._clock() - events.RESULT_RETENTION_DAYS * 86_400_000
        dropped = 0
        for campaign in self._campaigns.values():
            results = campaign.results
            while results:
                key, (_, _, at, _) = next(iter(results.items()))
                if at >= horizon:
                    break
                del results[key]
                dropped += 1
        return dropped

    def retire_finished(self) -> list[str]:
        """Let each game release what nothing can change any more in its campaigns (an
        ended campaign's closed instances: the API reads them from Postgres), so an
        owner's memory is bounded by its running campaigns, not by their history; the
        campaigns whose state shrank."""
        now = self._clock()
        retired = []
        for cid, campaign in self._campaigns.items():
            released = campaign.game.release(campaign.config, campaign.state, now)
            if released is not campaign.state:
                campaign.state = released
                retired.append(cid)
        if retired:
            log.info("shard %d released finished campaigns %s", self.index, retired)
        return retired

    async def _housekeeping_loop(self) -> None:
        last_forget = time.monotonic()
        while True:
            await asyncio.sleep(SETTLE_EVERY)  # a housekeeping period, not a synchronisation
            gcstats.freeze()  # what these seconds of play added: out of the collector's walk
            if time.monotonic() - last_forget < FORGET_EVERY:
                continue
            last_forget = time.monotonic()
            self.forget_answers()
            self.retire_finished()
            with contextlib.suppress(Exception):  # Postgres down: try again next period
                for campaign in self._campaigns.values():
                    await events.forget_results(self._pool, campaign.stream)

    # --- deadlines ----------------------------------------------------------------------

    def _arm(self, at: int, campaign_id: str, key: str) -> None:
        first = self._deadlines[0][0] if self._deadlines else None
        heapq.heappush(self._deadlines, (at, campaign_id, key))
        if first is None or at < first:
            self._deadline_changed.set()

    async def _timer_loop(self) -> None:
        while True:
            if not self._deadlines:
                await self._deadline_changed.wait()
                self._deadline_changed.clear()
                continue
            delay = (self._deadlines[0][0] - self._clock()) / 1000
            if delay > 0:
                await waits.wait_set(self._deadline_changed, delay)
                self._deadline_changed.clear()
                continue
            self._expire_due()

    def _expire_due(self) -> int:
        now = self._clock()
        count = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, campaign_id, key = heapq.heappop(self._deadlines)
            campaign = self._campaigns.get(campaign_id)
            if campaign is None:
                continue
            # Deadlines that passed meanwhile (a group completed) are dropped here,
            # lazily: the game's tick is a no-op for them.
            game = campaign.game
            version = game.version(campaign.state)
            try:
                self._apply(campaign, game.tick(key))
            except _GameFailed:
                log.exception("shard %d: the game failed on deadline %s", self.index, key)
                continue  # this deadline is dropped; the others still fire
            self._pending.mark(None)
            if game.version(campaign.state) != version:
                count += 1
        return count

    async def expire_due(self) -> int:
        """Send every due deadline's tick, durably; how many changed something.

        The timer task does this on its own; callers with their own clock use it directly.
        """
        await self._ready.wait()
        count = self._expire_due()
        await self.flush()
        return count

    # --- introspection --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics."""
        return {
            "shard": self.index,
            "commands_total": self.commands_total,
            "batch_sizes": self.batch_sizes.copy(),
            "commit_seconds": self.commit_seconds.copy(),
            "commit_longest_seconds": self.commit_longest,
            "open_deadlines": len(self._deadlines),
        }

    def instance(self, campaign_id: str, instance_id: str) -> dict[str, Any] | None:
        """An instance (a group, a bargain) as this owner holds it, in the API's view
        (tests compare it with Postgres's)."""
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return None
        game = campaign.game
        try:
            [row] = game.rows(campaign.config, campaign.state, [instance_id])
        except KeyError:
            return None
        names = [column.name for column in game.read_model.columns]
        return game.view(dict(zip(names, row, strict=True)))
