"""Ray batch jobs when a reranker actor's process dies (issue 11, item 6).

The fault is injected without a hook in the package: the test replaces ``ray_batch._RerankActor``
with a subclass that SIGKILLs its own process (as the OOM killer or a lost node would end it)
when it is handed row ``N``, once across all actors (an ``O_EXCL`` marker file decides which).
Ray pickles the subclass by value (this module is registered with cloudpickle), so the actors
run it. Ray comes from ``test_batch.local_ray``: a local instance of 3 CPUs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

import test_batch  # noqa: E402
from test_batch import N_ROWS, check_output, pairs_table  # noqa: E402

from qwen3_rerank import ray_batch  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
local_ray = test_batch.local_ray  # the same module-scoped local instance as test_batch's


def dying_actor(marker: Path, starts: Path, kill_at_id: int, *, every_time: bool = False) -> type:
    """A :class:`_RerankActor` that kills its own process when its batch holds ``kill_at_id``.

    Once over the whole job (the first actor to create ``marker``), or on every attempt with
    ``every_time``; each construction appends a line to ``starts``.
    """

    class DyingActor(ray_batch._RerankActor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            with open(starts, "a") as f:
                f.write(f"{os.getpid()}\n")

        def __call__(self, table):
            if kill_at_id in table.column("pair_id").to_pylist():
                try:
                    if not every_time:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    os.kill(os.getpid(), signal.SIGKILL)
                except FileExistsError:
                    pass  # the fault already fired once: score as usual
            return super().__call__(table)

    return DyingActor


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_an_actor_killed_mid_job_is_restarted_and_every_row_comes_back_once(
    tmp_path, tiny_model_dir, reranker, monkeypatch
):
    table = pairs_table()
    pq.write_table(table, tmp_path / "pairs.parquet")
    ids = table.column("pair_id").to_pylist()
    marker, starts = tmp_path / "fired", tmp_path / "starts"
    monkeypatch.setattr(ray_batch, "_RerankActor", dying_actor(marker, starts, ids[N_ROWS // 2]))
    result = ray_batch.score_file(
        tmp_path / "pairs.parquet",
        tmp_path / "scores",
        model=tiny_model_dir,
        dtype="fp32",
        workers=2,
        threads=1,
        rows_per_batch=4,
    )
    assert marker.exists(), "the fault never fired"
    assert result.rows == N_ROWS
    check_output(tmp_path / "scores", table, reranker)  # every id exactly once, with the library's score
    pids = starts.read_text().split()
    assert len(pids) >= 3 and len(set(pids)) == len(pids), pids  # 2 actors + the killed one started again


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_batch_that_kills_every_actor_fails_the_job_after_its_retries(tmp_path, tiny_model_dir, monkeypatch):
    table = pairs_table()
    pq.write_table(table, tmp_path / "pairs.parquet")
    starts = tmp_path / "starts"
    poison = table.column("pair_id").to_pylist()[5]
    monkeypatch.setattr(ray_batch, "_RerankActor", dying_actor(tmp_path / "unused", starts, poison, every_time=True))
    began = time.monotonic()
    with pytest.raises(ray_batch.ActorsDiedError) as failure:
        ray_batch.score_file(
            tmp_path / "pairs.parquet",
            tmp_path / "scores",
            model=tiny_model_dir,
            dtype="fp32",
            workers=2,
            threads=1,
            rows_per_batch=4,
        )
    message = str(failure.value)
    assert "\n" not in message and "died" in message and str(ray_batch.ACTOR_MAX_TASK_RETRIES) in message
    # one first attempt and ACTOR_MAX_TASK_RETRIES retries, each killing an actor that was then restarted
    assert len(starts.read_text().split()) >= 2 + ray_batch.ACTOR_MAX_TASK_RETRIES
    assert time.monotonic() - began < 240
