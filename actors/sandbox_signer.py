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
thread of its own. The gateway
still verifies every notification it is handed, as the notify route verifies WeChat's
(`actors.paynotify`): the server's side of the exchange stays in the server.

A frame is a 4-byte big-endian length and a pickle; both ends are this module, started
by the gateway with its own interpreter, so nothing else ever writes to the pipe. The
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
# What a gateway runs as its signing process.
COMMAND = (sys.executable, "-m", "actors.sandbox_signer")


class SignerDown(RuntimeError):
    """The signing process ended (or could not start) before answering."""


def _frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class _Child:
    """One signing process: frames written to its stdin, answered in order on stdout."""

    def __init__(self, keys: tuple[bytes, bytes, str, str], command: Sequence[str],
                 clock: Callable[[], float]) -> None:
        self._keys = keys
        self._command = tuple(command)
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()
        # The futures of each frame written and not yet answered, oldest first.
        self._sent: deque[list[asyncio.Future[Signed]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self.closed = False
        # A process that cannot start, or ends before its first answer, would otherwise
        # be started again at every ask (a join storm spawning interpreters): after such
        # a failure none starts before `_not_before` (the clock's seconds), a pause that
        # doubles with each failure in a row, up to backoff.LONGEST_DELAY.
        self._failures = 0
        self._not_before = 0.0
        self.starts = 0  # processes started so far

    @property
    def pending(self) -> int:
        """Asks written to it and not yet answered."""
        return sum(len(futures) for futures in self._sent)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The running process (None: not started, or ended)."""
        return self._process

    async def start(self) -> None:
        """Start the process unless it runs, or is pausing after failures to start (then
        it stays down: see `_failed`)."""
        async with self._starting:
            if self._process is not None or self.closed or self._clock() < self._not_before:
                return
            self.starts += 1
            try:
                # A session of its own: a terminal's Ctrl-C is the gateway's to act on.
                process = await asyncio.create_subprocess_exec(
                    *self._command,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    start_new_session=True)
            except OSError as exc:  # out of processes or descriptors: this ask fails
                self._failed()
                raise SignerDown(f"the sandbox's signer could not start: {exc}") from exc
            if self.closed:  # closed while it started
                process.kill()
                await process.wait()
                return
            assert process.stdin is not None
            process.stdin.write(_frame(self._keys))
            self._process = process
            self._reader = asyncio.create_task(self._read(process))

    def _failed(self) -> float:
        """Count a failure to start (or to answer once started); the pause it sets."""
        delay = min(backoff.FIRST_DELAY * 2.0 ** self._failures, backoff.LONGEST_DELAY)
        self._failures = min(self._failures + 1, 16)  # the pause is at its longest by then
        self._not_before = self._clock() + delay
        return delay

    def holds(self, future: asyncio.Future[Signed]) -> bool:
        """Whether `future`'s ask was written to this process and not yet answered."""
        return any(future in futures for futures in self._sent)

    def kill(self) -> None:
        """Kill the process (its reader then fails what it held)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def send(self, asks: list[tuple[PaidAsk, asyncio.Future[Signed]]]) -> None:
        """Write one frame of asks (they fail at once if the process is not running)."""
        futures = [future for _, future in asks]
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            _fail(futures, SignerDown("the sandbox's signer ended"))
            return
        self._sent.append(futures)
        process.stdin.write(_frame([ask for ask, _ in asks]))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """The process's answers, a frame per frame written, handed to their askers."""
        assert process.stdout is not None
        answered = False
        try:
            while True:
                length = _LENGTH.unpack(await process.stdout.readexactly(_LENGTH.size))[0]
                answers: list[tuple[bool, Any]] = pickle.loads(
                    await process.stdout.readexactly(length))
                if not answered:
                    answered, self._failures = True, 0
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
            self._process = None  # nothing more is written to it
            if not self.closed and answered:
                log.warning("a sandbox signer ended (exit %s); started again at the next ask",
                            process.returncode)
            elif not self.closed:
                pause = self._failed()
                log.warning("a sandbox signer ended (exit %s) before its first answer;"
                            " started again in %.1f s at the earliest", process.returncode,
                            pause)
            while self._sent:
                _fail(self._sent.popleft(), SignerDown("the sandbox's signer ended"))
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

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
                self.kill()
                await reader


class SandboxSigner:
    """The gateway's side: `render_paid` asks the children, a frame per turn of the loop.

    `signer` gives the keys the children sign with (the sandbox's, as stored in Postgres);
    `processes` children (one per core by default, at most 4) split each turn's asks
    between them, and each is started at the first ask and again after it ended (after a
    pause if it ended before answering anything: meanwhile asks go to the others, or fail
    as `SignerDown` if none runs). `command` is the child's (tests give one that fails),
    `clock` the monotonic seconds the pauses are measured in.
    """

    def __init__(self, signer: SandboxGateway, processes: int | None = None, *,
                 ask_seconds: float = ASK_SECONDS, command: Sequence[str] = COMMAND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        keys = (signer.key_pem(), signer.api_v3_key, signer.appid, signer.mchid)
        count = processes if processes is not None else min(4, os.cpu_count() or 1)
        self._children = [_Child(keys, command, clock) for _ in range(max(1, count))]
        # Asks of this turn of the loop, not yet written.
        self._asks: list[tuple[PaidAsk, asyncio.Future[Signed]]] = []
        self._closed = False
        self._ask_seconds = ask_seconds
        # Frames written so far (each turn's asks make one per child they go to).
        self.frames = 0

    @property
    def processes(self) -> list[asyncio.subprocess.Process]:
        """The children running now."""
        return [c.process for c in self._children if c.process is not None]

    @property
    def starts(self) -> int:
        """Child processes started so far."""
        return sum(child.starts for child in self._children)

    async def render_paid(self, ask: PaidAsk) -> Signed:
        """The headers and body of `ask`'s notification, signed by the sandbox's key."""
        if self._closed:
            raise SignerDown("the sandbox's signer is closed")
        failed: SignerDown | None = None
        for child in self._children:
            if child.process is None:
                try:
                    await child.start()
                except SignerDown as exc:  # the others may still sign it
                    failed = exc
        if self._closed:  # closed while a child started
            raise SignerDown("the sandbox's signer is closed")
        if not self.processes:
            raise failed or SignerDown("the sandbox's signer is starting again; try again")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Signed] = loop.create_future()
        if not self._asks:
            loop.call_soon(self._flush)
        self._asks.append((ask, future))
        try:
            async with asyncio.timeout(self._ask_seconds):
                return await future
        except TimeoutError:
            for child in self._children:
                if child.holds(future):
                    log.warning("a sandbox signer did not answer in %g s; killed",
                                self._ask_seconds)
                    child.kill()
            raise SignerDown("the sandbox's signer did not answer") from None

    def _flush(self) -> None:
        """This turn's asks, split between the children (least busy first)."""
        asks, self._asks = self._asks, []
        children = sorted((c for c in self._children if c.process is not None),
                          key=lambda c: c.pending)
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
        not yet sent fail."""
        self._closed = True
        _fail([future for _, future in self._asks], SignerDown("the sandbox's signer closed"))
        self._asks = []
        await asyncio.gather(*(child.close() for child in self._children))


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
