"""Score a large file of (query, document) pairs on Ray Data, writing the scores to Parquet.

The input (Parquet file or folder, or JSON lines) streams through ``map_batches`` into a fixed pool
of reranker actors: each actor loads the model once (one ONNX Runtime session, ``threads`` intra-op
threads) and scores its batches with :meth:`Reranker.score_pairs`. Every input column comes back
unchanged with a ``score`` column added, so an id column ties each score to its row.

Without an address this starts a local Ray instance sized for the pool (and shuts it down after);
with ``ray_address`` (or ``RAY_ADDRESS`` set, as inside ``ray job submit``) it joins an existing
cluster, where every node needs this package installed and the model readable (a Hub id that each
node downloads into its own cache, or a path on shared storage).
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._extras import require
from .errors import InputError, RerankError
from .files import DEFAULT_MODEL

if TYPE_CHECKING:
    import pyarrow  # untyped: its names are Any to mypy, written here for the reader

EXTRA = "ray"
DEFAULT_WORKERS = 2
DEFAULT_ROWS_PER_BATCH = 256
#: A reranker actor whose process dies (the OOM killer, a lost or preempted node) is started again
#: however often that happens: a long job on preemptible nodes must not fail for it.
ACTOR_MAX_RESTARTS = -1
#: A batch whose actor died is sent again, at most this many times: a batch that kills every
#: actor it meets (a poison row, out of memory) then fails the job instead of looping for ever.
#: A Python exception raised while scoring (a non-string column) is the data's fault and is never
#: retried: the job stops with it at once.
ACTOR_MAX_TASK_RETRIES = 3
PARQUET_SUFFIXES = (".parquet", ".pq")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")


class ActorsDiedError(RerankError):
    """A batch's actor process died on it more often than :data:`ACTOR_MAX_TASK_RETRIES` allows."""


@dataclass(frozen=True)
class BatchResult:
    """What :func:`score_file` wrote: the output folder, its row count and the number of actors."""

    output: str
    rows: int
    workers: int


class _RerankActor:
    """One reranker per Ray actor: the model loads once and scores every batch sent to it."""

    def __init__(
        self,
        model: str,
        reranker_options: dict[str, Any],
        query_column: str,
        document_column: str,
        score_column: str,
        instruction: str | None,
        raw: bool,
    ) -> None:
        from .reranker import Reranker

        self.reranker = Reranker.from_pretrained(model, **reranker_options)
        self.query_column = query_column
        self.document_column = document_column
        self.score_column = score_column
        self.instruction = instruction
        self.raw = raw

    def __call__(self, table: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        queries = table.column(self.query_column).to_pylist()
        documents = table.column(self.document_column).to_pylist()
        scores: list[float] = []
        if queries:
            for name, values in ((self.query_column, queries), (self.document_column, documents)):
                bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
                if bad is not None:
                    raise InputError(
                        f"column {name!r} holds a {type(values[bad]).__name__}, not a string: {values[bad]!r}"
                    )
            scores = self.reranker.score_pairs(
                list(zip(queries, documents, strict=True)), instruction=self.instruction, raw=self.raw
            )
        return table.append_column(self.score_column, pa.array(scores, type=pa.float64()))


def detect_format(path: str, input_format: str | None = None) -> str:
    """``parquet`` or ``json`` from ``input_format`` or the path's suffix (a folder is Parquet)."""
    if input_format is not None:
        if input_format not in ("parquet", "json", "jsonl"):
            raise InputError(f"unknown input format {input_format!r}; use parquet or jsonl")
        return "json" if input_format in ("json", "jsonl") else "parquet"
    lower = path.lower().rstrip("/")
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    if lower.endswith(PARQUET_SUFFIXES) or ("://" not in path and Path(path).is_dir()):
        return "parquet"
    raise InputError(f"cannot tell the format of {path!r} from its name: use .parquet or .jsonl, or give the format")


@contextmanager
def ray_instance(address: str | None, *, num_cpus: int, object_store_memory: int | None = None) -> Iterator[ModuleType]:
    """Use the caller's Ray, join ``address``/``RAY_ADDRESS``, or start (and stop) a local one."""
    ray = require("ray", EXTRA, "batch scoring on Ray")
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address)
    else:
        # a throwaway instance of ours: no usage reporting unless the user asked for it
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def score_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    dtype: str = "q8",
    instruction: str | None = None,
    raw: bool = False,
    query_column: str = "query",
    document_column: str = "document",
    score_column: str = "score",
    input_format: str | None = None,
    workers: int = DEFAULT_WORKERS,
    threads: int = 1,
    cpus_per_worker: float | None = None,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    ray_address: str | None = None,
    object_store_memory: int | None = None,
    preserve_order: bool = False,
    overwrite: bool = False,
    reranker_options: dict[str, Any] | None = None,
) -> BatchResult:
    """Score every (query, document) row of ``input`` and write all columns plus ``score_column`` to
    the Parquet folder ``output``.

    Args:
        workers: reranker actors, each with its own ONNX session.
        threads: ONNX Runtime intra-op threads per actor.
        cpus_per_worker: CPUs each actor reserves from Ray (default: ``threads``).
        rows_per_batch: rows per ``map_batches`` batch; blocks are cut to this size so that every
            actor gets work.
        ray_address: an existing cluster (``auto``, ``host:6379``, ``ray://host:10001``); default
            ``RAY_ADDRESS``, else a local instance with ``workers * cpus_per_worker + 1`` CPUs (one
            left for reading and writing).
        preserve_order: write rows in input order (slower: Ray Data keeps blocks in order).
        overwrite: replace an existing output folder instead of refusing.
        reranker_options: more keyword arguments for :meth:`Reranker.from_pretrained` in each actor
            (``max_length``, ``batch_size``, ``max_batch_tokens``, ``device``, ...).

    Returns:
        The output folder, the number of rows written and the number of actors.

    Raises:
        InputError: a bad option, a missing input or column, an existing output without
            ``overwrite``, or a non-string query or document (raised from inside the actors).
        MissingExtraError: ``ray`` or ``pyarrow`` is not installed.
        RerankError: any other error of the library inside an actor, re-raised as itself.
    """
    input, output = os.fspath(input), os.fspath(output)
    for name, value in (("workers", workers), ("threads", threads), ("rows_per_batch", rows_per_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    cpus = float(threads if cpus_per_worker is None else cpus_per_worker)
    if cpus <= 0:
        raise InputError("cpus_per_worker must be positive")
    fmt = detect_format(input, input_format)
    if "://" not in input and not Path(input).exists():
        raise InputError(f"input not found: {input}")
    if "://" not in output and Path(output).exists() and not overwrite:
        raise InputError(f"output {output} already exists (remove it or overwrite it)")
    # Ray's workers do not share the driver's working directory: hand them absolute local paths
    input, output = (p if "://" in p else str(Path(p).resolve()) for p in (input, output))
    model = os.fspath(model)
    if Path(model).exists():
        model = str(Path(model).resolve())
    options = {"dtype": dtype, "threads": threads, **(reranker_options or {})}
    require("pyarrow", EXTRA, "batch scoring on Ray")

    with ray_instance(
        ray_address, num_cpus=math.ceil(workers * cpus) + 1, object_store_memory=object_store_memory
    ) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = preserve_order
        if fmt == "parquet":
            dataset = ray.data.read_parquet(input)
        else:
            dataset = ray.data.read_json(input, lines=True)
        columns = list(dataset.schema().names)
        for column in (query_column, document_column):
            if column not in columns:
                raise InputError(f"input has no column {column!r} (columns: {', '.join(columns)})")
        if score_column in columns:
            raise InputError(f"input already has a column {score_column!r}; choose another score column name")
        _warn_if_short_of_cpus(ray, workers * cpus)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for actor restarts and task retries and warns that
            # ``**ray_remote_args`` goes in 2.64; until it has one, they can only be given this way.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
            scored = _scoring_stage(
                dataset,
                rows_per_batch,
                {
                    "model": model,
                    "reranker_options": options,
                    "query_column": query_column,
                    "document_column": document_column,
                    "score_column": score_column,
                    "instruction": instruction,
                    "raw": raw,
                },
                workers,
                cpus,
            )
        try:
            scored.write_parquet(output, **({"mode": "overwrite"} if overwrite else {}))
        except Exception as exc:  # Ray wraps a worker's error; report the user's error as one line
            cause = _find_cause(exc, RerankError)
            if cause is not None:
                raise type(cause)(*cause.args) from None
            if _actor_died(exc):
                raise ActorsDiedError(
                    f"a reranker actor's process died on the same batch at its first try and its "
                    f"{ACTOR_MAX_TASK_RETRIES} retries (killed, out of memory or its node lost), so the job stopped: "
                    "look for rows that need more memory than an actor has, or a failing node"
                ) from None
            raise
        rows = ray.data.read_parquet(output).count()
    return BatchResult(output=output, rows=rows, workers=workers)


def _scoring_stage(dataset: Any, rows_per_batch: int, actor_kwargs: dict[str, Any], workers: int, cpus: float) -> Any:
    """The ``map_batches`` stage: ``workers`` reranker actors, restarted and retried as chosen above."""
    return dataset.repartition(target_num_rows_per_block=rows_per_batch).map_batches(
        _RerankActor,
        fn_constructor_kwargs=actor_kwargs,
        batch_size=rows_per_batch,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=cpus,
        max_restarts=ACTOR_MAX_RESTARTS,
        max_task_retries=ACTOR_MAX_TASK_RETRIES,
    )


def _actor_died(exc: BaseException) -> bool:
    """Whether Ray's error is an actor's death (its process gone) rather than an exception in our code."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ in ("ActorDiedError", "RayActorError", "ActorUnavailableError"):
            return True
        if "ActorDiedError" in str(current) or "RayActorError" in str(current):
            return True
        inner = getattr(current, "cause", None)
        stack.extend([current.__context__, current.__cause__, inner if isinstance(inner, BaseException) else None])
    return False


def _warn_if_short_of_cpus(ray: ModuleType, needed: float) -> None:
    total = ray.cluster_resources().get("CPU", 0)
    if total < needed + 1:
        print(
            f"qwen3-rerank: warning: the Ray cluster has {total:g} CPUs; {needed:g} for the reranker actors and at "
            "least 1 more for reading and writing are needed, so the job waits until the cluster grows",
            file=sys.stderr,
        )


_WORKER_ERROR = re.compile(r"^qwen3_rerank\.errors\.(\w+): (.+)$", re.MULTILINE)


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The library's own error inside the exceptions Ray wraps around a worker's failure.

    Ray Data re-raises a failed batch as ``UserCodeException`` without the original exception
    object, only its traceback text, so the error is found there when it is not in the chain.
    """
    from . import errors

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind) and type(current).__module__.startswith("qwen3_rerank"):
            return current
        match = _WORKER_ERROR.search(str(current))
        if match and isinstance(getattr(errors, match.group(1), None), type):
            error_class: type[BaseException] = getattr(errors, match.group(1))
            if issubclass(error_class, kind):
                return error_class(match.group(2))
        inner = getattr(current, "cause", None)
        stack.extend([current.__context__, current.__cause__, inner if isinstance(inner, BaseException) else None])
    return None
