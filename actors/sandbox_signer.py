"""The sandbox's signing in a process of its own, beside the gateway.

With the sandbox paying at once (`sandbox_pays = "immediate"`), every paid join asks the
sandbox for the TRANSACTION.SUCCESS notification WeChat would send (as does each payment
paid on request, `POST /api/sandbox/payments/{id}/pay`): a resource encrypted with
AES-256-GCM and a body signed with RSA-2048. That is the provider's work, done on
WeChat's machines in production, and in the gateway's event loop it was half of the
loop's time in a join storm (an RSA-2048 signature is 0.2–1 ms of CPU by machine). A
thread does not help: OpenSSL lets go of the GIL while it signs, but getting it back
behind a busy loop waits out Python's switch interval, about 5 ms a signature.

So the gateway hands the rendering to child processes (`python -m actors.sandbox_signer`,
one per core, started on first use) over their stdin and stdout: the requests made in
one turn of the event loop go in one frame to each child, a child renders them in order
and answers with one frame, and the loop reads the answers as any other I/O, with no
thread of its own. The gateway still verifies every notification it is handed, as the
notify route verifies WeChat's (`actors.paynotify`): the server's side of the exchange
stays in the server.

A frame is a 4-byte big-endian length and a pickle; both ends are this module, started
by the gateway with its own interpreter, so nothing else ever writes to the pipe. The
gateway's first frame gives the keys, and the child's first says it is ready. The
child ends when its stdin does (the gateway stopped, or was killed), and only then: it
ignores SIGINT and SIGTERM, which are the gateway's to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from actors import backoff, paysign
from actors.paysandbox import PaidAsk, SandboxGateway

log = logging.getLogger("fission.payments")

_LENGTH = struct.Struct(">I")
Signed = tuple[dict[str, str], bytes]
# How long an ask waits for its child (a signature takes a millisecond or two: a child
# this late is stopped or wedged, and is killed), and a closing child for its exit.
ASK_SECONDS = 10.0
CLOSE_SECONDS = 5.0
# What a gateway runs as its signing process, and the first frame it writes (its keys
# loaded, it signs).
COMMAND = (sys.executable, "-m", "actors.sandbox_signer")
READY = "ready"


class SignerDown(RuntimeError):
    """The signing process ended (or could not start) before answering."""


def _frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class _Child:
    """One signing process: frames written to its stdin, answered in order on stdout.

    Its first frame says it is ready (its keys loaded): only then is it sent asks. One
    that ends before that, or cannot be spawned, is not started again before a pause
    (`_failed`); one that ends after it is started again as soon as it is wanted."""

    def __init__(self, keys: tuple[bytes, bytes, str, str], command: Sequence[str],
                 clock: Callable[[], float], changed: Callable[[], None]) -> None:
        self._keys = keys
        self._command = tuple(command)
        self._clock = clock
        self._changed = changed  # told when it becomes ready or ends
        self._process: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()
        self._launching = False  # a start asked for and not yet done
        self._launched_at = 0.0  # the loop's time of the last launch
        self._killed: asyncio.subprocess.Process | None = None  # the last one killed
        self.ready = False
        # The futures of each frame written and not yet answered, oldest first.
        self._sent: deque[list[asyncio.Future[Signed]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self.closed = False
        # A process that cannot start would otherwise be started again at every ask (a
        # join storm spawning interpreters): after such a failure none starts before
        # `_not_before` (the clock's seconds), a pause that doubles with each failure in
        # a row, up to backoff.LONGEST_DELAY.
        self._failures = 0
        self._not_before = 0.0
        self.starts = 0  # processes spawned so far

    @property
    def pending(self) -> int:
        """Asks written to it and not yet answered."""
        return sum(len(futures) for futures in self._sent)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The running process (None: not started, or ended)."""
        return self._process

    @property
    def signing(self) -> bool:
        """Whether it takes asks now: ready, and its stdin still open."""
        process = self._process
        return (self.ready and process is not None and process.stdin is not None
                and not process.stdin.is_closing())

    @property
    def coming(self) -> bool:
        """Whether it is starting (being spawned, or spawned and not yet ready), or
        ending (its stdin closed, its reader not yet done): either way it is soon
        signing or down, and an ask waits to see which."""
        return self._launching or (self._process is not None and not self.signing)

    def coming_since(self, moment: float) -> bool:
        """Whether it has been `coming` since the loop's time `moment` or before."""
        return self.coming and self._launched_at <= moment

    @property
    def startable(self) -> bool:
        """Whether a start would spawn a process now (down, not closed, not pausing)."""
        return (self._process is None and not self._launching and not self.closed
                and self._clock() >= self._not_before)

    def launch(self) -> asyncio.Task[None]:
        """Start the process in a task of its own (`coming` from now on)."""
        self._launching = True
        self._launched_at = asyncio.get_running_loop().time()
        task = asyncio.create_task(self._launch())
        task.add_done_callback(self._launched)  # also if cancelled before it ran
        return task

    def _launched(self, _: asyncio.Task[None]) -> None:
        self._launching = False
        self._changed()

    async def _launch(self) -> None:
        """Spawn the process (`startable` said it may); it is ready when its first frame
        comes. The lock lets `close` wait for a spawn under way."""
        async with self._starting:
            if self.closed:  # closed before this task ran
                return
            try:
                # A session of its own: a terminal's Ctrl-C is the gateway's to act on.
                process = await asyncio.create_subprocess_exec(
                    *self._command,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    start_new_session=True)
            except Exception:  # out of processes or descriptors, or no such command
                log.exception("a sandbox signer could not start; started again in %.1f s"
                              " at the earliest", self._failed())
                return
            self.starts += 1
            if self.closed:  # closed while it started
                process.kill()
                await process.wait()
                return
            assert process.stdin is not None
            process.stdin.write(_frame(self._keys))
            self._process = process
            self._reader = asyncio.create_task(self._read(process))

    def _failed(self) -> float:
        """Count a failure to start; the pause it sets (seconds)."""
        delay = min(backoff.FIRST_DELAY * 2.0 ** self._failures, backoff.LONGEST_DELAY)
        self._failures = min(self._failures + 1, 16)  # the pause is at its longest by then
        self._not_before = self._clock() + delay
        return delay

    def holds(self, future: asyncio.Future[Signed]) -> bool:
        """Whether `future`'s ask was written to this process and not yet answered."""
        return any(future in futures for futures in self._sent)

    def kill(self, why: str) -> None:
        """Kill the process (its reader then fails what it held), logging `why` once
        per process however many asks found it wedged."""
        process = self._process
        if process is not None:
            if self._killed is not process:
                self._killed = process
                log.warning("a sandbox signer %s; killed", why)
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def send(self, asks: list[tuple[PaidAsk, asyncio.Future[Signed]]]) -> None:
        """Write one frame of asks (they fail at once if the process is not signing)."""
        futures = [future for _, future in asks]
        process = self._process
        if not self.signing or process is None or process.stdin is None:
            _fail(futures, SignerDown("the sandbox's signer ended"))
            return
        self._sent.append(futures)
        process.stdin.write(_frame([ask for ask, _ in asks]))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """The process's ready frame, then its answers, a frame per frame written,
        handed to their askers."""
        stdout = process.stdout
        assert stdout is not None

        async def frame() -> Any:
            length = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))[0]
            return pickle.loads(await stdout.readexactly(length))

        was_ready = False
        try:
            if await frame() != READY:
                raise ValueError("the signer's first frame is not its ready frame")
            was_ready = self.ready = True
            self._failures = 0
            self._changed()
            while True:
                answers: list[tuple[bool, Any]] = await frame()
                futures = self._sent.popleft()
                for future, (ok, value) in zip(futures, answers, strict=True):
                    if future.done():  # its asker was cancelled meanwhile
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(SignerDown(f"the sandbox could not sign: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # it ended
        except Exception:  # a frame this module did not write: the child is not trusted
            log.exception("a sandbox signer answered what could not be read")
        finally:
            # Nothing more is written to it; a start from now on spawns another.
            self._process, self.ready = None, False
            pause = None if self.closed or was_ready else self._failed()
            while self._sent:
                _fail(self._sent.popleft(), SignerDown("the sandbox's signer ended"))
            self._changed()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if pause is not None:
                log.warning("a sandbox signer ended (exit %s) before it was ready; started"
                            " again in %.1f s at the earliest", process.returncode, pause)
            elif not self.closed:
                log.warning("a sandbox signer ended (exit %s); started again at the next ask",
                            process.returncode)

    async def close(self) -> None:
        """End the process: its stdin closed, it answers what it was sent and exits (or
        is killed after CLOSE_SECONDS)."""
        self.closed = True
        async with self._starting:  # a start under way finishes (or sees `closed`) first
            process, reader = self._process, self._reader
        if process is not None and process.stdin is not None:
            process.stdin.close()
        if reader is not None:
            _, late = await asyncio.wait({reader}, timeout=CLOSE_SECONDS)
            if late:
                self.kill(f"did not end within {CLOSE_SECONDS:g} s of its stdin closing")
                await reader


class SandboxSigner:
    """The gateway's side: `render_paid` asks the children, a frame per turn of the loop.

    `signer` gives the keys the children sign with (the sandbox's, as stored in Postgres);
    `processes` children (one per core by default, at most 4) split each turn's asks
    between those ready, least busy first. A child is started when an ask finds it down,
    in the background while another signs; an ask waits for one only when none is ready.
    A child that ended before it was ready (it cannot start) is started again only after
    a pause (0.5 s doubling to 5 s while it keeps failing); with none ready and none
    starting, an ask fails at once as `SignerDown`. `command` is the child's (tests give
    one that fails), `clock` the monotonic seconds the pauses are measured in; an ask
    waits `ask_seconds` at most, ready wait included.
    """

    def __init__(self, signer: SandboxGateway, processes: int | None = None, *,
                 ask_seconds: float = ASK_SECONDS, command: Sequence[str] = COMMAND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        keys = (signer.key_pem(), signer.api_v3_key, signer.appid, signer.mchid)
        count = processes if processes is not None else min(4, os.cpu_count() or 1)
        self._children = [_Child(keys, command, clock, self._wake)
                          for _ in range(max(1, count))]
        # Asks of this turn of the loop, not yet written.
        self._asks: list[tuple[PaidAsk, asyncio.Future[Signed]]] = []
        self._closed = False
        self._ask_seconds = ask_seconds
        self._changed = asyncio.Event()  # a child became ready or ended
        self._launches: set[asyncio.Task[None]] = set()
        # Frames written so far (each turn's asks make one per child they go to).
        self.frames = 0

    @property
    def processes(self) -> list[asyncio.subprocess.Process]:
        """The children's processes running now (ready or not)."""
        return [c.process for c in self._children if c.process is not None]

    @property
    def starts(self) -> int:
        """Child processes spawned so far."""
        return sum(child.starts for child in self._children)

    def _wake(self) -> None:
        self._changed.set()

    async def warm(self, within: float = ASK_SECONDS) -> None:
        """Start the children that are down (and not pausing), and wait until none is
        starting: each is ready or ended (one not ready `within` seconds is killed, and
        ends)."""
        began = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(within):
                await self._settled(lambda: False)
        except TimeoutError:
            self._kill_unready(began, within)

    def _launch_missing(self) -> None:
        for child in self._children:
            if child.startable:
                task = child.launch()
                self._launches.add(task)
                task.add_done_callback(self._launches.discard)

    async def _settled(self, enough: Callable[[], bool]) -> bool:
        """Start the children that are down (again after one ended meanwhile) until
        `enough()` (True), or none is starting any more, or the signer closed (False)."""
        while not self._closed:
            self._launch_missing()
            if enough():
                return True
            if not any(c.coming for c in self._children):
                return False
            self._changed.clear()
            await self._changed.wait()
        return False

    def _kill_unready(self, began: float, seconds: float) -> None:
        """Kill the children starting since `began` or before and still not ready after
        `seconds` (a start of just now is left to come)."""
        for child in self._children:
            if child.coming_since(began):
                child.kill(f"was not ready in {seconds:g} s")

    async def render_paid(self, ask: PaidAsk) -> Signed:
        """The headers and body of `ask`'s notification, signed by the sandbox's key."""
        future: asyncio.Future[Signed] | None = None
        began = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._ask_seconds):
                if not await self._settled(lambda: any(c.signing for c in self._children)):
                    raise SignerDown("the sandbox's signer is closed" if self._closed else
                                     "the sandbox's signer is not running; try again")
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                if not self._asks:
                    loop.call_soon(self._flush)
                self._asks.append((ask, future))
                return await future
        except TimeoutError:
            if future is None:  # no child became ready in all that time
                self._kill_unready(began, self._ask_seconds)
            for child in self._children:
                if future is not None and child.holds(future):
                    child.kill(f"did not answer in {self._ask_seconds:g} s")
            raise SignerDown("the sandbox's signer did not answer") from None

    def _flush(self) -> None:
        """This turn's asks, split between the children that sign (least busy first)."""
        asks, self._asks = self._asks, []
        children = sorted((c for c in self._children if c.signing), key=lambda c: c.pending)
        if not children:  # every child ended within this turn
            _fail([future for _, future in asks], SignerDown("the sandbox's signer ended"))
            return
        share = -(-len(asks) // len(children))
        for n, child in enumerate(children):
            part = asks[n * share:(n + 1) * share]
            if part:
                self.frames += 1
                child.send(part)

    async def close(self) -> None:
        """End the children: what they were sent is answered first; asks of this turn
        not yet sent, and asks waiting for a child to be ready, fail; starts under way
        are waited for (and their children killed)."""
        self._closed = True
        self._changed.set()
        _fail([future for _, future in self._asks], SignerDown("the sandbox's signer closed"))
        self._asks = []
        await asyncio.gather(*(child.close() for child in self._children))
        await asyncio.gather(*self._launches, return_exceptions=True)


def _fail(futures: list[asyncio.Future[Signed]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


# --- the child ---------------------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> Any:
    """The next frame's value, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    data = stream.read(_LENGTH.unpack(head)[0])
    return pickle.loads(data)


def _render(gateway: SandboxGateway, ask: PaidAsk) -> tuple[bool, Any]:
    try:
        return True, gateway.render_paid(ask)
    except Exception as exc:  # told to that ask's caller, the others still answered
        return False, repr(exc)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The child's loop: the keys, then frames of asks answered in order until EOF."""
    keys = _read_frame(source)
    if keys is None:
        return
    pem, api_v3_key, appid, mchid = keys
    gateway = SandboxGateway(key=paysign.load_private_key(pem), api_v3_key=api_v3_key,
                             appid=appid, mchid=mchid)
    sink.write(_frame(READY))
    sink.flush()
    while (asks := _read_frame(source)) is not None:
        sink.write(_frame([_render(gateway, ask) for ask in asks]))
        sink.flush()


if __name__ == "__main__":
    # A SIGTERM to the whole service (a cgroup's, as systemd sends), or a Ctrl-C before
    # the session of its own, is for the gateway: it stops gracefully, and its children
    # end with their stdin when it has closed them (or died).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
