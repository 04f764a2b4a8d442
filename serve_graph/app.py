"""The HTTP interface: ``POST /v1/decisions``, ``GET /healthz``, OpenAPI at ``/docs``.

One FastAPI app serves both the single-process deployment (uvicorn) and Ray Serve's
ingress. Requests are validated against the data contract (422 with field errors), need an
API key (401 otherwise; compared in constant time), and are gathered into micro-batches
(`MicroBatcher`), which the pipeline decides on the event loop, yielding between stages so
that new requests are read meanwhile. Admin operations (reload, promote, rollback) are
not routes of this app: they go through the CLI and the registry file, never the public
endpoint.

Every route needs the key, the schema too: ``/openapi.json`` and ``/docs`` (Swagger UI with
the schema inlined, since a browser cannot add the key header to the schema fetch);
``/redoc`` is not served. Bodies are capped at 16 KiB whether or not the client declares
a length (chunked uploads are counted as they stream). Validation errors name the field
and the rule but do not echo the rejected value back, so a card number or e-mail sent by
mistake is not reflected into client or proxy logs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import pydantic
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feature_views.contract import PaymentAttempt, to_ms
from serve_graph.config import ApiKeys, RegionConfig, client_digests

MAX_BODY_BYTES = 16_384
logger = logging.getLogger(__name__)


class Reason(pydantic.BaseModel):
    kind: str = pydantic.Field(description="policy (a rule or list) or model (SHAP)")
    code: str = pydantic.Field(description="rule id, or the feature name")
    contribution: float | None = pydantic.Field(
        None, description="SHAP contribution to the log-odds of fraud (model reasons)"
    )


class Degraded(pydantic.BaseModel):
    rung: int = pydantic.Field(description="2 stale views, 3 store down, 4 rules only")
    reason: str | None


class Decision(pydantic.BaseModel):
    decision_id: str
    transaction_id: str
    action: str = pydantic.Field(description="approve | step_up | block")
    fraud_probability: float | None
    reasons: list[Reason]
    model_version: str | None
    policy_version: str
    region: str
    degraded: Degraded | None
    latency_ms: float
    trace_id: str | None = None
    idempotent_replay: bool = False


def detached_task(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task:
    """A task that outlives the request that starts it, run outside that request.

    A task inherits the context of the code that creates it, and Ray Serve keeps the
    current request in a context variable: a handle call made from such a task is
    registered as a child of that request and cancelled when the request is. So the
    batcher's workers, started by the first request a replica receives, made every hop of
    every later batch a child of that first request, and the graph's warm-up, started by a
    health check, lost its hops when the checker gave up after 2 s on a busy machine: the
    warm-up ended after the feature hop, with no model version. Work done on behalf of
    many requests belongs to none of them."""
    return loop.create_task(coro, context=contextvars.Context())


# how long a thread that wants the interpreter lock waits before asking its holder to let
# go (Python's default is 5 ms); see `shorten_switch_interval`
SWITCH_INTERVAL_S = 0.001


def shorten_switch_interval() -> None:
    """Let a thread that wants the interpreter lock have it after 1 ms instead of 5.

    A serving process's event loop holds the lock nearly all the time under load, and the
    log's writer thread needs it back after each group commit's fsync to answer the
    batches it made durable: at the default interval each commit could wait 5 ms for it.
    A shorter interval makes that hand-off cheap enough for the fsync to leave the loop
    (`DecisionPipeline.decide_async`); the cost is more frequent lock switches while
    several threads compute, a few microseconds each.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_heap() -> None:
    """Move everything allocated so far (imports, models, Ray's and Serve's state) out of
    the cyclic collector's reach, once the replica is warm.

    Full collections walk every tracked object; with the startup heap in them they paused
    a serving process for tens of milliseconds, a p99 of their own. What is frozen is never
    freed, which is what a server's startup heap is for anyway.
    """
    gc.collect()
    gc.freeze()


class MicroBatcher:
    """Collects concurrent requests into batches of up to `max_batch`, waiting `wait_ms`.

    Under a backlog a batch may take up to `backlog_factor` x `max_batch` requests: they
    have waited already, and one larger batch costs less than several small ones (the
    pipeline sheds a late batch to its cheapest rung). The after-response work (online
    updates, shadow scoring) runs in one background thread that merges whatever batches are
    pending, so it can never pile up threads that compete with the hot path.

    Up to `in_flight` batches run at once: while one waits on Redis or another deployment,
    the next can start, so one slow hop (a SHAP call, say) does not hold every request
    queued behind it. Requests arriving while all slots are busy gather into the next batch.

    Admission (`admit_wait_ms`): shedding a batch only once it has waited too long builds
    that wait into every answer of an overload, and the queue still grows when the late
    batches cost nearly as much as full ones. So while the full path's queue has held a
    request longer than `admit_wait_ms`, new arrivals bypass it: they go to a shed lane
    that decides them at once on rules alone (``run(..., shed=reason)``: no store read, no
    model), in batches of whatever has gathered. The full path keeps working at its own
    pace on what it admitted, and takes new requests again as soon as its queue drains.

    The queue only sees requests the event loop has read. When the loop itself is the
    bottleneck (one process at twice its capacity), arrivals wait unread in the socket
    while the queue looks short: a run measured p99 85 ms in the route and 725 ms at the
    client. So admission also watches the loop's lag -- how late a timer fires, probed
    every few ms while requests arrive (smoothed: a single pause is not an overload) --
    and turns arrivals away while that exceeds `admit_wait_ms` too.

    Only a standing queue turns arrivals away (`admit_interval_ms`, after CoDel): the wait
    must have stayed above `admit_wait_ms` that long, or arrivals must have been turned
    away within the last `resume_within_s` (an overload that paused). A single stall of
    the replica (descheduled, a slow syscall) leaves a backlog that the next batch or two
    clear; turning arrivals away on it degraded decisions at 70% load that the full path
    would have answered well inside the budget (5 of a 15 s hold's 21 degraded decisions,
    all answered in 15 ms). Under a real overload the queue stays long, and shedding
    starts one interval later.
    """

    # after turning arrivals away, a queue over the limit sheds again at once for this long
    resume_within_s = 1.0

    # how often the lag is probed while requests arrive (a timer callback, ~10 us)
    lag_tick_s = 0.005
    # weight of the newest probe in the smoothed lag: a single pause (a collection, a
    # descheduled process) is not an overload; several late ticks in a row are
    lag_weight = 0.25
    # a lag older than this says nothing about the loop now (no arrivals meanwhile)
    lag_horizon_s = 0.1

    def __init__(
        self,
        run: Callable[..., Any],
        after: Callable[[list[dict], list[dict]], None],
        max_batch: int,
        wait_ms: float,
        backlog_factor: int = 4,
        in_flight: int = 2,
        admit_wait_ms: float | None = None,
        admit_interval_ms: float = 0.0,
        on_abandoned: Callable[[int], None] | None = None,
        shed_in_flight: int = 8,
    ) -> None:
        """`on_abandoned(n)`: told of each `n` requests dropped because their client left
        (a replica counts them as a metric). `shed_in_flight`: shed batches decided or
        awaiting durability at once (see `_shed_loop`)."""
        if shed_in_flight < 1:
            raise ValueError("shed_in_flight must be at least 1")
        self.run, self.after = run, after
        self.shed_in_flight = shed_in_flight
        self.on_abandoned = on_abandoned
        # a coroutine `run` decides on the event loop (DecisionPipeline.decide_async); a
        # blocking one in a worker thread (a pipeline with remote stages)
        self._inline = inspect.iscoroutinefunction(run)
        self.in_flight = in_flight
        self._slots: asyncio.Semaphore | None = None
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.backlog_batch = max_batch * backlog_factor
        self.admit_wait_s = None if admit_wait_ms is None else admit_wait_ms / 1000
        self.admit_interval_s = admit_interval_ms / 1000
        self._above_since: float | None = None  # since when the wait has exceeded the limit
        self._turned_away_at = float("-inf")
        self.queue: asyncio.Queue | None = None
        self.shed_queue: asyncio.Queue | None = None
        self._workers: list[asyncio.Task] = []
        self._bound: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[list[dict], list[dict]]] = []
        self._after_running = False
        self._head: float | None = None  # arrival of the request held waiting for a slot
        self._sojourn = 0.0  # how long the last full batch's oldest request had waited
        self._shed_wait = 0.0  # the longest full-path wait that turned requests away
        self._shed_lag = 0.0  # the largest loop lag that did
        self.turned_away = 0
        self.abandoned = 0  # requests whose client left before their batch ran
        self.loop_lag = 0.0  # smoothed seconds a callback waited for the event loop
        self._lag_at = 0.0  # when it was last probed
        self._last_arrival = 0.0
        self._probing = False

    @classmethod
    def for_pipeline(cls, pipeline: Any, in_flight: int = 2) -> MicroBatcher:
        """The batcher in front of a `DecisionPipeline`, with its region's batching and
        admission settings, counting abandoned requests in its metrics: what every
        serving process (the uvicorn app, the fused replica, the graph's ingress) runs."""
        region = pipeline.region
        return cls(
            pipeline.decide_async,
            pipeline.after,
            region.max_batch,
            region.batch_wait_ms,
            in_flight=in_flight,
            admit_wait_ms=region.admit_wait_ms,
            admit_interval_ms=region.admit_interval_ms,
            on_abandoned=lambda n: pipeline.metrics.record_abandoned(n, region.name),
        )

    async def submit(self, record: dict[str, Any], arrived: float, trace: str | None) -> dict:
        loop = asyncio.get_running_loop()
        if self.queue is None or self._bound is not loop:  # a new event loop: rebind
            self._bound = loop
            self.queue, self.shed_queue = asyncio.Queue(), asyncio.Queue()
            self._slots = asyncio.Semaphore(self.in_flight)
            # the old loop's lag says nothing of this one, and its pending probe never fires
            self._probing, self.loop_lag, self._lag_at = False, 0.0, 0.0
            self._workers = [detached_task(loop, w()) for w in (self._loop, self._shed_loop)]
        fut = loop.create_future()
        item = (record, arrived, trace, fut)
        lag = self.current_lag()
        self._probe_lag(loop)
        waited = self.full_path_wait()
        standing = self._standing(waited)
        if standing or (self.admit_wait_s is not None and lag > self.admit_wait_s):
            self.turned_away += 1
            self._turned_away_at = time.monotonic()
            if standing:
                self._shed_wait = max(self._shed_wait, waited)
            else:
                self._shed_lag = max(self._shed_lag, lag)
            await self.shed_queue.put(item)  # type: ignore[union-attr]
        else:
            await self.queue.put(item)
        return await fut

    def _standing(self, waited: float) -> bool:
        """Whether the full path's wait, `waited`, is a standing queue to shed from."""
        if self.admit_wait_s is None or waited <= self.admit_wait_s:
            self._above_since = None
            return False
        now = time.monotonic()
        if self._above_since is None:
            self._above_since = now
        return (
            now - self._above_since >= self.admit_interval_s
            or now - self._turned_away_at < self.resume_within_s
        )

    def _probe_lag(self, loop: asyncio.AbstractEventLoop) -> None:
        """While requests arrive, a timer every `lag_tick_s` notes how late it fires."""
        self._last_arrival = time.monotonic()
        if self._probing:
            return
        self._probing = True
        self._tick(loop, time.monotonic() + self.lag_tick_s)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        def probe() -> None:
            now = time.monotonic()
            weight = self.lag_weight if now - self._lag_at < self.lag_horizon_s else 1.0
            self.loop_lag += weight * (max(0.0, now - due) - self.loop_lag)
            self._lag_at = now
            if now - self._last_arrival < self.lag_horizon_s:
                self._tick(loop, now + self.lag_tick_s)
            else:  # no traffic: no timer either
                self._probing = False

        loop.call_later(max(0.0, due - time.monotonic()), probe)

    def current_lag(self) -> float:
        """The smoothed event-loop lag, or 0 when the last probe is too old to say."""
        if time.monotonic() - self._lag_at > self.lag_horizon_s:
            return 0.0
        return self.loop_lag

    def full_path_wait(self) -> float:
        """Seconds the full path's queue has been holding its oldest request (0 if empty)."""
        if self._head is not None:
            return time.monotonic() - self._head
        if self.queue is not None and not self.queue.empty():
            return self._sojourn  # backed up: as long as the last batch's oldest waited
        return 0.0

    async def _loop(self) -> None:
        assert self.queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            self._head = items[0][1]
            await self._slots.acquire()  # meanwhile, later requests queue into this batch
            self._head = None
            limit = self.backlog_batch if self.queue.qsize() >= self.max_batch else self.max_batch
            deadline = time.monotonic() + self.wait_s
            while len(items) < limit:
                if not self.queue.empty():
                    items.append(self.queue.get_nowait())
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            self._sojourn = time.monotonic() - min(i[1] for i in items)
            loop.create_task(self._full(items))

    async def _shed_loop(self) -> None:
        """Shed batches of everything that gathered meanwhile, up to `shed_in_flight` at a
        time.

        A shed batch holds its slot until its log records are durable, and the writer
        thread's group commit takes one encode, write and fsync of everything pending:
        under an overload, tens of milliseconds. With two slots, arrivals turned away
        queued behind two commits, on the lane meant to answer at once. With more, the
        batches that gathered meanwhile are decided and join the next commit."""
        assert self.shed_queue is not None
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.shed_in_flight)
        while True:
            items = [await self.shed_queue.get()]
            await slots.acquire()
            while len(items) < self.backlog_batch and not self.shed_queue.empty():
                items.append(self.shed_queue.get_nowait())
            if self._shed_wait:
                reason = f"overload: admission ({self._shed_wait * 1000:.0f} ms queued)"
            else:
                reason = f"overload: admission ({self._shed_lag * 1000:.0f} ms event-loop lag)"
            self._shed_wait = self._shed_lag = 0.0
            loop.create_task(self._shed(items, reason, slots))

    async def _shed(self, items: list[tuple], reason: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._process(items, functools.partial(self.run, shed=reason))
        finally:
            slots.release()

    async def _full(self, items: list[tuple]) -> None:
        assert self._slots is not None
        try:
            await self._process(items, self.run)
        finally:
            self._slots.release()

    async def _process(self, items: list[tuple], run: Callable[..., Any]) -> None:
        # A request whose client has gone (Serve cancels the handler on a disconnect, and
        # with it the future it awaits) is not decided: no one would receive the decision.
        # Under an overload deep enough that clients time out, deciding them anyway spent
        # a third of a replica on answers no one read (13,431 decisions logged against
        # 8,823 answered in one 14 s step), which kept the next requests waiting past their
        # own timeouts. Its attempt is not counted either: the checkout's retry, here or in
        # another region, is the attempt that gets decided and counted.
        live = [i for i in items if not i[3].done()]
        gone = len(items) - len(live)
        if gone:
            self.abandoned += gone
            if self.on_abandoned is not None:
                self.on_abandoned(gone)
        if not live:
            return
        items = live
        records = [i[0] for i in items]
        try:
            args = (records, [i[1] for i in items], [i[2] for i in items])
            if self._inline:
                results = await run(*args)
            else:
                results = await asyncio.to_thread(run, *args)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear back
            for *_, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (*_, fut), result in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        self._pending.append((records, results))
        if not self._after_running:
            self._after_running = True
            asyncio.get_running_loop().create_task(self._drain_after())

    async def _drain_after(self) -> None:
        try:
            while self._pending:
                batches, self._pending = self._pending, []
                records = [r for rs, _ in batches for r in rs]
                results = [d for _, ds in batches for d in ds]
                try:
                    await asyncio.to_thread(self.after, records, results)
                except Exception:  # noqa: BLE001 - the responses are out; never stop the loop
                    logger.exception("after-response work failed for %d decisions", len(results))
        finally:
            self._after_running = False


class BodyLimit:
    """ASGI middleware: 413 for bodies over `limit` bytes, declared or streamed (chunked)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse({"detail": f"body larger than {self.limit} bytes"}, 413)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    bad = JSONResponse({"detail": "invalid Content-Length header"}, 400)
                    await bad(scope, receive, send)
                    return
                if int(value) > self.limit:
                    await too_large(scope, receive, send)
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # an HTTPException passes FastAPI's body parsing as is
                    raise HTTPException(413, f"body larger than {self.limit} bytes")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except HTTPException as exc:  # raised by `counted` outside FastAPI's handlers
            if exc.status_code != 413 or started:
                raise
            await too_large(scope, receive, send)


class DecisionsRoute:
    """ASGI: ``POST /v1/decisions`` answered without FastAPI's per-request machinery.

    Under overload a replica is bound by its GIL, and most of that goes to per-request
    HTTP work that no shedding can skip; FastAPI's routing, dependency solving and
    response validation cost ~100 µs a request on top of the ~25 µs of validating the
    attempt. This route does the same steps in the same order, with the same answers
    (tested side by side with the FastAPI route, which stays for the OpenAPI schema and
    as the reference): JSON parse (422 ``JSON decode error``), API key (401), contract
    validation (422 naming the field, never echoing the value), the region's event-time
    window (422), then the decision, serialised through the ``Decision`` model. Every
    other request goes on to FastAPI.
    """

    PATH = "/v1/decisions"

    def __init__(
        self,
        app: ASGIApp,
        decide: Callable[[dict, float, str | None], Any],
        keys: ApiKeys,
        region: Callable[[], RegionConfig | None] | None,
    ) -> None:
        self.app, self.decide, self.keys, self.region = app, decide, keys, region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route(scope) != self.PATH:
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nothing was decided, nothing to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)
        response = await self._answer(body, headers, arrived)
        await response(scope, receive, send)

    async def _answer(self, body: bytes, headers: dict[bytes, bytes], arrived: float) -> Response:
        data: Any = None
        if body:
            data = body
            if _is_json(headers.get(b"content-type")):
                try:
                    data = json.loads(body)
                except json.JSONDecodeError as exc:
                    error = {"loc": ["body", exc.pos], "msg": "JSON decode error"}
                    return JSONResponse({"detail": [error | {"type": "json_invalid"}]}, 422)
                except Exception:  # noqa: BLE001 - not text, too deep...: as FastAPI answers
                    return JSONResponse({"detail": "There was an error parsing the body"}, 400)
        key = headers.get(b"x-api-key")
        if self.keys.client_for(None if key is None else key.decode("latin-1")) is None:
            return JSONResponse({"detail": UNAUTHORISED}, 401)
        if data is None:
            missing = {"loc": ["body"], "msg": "Field required", "type": "missing"}
            return JSONResponse({"detail": [missing]}, 422)
        try:
            # as FastAPI validates a body (from_attributes: the same error for non-objects)
            attempt = PaymentAttempt.model_validate(data, from_attributes=True)
        except pydantic.ValidationError as exc:
            return JSONResponse({"detail": _field_errors(exc.errors(), ("body",))}, 422)
        problem = _event_time_problem(attempt.event_time, self.region() if self.region else None)
        if problem:
            error = {"loc": ["body", "event_time"], "msg": problem, "type": "event_time_window"}
            return JSONResponse({"detail": [error]}, 422)
        trace = headers.get(b"traceparent")
        result = await self.decide(
            attempt.to_record(), arrived, None if trace is None else trace.decode("latin-1")
        )
        return JSONResponse(Decision.model_validate(result).model_dump(mode="json"))


UNAUTHORISED = "missing or unknown API key (header X-API-Key)"


def _route(scope: Scope) -> str:
    """The path within the app (behind a route prefix, as Starlette's router sees it)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _is_json(content_type: bytes | None) -> bool:
    """FastAPI's rule (strict content type): application/json or application/*+json."""
    if not content_type:
        return False
    kind = content_type.decode("latin-1").split(";")[0].strip().lower()
    major, _, minor = kind.partition("/")
    return major == "application" and (minor == "json" or minor.endswith("+json"))


def _field_errors(errors: Any, prefix: tuple = ()) -> list[dict[str, Any]]:
    """Validation errors as the API reports them: where, what, which rule; not the value."""
    return [
        {"loc": [*prefix, *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _event_time_problem(event_time: Any, region: RegionConfig | None) -> str | None:
    """Why `event_time` is outside the region's accepted window, or None.

    The window is the region's (``max_event_future_s``, ``max_event_age_s``) around this
    server's clock; the contract's fixed range has already rejected absurd dates.
    """
    if region is None:
        return None
    skew_s = (to_ms(event_time) or 0) / 1000 - time.time()
    if region.max_event_future_s is not None and skew_s > region.max_event_future_s:
        return (
            f"event_time is {skew_s:.0f} s in the future; region {region.name} accepts at most "
            f"{region.max_event_future_s:.0f} s of clock skew"
        )
    if region.max_event_age_s is not None and -skew_s > region.max_event_age_s:
        return (
            f"event_time is {-skew_s:.0f} s old; region {region.name} accepts attempts at "
            f"most {region.max_event_age_s:.0f} s old"
        )
    return None


def build_app(
    decide: Callable[[dict, float, str | None], Any],
    health: Callable[[], dict[str, Any]],
    title: str = "checkout-risk",
    keys: ApiKeys | None = None,
    region: Callable[[], RegionConfig | None] | None = None,
    lifespan: Any = None,
    fast_route: bool = True,
) -> FastAPI:
    """The public app. `decide(record, arrived, trace)` is awaited per request.

    `region()` returns the serving region's config (its event-time window), or None before
    a replica has one; `lifespan` lets the process close its pipeline on shutdown.
    `fast_route` serves ``POST /v1/decisions`` through :class:`DecisionsRoute`; without
    it, through FastAPI's route (the same answers, at about twice the CPU per request).
    """
    app = FastAPI(
        title=title,
        version="1.0",
        description="Real-time risk decisions for checkout payment attempts.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    api_keys = keys or ApiKeys(client_digests())
    if fast_route:  # inside the body limit, which is added after it (so runs before it)
        app.add_middleware(DecisionsRoute, decide=decide, keys=api_keys, region=region)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="per-client API key")

    # async: a plain def dependency costs a thread-pool hop on every request
    async def client(x_api_key: str | None = Security(key_header)) -> str:  # noqa: B008
        name = api_keys.client_for(x_api_key)
        if name is None:
            raise HTTPException(401, UNAUTHORISED)
        return name

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _field_errors(exc.errors())}, 422)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_client: str = Depends(client)) -> JSONResponse:  # noqa: B008
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_client: str = Depends(client)) -> HTMLResponse:  # noqa: B008
        # the schema is inlined: the browser's fetch of /openapi.json would carry no key
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{title} API",
            swagger_ui_parameters={"spec": app.openapi()},
        )

    @app.post(
        "/v1/decisions",
        response_model=Decision,
        responses={
            401: {"description": "no or unknown API key"},
            413: {"description": "body too large"},
            422: {"description": "the attempt violates the data contract"},
        },
    )
    async def decisions(
        attempt: PaymentAttempt, request: Request, _client: str = Depends(client)
    ) -> Any:  # noqa: B008
        arrived = time.monotonic()
        problem = _event_time_problem(attempt.event_time, region() if region else None)
        if problem:
            raise HTTPException(
                422, [{"loc": ["body", "event_time"], "msg": problem, "type": "event_time_window"}]
            )
        trace = request.headers.get("traceparent")
        return await decide(attempt.to_record(), arrived, trace)

    @app.get("/healthz")
    async def healthz(_client: str = Depends(client)) -> Any:  # noqa: B008
        status = health()
        if inspect.isawaitable(status):  # a replica that warms up on the event loop first
            status = await status
        if status.get("status") == "warming up":
            return JSONResponse(status, 503)
        return status

    return app
