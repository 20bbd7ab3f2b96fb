"""Adaptive micro-batching: concurrent requests to one model become one model call.

Each served model has one :class:`Batcher`. Requests wait in a bounded queue; whenever
a model slot is free (at most ``max_in_flight`` calls run at once, in a thread pool of
that size; only calls known to be cheap run on the event loop), the batcher takes the
oldest request and every queued request whose inputs stack with it (same dtypes and
shapes past the batch dimension), up to ``max_batch_size`` rows, concatenates them
along the first axis, runs the model once and hands each caller exactly its own rows
back.

*Adaptive*: a request arriving at an idle model runs at once, so a lone caller never
waits for company; and when the model's calls are known to be cheap (at most
``inline_max_ms`` for its rows, from the measured cost per row of recent calls), it runs
right there on the event loop: a hop to a worker thread and back costs more than an
8 us onnxruntime call (docs/adr/0021-serving-hot-path.md). Requests then never queue
up, so a cheap model is never batched; an expensive one always goes to the workers, so
the event loop keeps reading requests while it runs. Batches form from what arrives
while a call is running; and once recent batches held more than one request (the model
is under concurrent load), the batcher also holds a batch that is not full for up to
``max_latency_ms`` after its oldest request arrived, to let it fill; for requests that
arrived while a call was running, the wait starts when that call ends, so the callers it
has just answered can join them (without it, callers under a closed loop fall into two
groups whose calls alternate, and each waits for two calls). A request thus waits at
most ``max_latency_ms`` plus the model calls already running before its own call starts.

When the queue holds ``max_queue`` requests, a new one is refused at once with
:class:`QueueFull` (429 with ``Retry-After``): back-pressure instead of unbounded
memory and latency. A batch whose call fails is re-run request by request, so one bad
request fails alone; a model whose outputs do not follow the batch dimension is run
request by request from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput, TooManyRequests

log = logging.getLogger("ghaf.serving")
Array = np.ndarray[Any, Any]
Arrays = dict[str, Array]
Predict = Callable[[Mapping[str, Array]], Mapping[str, Array]]


class QueueFull(TooManyRequests):
    """The model's request queue is full: the caller should retry shortly."""

    code = "queue-full"
    title = "Model queue full"


@dataclass(frozen=True)
class BatchingOptions:
    """How one model's requests are batched (see the module docstring)."""

    max_batch_size: int = 64
    max_latency_ms: float = 2.0
    max_queue: int = 1024
    max_in_flight: int = 1
    inline_max_ms: float = 0.2

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidInput("max_batch_size must be at least 1", field="max_batch_size")
        if self.max_latency_ms < 0:
            raise InvalidInput("max_latency_ms must not be negative", field="max_latency_ms")
        if self.max_queue < 1:
            raise InvalidInput("max_queue must be at least 1", field="max_queue")
        if self.max_in_flight < 1:
            raise InvalidInput("max_in_flight must be at least 1", field="max_in_flight")
        if self.inline_max_ms < 0:
            raise InvalidInput("inline_max_ms must not be negative", field="inline_max_ms")


@dataclass
class _Request:
    inputs: Mapping[str, Array]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Arrays]
    arrived: float


@dataclass
class BatchStats:
    """What the batcher did (tests and, later, metrics read it)."""

    calls: int = 0
    requests: int = 0
    rows: int = 0
    largest: int = 0
    refused: int = 0
    sizes: list[int] = field(default_factory=list)  # rows of the most recent calls

    def record(self, requests: int, rows: int) -> None:
        self.calls += 1
        self.requests += requests
        self.rows += rows
        self.largest = max(self.largest, rows)
        self.sizes.append(rows)
        if len(self.sizes) > 1000:
            del self.sizes[:500]


def _rows(inputs: Mapping[str, Array]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _key(inputs: Mapping[str, Array]) -> tuple[Any, ...]:
    """Requests with equal keys stack along the first axis."""
    return tuple((name, a.dtype.str, a.shape[1:] if a.ndim else None) for name, a in inputs.items())


class Batcher:
    """One model's queue, dispatcher and bounded executor (start it in the event loop
    that will submit to it; stop it before the loop ends)."""

    def __init__(self, predict: Predict, options: BatchingOptions, *, name: str = "model") -> None:
        self._predict = predict
        self.options = options
        self.name = name
        self.stats = BatchStats()
        self.on_batch: Callable[[int], None] | None = None
        """Called with the rows of each model call (the app's batch-size histogram)."""
        self.batchable = True
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._window = options.max_latency_ms / 1000.0
        self._busy_recently = False  # did a recent batch hold more than one request?
        self._freed = 0.0  # when the last call on the workers ended (monotonic)
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._arrived: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # model calls running on the workers
        self._inline_max = options.inline_max_ms / 1000.0
        self._row_cost: float | None = None  # seconds per row, averaged over recent calls

    @property
    def depth(self) -> int:
        """Requests waiting for a model call."""
        return len(self._queue)

    def start(self) -> None:
        if self._dispatcher is not None:
            return
        self._executor = ThreadPoolExecutor(
            max_workers=self.options.max_in_flight, thread_name_prefix=f"ghaf-model-{self.name}"
        )
        self._slots = asyncio.Semaphore(self.options.max_in_flight)
        self._arrived = asyncio.Event()
        self._dispatcher = asyncio.get_running_loop().create_task(
            self._dispatch(), name=f"ghaf-batcher-{self.name}"
        )

    async def stop(self) -> None:
        """Finish the calls that are running, refuse what still waits, free the threads."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(QueueFull("the model is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def predict(self, inputs: Mapping[str, Array]) -> Arrays:
        """The model's outputs for ``inputs`` (first axis = rows), batched with others."""
        if self._dispatcher is None or self._arrived is None:
            raise RuntimeError(f"the batcher of {self.name} is not started")
        if len(self._queue) >= self.options.max_queue:
            self.stats.refused += 1
            raise QueueFull(
                f"model {self.name!r} has {len(self._queue)} requests waiting (the limit); "
                "retry shortly",
                retry_after=1,
            )
        rows = _rows(inputs)
        if not self._in_flight and not self._queue and self._cheap(rows):
            return self._run_inline(inputs, 1, rows)  # alone and cheap: no queue, no hop
        loop = asyncio.get_running_loop()
        request = _Request(inputs, rows, _key(inputs), loop.create_future(), time.monotonic())
        self._queue.append(request)
        self._queued_rows += rows
        self._arrived.set()
        return await request.future

    # --- the dispatcher ----------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._slots is not None and self._arrived is not None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            try:
                if self._window and self._busy_recently:
                    await self._fill()
                batch = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self) -> None:
        """Wait, up to the oldest request's deadline, for the batch to fill."""
        assert self._arrived is not None
        # The window opens when the oldest request arrived or, for requests that arrived
        # while the model was busy, when its last call ended: the callers that call
        # answered come back at once, and without the wait for them the requests split
        # into two groups whose calls alternate, each caller waiting for two calls.
        opened = max(self._queue[0].arrived, self._freed) if self._queue else 0.0
        while self._queue and self._queued_rows < self.options.max_batch_size:
            remaining = opened + self._window - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """The oldest live request and the queued ones that stack with it."""
        while self._queue and self._queue[0].future.done():  # its caller went away
            self._queued_rows -= self._queue.popleft().rows
        if not self._queue:
            return []
        first = self._queue.popleft()
        self._queued_rows -= first.rows
        batch, rows = [first], first.rows
        if not self.batchable:
            return batch
        kept: deque[_Request] = deque()
        most = self.options.max_batch_size
        while self._queue and rows < most:
            candidate = self._queue.popleft()
            if candidate.future.done():
                self._queued_rows -= candidate.rows
            elif candidate.key == first.key and rows + candidate.rows <= most:
                self._queued_rows -= candidate.rows
                batch.append(candidate)
                rows += candidate.rows
            else:
                kept.append(candidate)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _execute(self, batch: list[_Request]) -> None:
        assert self._slots is not None
        try:
            self._busy_recently = len(batch) > 1
            if len(batch) == 1:
                await self._run_alone(batch[0])
                return
            try:
                outputs = await self._call(_merge(batch), len(batch))
                parts = _split(outputs, [r.rows for r in batch])
            except _NotBatchable as why:
                log.warning("model %s: %s; running its requests one by one", self.name, why)
                self.batchable = False
                parts = None
            except Exception:
                parts = None  # one request may be the cause: each runs alone below
            if parts is None:
                for request in batch:
                    await self._run_alone(request)
                return
            for request, part in zip(batch, parts, strict=True):
                if not request.future.done():
                    request.future.set_result(part)
        finally:
            self._freed = time.monotonic()
            self._slots.release()

    async def _run_alone(self, request: _Request) -> None:
        if request.future.done():
            return
        try:
            result = await self._call(request.inputs, 1)
        except Exception as error:
            if not request.future.done():
                request.future.set_exception(error)
            return
        if not request.future.done():
            request.future.set_result(result)

    def _cheap(self, rows: int) -> bool:
        """Whether a call of ``rows`` is known to take at most ``inline_max_ms``."""
        return self._row_cost is not None and rows * self._row_cost <= self._inline_max

    def _run_inline(self, inputs: Mapping[str, Array], requests: int, rows: int) -> Arrays:
        """One cheap call on the event loop."""
        started = time.perf_counter()
        outputs = self._predict(inputs)
        self._called(requests, rows, time.perf_counter() - started)
        return dict(outputs)

    async def _call(self, inputs: Mapping[str, Array], requests: int) -> Arrays:
        rows = _rows(inputs)
        if self._cheap(rows):
            return self._run_inline(inputs, requests, rows)
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            outputs, seconds = await loop.run_in_executor(self._executor, self._timed, inputs)
        finally:
            self._in_flight -= 1
        self._called(requests, rows, seconds)
        return dict(outputs)

    def _timed(self, inputs: Mapping[str, Array]) -> tuple[Mapping[str, Array], float]:
        # Timed on the worker, so the estimate is the model's cost, not the hop's.
        started = time.perf_counter()
        outputs = self._predict(inputs)
        return outputs, time.perf_counter() - started

    def _called(self, requests: int, rows: int, seconds: float) -> None:
        """Count one model call and fold its cost into the per-row estimate."""
        self.stats.record(requests, rows)
        if self.on_batch is not None:
            self.on_batch(rows)
        cost = seconds / max(rows, 1)
        previous = self._row_cost
        if previous is None:
            self._row_cost = cost
        else:
            # A call the OS preempted can take 100x its cost: one such sample moves the
            # estimate by at most half, so cheap calls stay inline on a busy machine.
            self._row_cost = previous + (min(cost, 4 * previous) - previous) / 8


class _NotBatchable(Exception):
    pass


def _merge(batch: list[_Request]) -> Arrays:
    names = list(batch[0].inputs)
    return {name: np.concatenate([r.inputs[name] for r in batch]) for name in names}


def _split(outputs: Mapping[str, Array], rows: list[int]) -> list[Arrays]:
    """Each request's rows of every output (views, no copies)."""
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise _NotBatchable(
                f"output {name!r} has shape {list(array.shape)} for {total} input rows"
            )
    bounds = np.cumsum([0, *rows]).tolist()
    return [
        {name: array[bounds[i] : bounds[i + 1]] for name, array in outputs.items()}
        for i in range(len(rows))
    ]
