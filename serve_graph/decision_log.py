"""The immutable decision log: hash-chained JSON-lines segments with group commit.

Every decision is appended — and made durable with ``fsync`` — before its response leaves.
Each record carries the previous record's hash and its own; a sealed segment ends with a
seal line holding its record count and final hash, and the next segment's first record
chains from it. Any edit, deletion, reordering, insertion or truncation breaks the chain
at a nameable place (:func:`verify`).

Group commit: callers hand records to one writer thread, which writes everything queued
since its last flush and fsyncs once for all of them, so durability costs one fsync per
batch instead of per decision.

Each serving replica writes its own stream (a sub-folder); a stream is one chain, held by
one writer at a time (an exclusive ``flock`` on the stream's lock file). A writer killed
mid-write leaves at most a torn final line that was never acknowledged; whoever opens the
stream next (the restarted replica's pipeline adopts abandoned streams of its region) cuts
it off and appends a chained ``recovery`` record saying how many bytes were discarded and
their hash, so the repair itself is evidence.
Identifiers that name people (shopper, card token, device) are replaced by keyed hashes
(HMAC-SHA256) before they reach the log; the key is ``CHECKOUT_RISK_LOG_KEY``.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS = ("shopper_id", "card_id", "device_id")


def log_key() -> bytes:
    """The HMAC key for identifiers; a fixed development key when none is configured."""
    return os.environ.get("CHECKOUT_RISK_LOG_KEY", "dev-only-log-key").encode()


# keyed HMACs with the key already absorbed: copying one costs less than half of keying a
# new one, and every decision hashes three identifiers
_KEYED: dict[bytes, Any] = {}


def keyed_hash(value: str | None, key: bytes | None = None) -> str | None:
    if value is None:
        return None
    key = key or log_key()
    keyed = _KEYED.get(key)
    if keyed is None:
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    h = keyed.copy()
    h.update(value.encode())
    return h.hexdigest()[:32]


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def record_hash(prev_hash: str, seq: int, body: dict[str, Any]) -> str:
    return _hash_of(prev_hash, seq, canonical(body))


def _hash_of(prev_hash: str, seq: int, body_text: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{seq}|{body_text}".encode()).hexdigest()


def _line(seq: int, prev_hash: str, h: str, body_text: str) -> str:
    """``canonical({"seq", "prev", "hash", "record"})`` from the record's canonical text:
    the body, by far the largest part, is serialised once for both the hash and the line
    (keys in sorted order, as ``canonical`` would put them)."""
    return (
        f'{{"hash":{canonical(h)},"prev":{canonical(prev_hash)},'
        f'"record":{body_text},"seq":{canonical(seq)}}}'
    )


class DecisionLog:
    """One append-only stream (one replica's chain) under `directory`."""

    def __init__(
        self, directory: str | Path, segment_records: int = 50_000, max_batch: int = 512
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_records = segment_records
        self.max_batch = max_batch
        self._lock = threading.Condition()
        self._pending: list[tuple[dict[str, Any], _Waiter]] = []
        self._closed = False
        self._lockfile = open(self.dir / ".writer.lock", "a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise StreamBusy(f"{self.dir} is being written by another live writer") from None
        self._io = threading.Lock()  # one writer of the files at a time (commits, seals)
        torn = self._recover()
        self._writer = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._writer.start()
        if torn:
            self.append(
                [
                    {
                        "type": "recovery",
                        "discarded_bytes": len(torn),
                        "discarded_sha256": hashlib.sha256(torn).hexdigest(),
                        "reason": "torn final line after a crash (never acknowledged)",
                    }
                ]
            )

    # ---- opening: continue the chain after a restart ---------------------------------
    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("segment-*.jsonl"))

    def _recover(self) -> bytes:
        """Continue the chain; returns the torn bytes cut off the end (b"" if none)."""
        segments = self._segments()
        self.seq, self.last_hash = 0, GENESIS
        self.segment_no, self.segment_count = 1, 0
        if not segments:
            self._file = open(self.dir / "segment-000001.jsonl", "a", encoding="utf-8")
            return b""
        last = segments[-1]
        data = last.read_bytes()
        torn = b""
        if data and not data.endswith(b"\n"):  # a torn final line from a crash: never acked
            cut = data.rfind(b"\n") + 1
            data, torn = data[:cut], data[cut:]
            with open(last, "r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
        lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        self.segment_no = int(last.stem.split("-")[1])
        if lines and lines[-1].get("seal"):
            self.seq = lines[-2]["seq"] if len(lines) > 1 else self.seq
            self.last_hash = lines[-1]["final_hash"]
            self.segment_no += 1
            self._file = open(
                self.dir / f"segment-{self.segment_no:06d}.jsonl", "a", encoding="utf-8"
            )
            return torn
        records = [x for x in lines if "seq" in x]
        if records:
            self.seq, self.last_hash = records[-1]["seq"], records[-1]["hash"]
        elif len(segments) > 1:
            sealed = [json.loads(x) for x in segments[-2].read_text().splitlines()]
            self.last_hash = sealed[-1]["final_hash"]
            self.seq = sealed[-2]["seq"]
        self.segment_count = len(records)
        self._file = open(last, "a", encoding="utf-8")
        return torn

    # ---- appending ----------------------------------------------------------------------
    def append(self, records: list[dict[str, Any]], timeout: float = 5.0) -> None:
        """Append and wait until durable (blocking; for threads and scripts)."""
        if not records:
            return
        waiter = _Waiter(len(records), threading.Event(), None)
        self._enqueue(records, waiter)
        if not waiter.done.wait(timeout):  # type: ignore[union-attr]
            raise TimeoutError("decision log did not commit in time")
        if waiter.error is not None:  # not durable: the caller must not answer as if it were
            raise waiter.error

    async def append_async(self, records: list[dict[str, Any]]) -> None:
        """Append and await durability (for asyncio servers)."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(len(records), loop.create_future(), loop)
        self._enqueue(records, waiter)
        await waiter.done  # type: ignore[misc]

    def _enqueue(self, records: list[dict[str, Any]], waiter: _Waiter) -> None:
        with self._lock:
            self._pending.extend((rec, waiter) for rec in records)
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed and not self._pending:
                    return
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            try:
                with self._io:
                    self._commit([rec for rec, _ in batch])
                error = None
            except Exception as exc:  # disk full, etc.: every waiter learns of it
                error = exc
            # one wake-up per append call, not per record: a call's records may span
            # commits, and it is answered once the last of them is durable
            for waiter, n in Counter(waiter for _, waiter in batch).items():
                waiter.committed(n, error)

    def _commit(self, records: list[dict[str, Any]]) -> None:
        lines = []
        for body in records:
            self.seq += 1
            text = canonical(body)
            h = _hash_of(self.last_hash, self.seq, text)
            lines.append(_line(self.seq, self.last_hash, h, text))
            self.last_hash = h
            self.segment_count += 1
            if self.segment_count >= self.segment_records:
                self._write(lines)
                lines = []
                self._seal()
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def _seal(self) -> None:
        self._write(
            [
                canonical(
                    {
                        "seal": True,
                        "segment": self.segment_no,
                        "records": self.segment_count,
                        "final_hash": self.last_hash,
                    }
                )
            ]
        )
        self._file.close()
        self.segment_no += 1
        self.segment_count = 0
        self._file = open(self.dir / f"segment-{self.segment_no:06d}.jsonl", "a", encoding="utf-8")

    def seal(self) -> None:
        """Seal the current segment now (rotation, shutdown)."""
        with self._lock:
            while self._pending:
                self._lock.release()
                threading.Event().wait(0.001)
                self._lock.acquire()
        with self._io:  # a batch being committed finishes first
            if self.segment_count:
                self._seal()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._writer.join(timeout=10)
        self._file.close()
        self._lockfile.close()  # releases the stream for the next writer


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return b""
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class StreamBusy(RuntimeError):
    """Another live writer holds this stream."""


def adopt_abandoned(root: str | Path, prefix: str = "") -> list[str]:
    """Repair the streams under `root` (names starting with `prefix`) whose writer is gone.

    A stream whose lock can be taken has no live writer; opening it cuts a torn tail and
    records the repair. Streams held by live writers are left alone. Returns the names of
    the streams that needed a repair.
    """
    repaired = []
    for stream in streams(root) if Path(root).exists() else []:
        if not stream.name.startswith(prefix):
            continue
        segments = sorted(stream.glob("segment-*.jsonl"))
        if not segments or _last_byte(segments[-1]) in (b"", b"\n"):
            continue
        try:
            log = DecisionLog(stream)
        except StreamBusy:
            continue
        log.close()
        repaired.append(stream.name)
    return repaired


class _Waiter:
    """The caller of one append: its record count still to commit, and how to wake it (a
    thread's Event, or a future of its event loop)."""

    __slots__ = ("left", "done", "loop", "error")

    def __init__(
        self,
        left: int,
        done: threading.Event | asyncio.Future,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.left, self.done, self.loop = left, done, loop
        self.error: Exception | None = None

    def committed(self, n: int, error: Exception | None) -> None:
        """`n` of its records were committed (or failed with `error`): wake the caller on
        the first failure, or once all are durable."""
        self.left -= n
        if self.error is not None:
            return  # already answered with an earlier failure
        self.error = error
        if error is None and self.left > 0:
            return  # more to come
        if self.loop is None:
            self.done.set()  # type: ignore[union-attr]
        else:
            self.loop.call_soon_threadsafe(_resolve, self.done, self.error)


def _resolve(fut: asyncio.Future, error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


# ---------------------------------------------------------------------------------------
# verification and lookup
# ---------------------------------------------------------------------------------------


@dataclass
class Problem:
    stream: str
    segment: str
    line: int
    what: str
    decision_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.stream}/{self.segment} line {self.line}"
        who = f" (decision {self.decision_id})" if self.decision_id else ""
        return f"{where}{who}: {self.what}"


@dataclass
class VerifyReport:
    streams: int
    records: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def streams(root: str | Path) -> list[Path]:
    """Every stream folder under `root` (a folder holding segment files), or `root` itself."""
    root = Path(root)
    if list(root.glob("segment-*.jsonl")):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and list(p.glob("segment-*.jsonl")))


def verify(root: str | Path) -> VerifyReport:
    """Walk every chain; name each record that was edited, removed, moved or added."""
    problems: list[Problem] = []
    total = 0
    found = streams(root) if Path(root).exists() else []
    for stream in found:
        prev, expected_seq = GENESIS, 1
        segments = sorted(stream.glob("segment-*.jsonl"))
        for si, segment in enumerate(segments):
            count, sealed = 0, False
            for lineno, text in enumerate(segment.read_text().splitlines(), start=1):
                if not text.strip():
                    continue
                try:
                    line = json.loads(text)
                except json.JSONDecodeError:
                    problems.append(
                        Problem(
                            stream.name,
                            segment.name,
                            lineno,
                            "unreadable line (edited or truncated)",
                        )
                    )
                    continue
                if line.get("seal"):
                    sealed = True
                    if line.get("records") != count or line.get("final_hash") != prev:
                        problems.append(
                            Problem(
                                stream.name,
                                segment.name,
                                lineno,
                                "seal does not match the segment's records "
                                "(records removed, added or edited)",
                            )
                        )
                    continue
                total += 1
                count += 1
                body = line.get("record", {})
                decision = body.get("decision_id") if isinstance(body, dict) else None
                seq = line.get("seq")
                if seq != expected_seq:
                    what = (
                        "record(s) missing before this one"
                        if isinstance(seq, int) and seq > expected_seq
                        else "record out of order or inserted"
                    )
                    problems.append(
                        Problem(
                            stream.name,
                            segment.name,
                            lineno,
                            f"{what}: sequence {seq}, expected {expected_seq}",
                            decision,
                        )
                    )
                if line.get("prev") != prev:
                    problems.append(
                        Problem(
                            stream.name,
                            segment.name,
                            lineno,
                            "does not chain from the previous record",
                            decision,
                        )
                    )
                if record_hash(
                    line.get("prev", ""), seq if isinstance(seq, int) else -1, body
                ) != line.get("hash"):
                    problems.append(
                        Problem(
                            stream.name,
                            segment.name,
                            lineno,
                            "content does not match its hash (edited)",
                            decision,
                        )
                    )
                prev = line.get("hash", "")
                expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
            if si < len(segments) - 1 and not sealed:
                problems.append(
                    Problem(
                        stream.name,
                        segment.name,
                        count,
                        "segment is not sealed but later segments exist (truncated)",
                    )
                )
    return VerifyReport(len(found), total, problems)


def iter_records(root: str | Path) -> Iterator[dict[str, Any]]:
    for stream in streams(root):
        for segment in sorted(stream.glob("segment-*.jsonl")):
            for text in segment.read_text().splitlines():
                if text.strip():
                    line = json.loads(text)
                    if "record" in line:
                        yield line["record"]


def find(root: str | Path, decision_id: str) -> dict[str, Any] | None:
    for rec in iter_records(root):
        if rec.get("decision_id") == decision_id:
            return rec
    return None
