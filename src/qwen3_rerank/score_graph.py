"""Where score graphs are kept, and the record that says what each one is.

A score graph (built by :mod:`qwen3_rerank.score_graph_build`: a causal-LM ONNX graph cut down to
the yes/no logits at each row's last position) is kept beside its source when that folder is
writable, else in a cache folder keyed by the source's content; :func:`ensure_score_graph` finds
or builds it and returns a :class:`ScoreGraph` record. Writes are atomic and builders of one folder
take a lock (see the comment block below). This module holds no graph surgery.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .score_graph_build import (
    _UNTAGGED,
    ACTIVATION_MODES,
    DEFAULT_ACTIVATIONS,
    DEFAULT_HEAD,
    FORMAT_VERSION,
    HEAD_MODES,
    OUTPUT,
    SCORE_OUTPUTS,
    SEQ_CLS_OUTPUT,
    ScoreGraphError,
    ScoreGraphNoSpace,
    _build,
    _BuildInfo,
    _check_modes,
    _fsync,
    _is_quantized,
    resolve_activations,
)

__all__ = [
    "ACTIVATION_MODES",
    "CACHE_ENV",
    "DEFAULT_ACTIVATIONS",
    "DEFAULT_HEAD",
    "HEAD_MODES",
    "OUTPUT",
    "SCORE_OUTPUTS",
    "SEQ_CLS_OUTPUT",
    "ScoreGraph",
    "ScoreGraphError",
    "ScoreGraphNoSpace",
    "cached_score_graph",
    "default_cache_dir",
    "ensure_score_graph",
    "file_sha256",
    "resolve_activations",
    "score_graph_path",
    "score_graph_record",
]

if TYPE_CHECKING:
    pass

log = logging.getLogger("qwen3_rerank")

#: A JSON record read back from disk (a sidecar, a cache memo): its keys are checked where read.
Record = dict[str, Any]


class _Stamp(TypedDict):
    """Size and mtime of a file, recorded to tell whether it changed."""

    size: int
    mtime_ns: int


class _SourceHashes(TypedDict):
    """SHA-256 of a source graph file and of each of its weight files (by file name)."""

    source_sha256: str
    data_sha256: dict[str, str]


class _ContentKey(_SourceHashes):
    """What a cache entry is keyed by (:func:`_content_key`); ``key`` names its folder."""

    format_version: int
    yes_no_ids: list[int]
    keep_present: bool
    options: dict[str, str]
    key: str


# -- where score graphs are kept ------------------------------------------------------------------------
#
# Beside the source when its folder is writable (``<stem>.score.onnx``, checked against the source's
# size and mtime, re-hashed when they change), else in a cache folder (``QWEN3_RERANK_CACHE``, by
# default the platform's user cache directory), one entry folder per content key: the SHA-256 of the
# source file and of its weight files, with the options and token ids. A cache entry is self-contained
# (the source's external weights are copied into its own data file), so it never depends on where the
# source lies.
#
# Writes are atomic: a graph is written into a temporary folder next to where it goes, flushed to disk,
# and moved into place with rename; beside the source the record (the ``.json`` sidecar) is written
# last and is the commit marker, in the cache the entry folder appears whole in one rename. Builders of
# one folder take a lock (``flock`` on the folder), so that processes starting together build it once;
# after a bounded wait they build in parallel, which is harmless: every build gives the same files.

#: Environment variable naming the score-graph cache folder.
CACHE_ENV = "QWEN3_RERANK_CACHE"
#: Seconds a builder waits for another process's build of the same folder before building too.
LOCK_WAIT_S = 600.0
_TMP_MARK = ".tmp-"
_CACHE_GRAPH = "score.onnx"


def default_cache_dir() -> Path:
    """The score-graph cache folder: ``$QWEN3_RERANK_CACHE``, else the platform's user cache
    directory for ``qwen3-rerank`` (``~/.cache/qwen3-rerank`` on Linux)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("qwen3-rerank"))


def score_graph_path(source: Path, activations: str = DEFAULT_ACTIVATIONS, head: str = DEFAULT_HEAD) -> Path:
    """Where the score graph of ``source`` is kept beside it; each combination of options has its own file
    (``auto`` is named after what it resolves to, so machines sharing a folder do not fight)."""
    activations = resolve_activations(activations)
    tag = "" if (activations, head) == _UNTAGGED else f"-{activations}-{head}"
    return source.with_name(f"{source.stem}.score{tag}.onnx")


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> _Stamp:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _data_files(source: Path) -> list[Path]:
    return sorted(source.parent.glob(source.name + "_data*"))


def _data_stamps(source: Path) -> dict[str, _Stamp]:
    """Size and mtime of the source's external weight files: the score graph copies rows of them."""
    return {p.name: _stamp(p) for p in _data_files(source)}


def _own_data_size(graph: Path) -> int | None:
    own = graph.with_name(graph.name + "_data")
    return own.stat().st_size if own.is_file() else None


def _record_matches(meta: Record, graph: Path, yes_id: int, no_id: int, activations: str, head: str) -> bool:
    """Whether a record is of this format, these ids and options, and its graph is whole."""
    return (
        meta.get("format_version") == FORMAT_VERSION
        and meta.get("yes_no_ids") == [yes_id, no_id]
        and meta.get("options") == {"activations": activations, "head": head}
        and graph.is_file()
        and meta.get("own_data_size") == _own_data_size(graph)  # the graph's own weight file is whole
    )


def cached_score_graph(
    source: Path, yes_id: int, no_id: int, *, activations: str = DEFAULT_ACTIVATIONS, head: str = DEFAULT_HEAD
) -> Path | None:
    """The score graph beside ``source`` built from exactly this file and these ids, if there is one.

    The key is the source's SHA-256; it is re-hashed only when the file's size or mtime differ
    from the ones recorded with it, so a warm start does not read the whole model.
    """
    activations = resolve_activations(activations)
    if (activations, head) != _UNTAGGED:  # a float source's graph is shared by every option
        shared = _cached_beside(source, yes_id, no_id, *_UNTAGGED)
        if shared is not None and score_graph_record(shared).get("quantized") is False:
            return shared
    return _cached_beside(source, yes_id, no_id, activations, head)


def _cached_beside(source: Path, yes_id: int, no_id: int, activations: str, head: str) -> Path | None:
    """The score graph beside ``source`` for exactly these (resolved) options, if it is current."""
    target = score_graph_path(source, activations, head)
    meta = score_graph_record(target)
    if not meta or not _record_matches(meta, target, yes_id, no_id, activations, head):
        return None
    if meta.get("data_stamps") != _data_stamps(source):
        return None
    if meta.get("source_stamp") != _stamp(source) and meta.get("source_sha256") != file_sha256(source):
        return None
    return target


def _content_key(
    source: Path, cache: Path, yes_id: int, no_id: int, keep_present: bool, activations: str, head: str
) -> _ContentKey:
    """What a cache entry is keyed by: the bytes of the source and of its weight files (never their
    path), the token ids, the options and the format."""
    hashes = _source_hashes(source, cache)
    fields: _ContentKey = {
        "format_version": FORMAT_VERSION,
        "source_sha256": hashes["source_sha256"],
        "data_sha256": hashes["data_sha256"],
        "yes_no_ids": [yes_id, no_id],
        "keep_present": keep_present,
        "options": {"activations": activations, "head": head},
        "key": "",  # set below: the hash of the other fields
    }
    hashed = {name: value for name, value in fields.items() if name != "key"}
    fields["key"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:40]
    return fields


def _source_hashes(source: Path, cache: Path) -> _SourceHashes:
    """SHA-256 of the source and of its weight files, remembered in ``cache/index/``.

    Why remembered: hashing reads the whole model (about 1.8 s per GB on a 2-core machine), and a
    read-only model folder would pay it at every start. The memo is only a shortcut to the hashes:
    it is used while every file's size, mtime, inode and device are the ones it recorded, and the
    entry it leads to is still found by content.
    """
    files = [source, *_data_files(source)]
    stamps: dict[str, list[int]] = {}
    for path in files:
        stat = path.stat()
        stamps[path.name] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]
    real = os.path.realpath(source)
    memo = cache / "index" / (hashlib.sha256(real.encode()).hexdigest()[:40] + ".json")
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        known = {}
    if isinstance(known, dict) and known.get("stamps") == stamps and isinstance(known.get("hashes"), dict):
        memo_hashes = known["hashes"]
        if isinstance(memo_hashes.get("source_sha256"), str) and isinstance(memo_hashes.get("data_sha256"), dict):
            return {"source_sha256": memo_hashes["source_sha256"], "data_sha256": memo_hashes["data_sha256"]}
    hashes: _SourceHashes = {
        "source_sha256": file_sha256(source),
        "data_sha256": {path.name: file_sha256(path) for path in files[1:]},
    }
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_record(memo, {"source": real, "stamps": stamps, "hashes": hashes})
    except OSError:
        pass  # a read-only cache: hash again next time
    return hashes


def _cached_entry(cache: Path, key: _ContentKey, yes_id: int, no_id: int, activations: str, head: str) -> Path | None:
    graph = cache / key["key"] / _CACHE_GRAPH
    meta = score_graph_record(graph)
    if meta and meta.get("key") == key["key"] and _record_matches(meta, graph, yes_id, no_id, activations, head):
        return graph
    return None


def score_graph_record(path: Path) -> Record:
    """What was recorded when the score graph at ``path`` was built (empty if nothing)."""
    try:
        meta = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(meta, dict):
        return {}
    return meta


@dataclass(frozen=True)
class ScoreGraph:
    """A score graph on disk and what a session must know to run it.

    Why a record and not a bare path: how the graph may be run is decided when it is built (the
    builder sees the attention kind and the head), and the session that runs it must obey that.
    Handing the facts over with the path means no caller reads the sidecar again, or forgets to.

    Attributes:
        path: the ``.onnx`` file.
        output: its score output, :data:`OUTPUT` (the yes/no pair of a causal LM) or
            :data:`SEQ_CLS_OUTPUT` (a one-label classifier's yes − no logit).
        max_batch_with_past: most rows in one batch that runs on top of a KV-cache past; 1 when
            the graph has ONNX Runtime's ``GroupQueryAttention`` (it takes several new tokens on
            top of a past for one row only), ``None`` when there is no such limit.
        source_sha256: SHA-256 of the source graph file it was built from.
    """

    path: Path
    output: str = OUTPUT
    max_batch_with_past: int | None = None
    source_sha256: str | None = None

    @classmethod
    def from_record(cls, path: Path) -> ScoreGraph:
        """The record of the score graph at ``path``, from the sidecar written when it was built.

        Raises:
            ScoreGraphError: there is no readable record next to ``path``.
        """
        meta = score_graph_record(path)
        if not meta:
            raise ScoreGraphError(f"{path.name} has no readable score-graph record ({_sidecar(path).name})")
        return cls(
            path=Path(path),
            output=str(meta.get("output", OUTPUT)),
            max_batch_with_past=1 if meta.get("group_query_attention") else None,
            source_sha256=meta.get("source_sha256"),
        )


def ensure_score_graph(
    source: Path,
    yes_id: int,
    no_id: int,
    *,
    keep_present: bool = True,
    activations: str = DEFAULT_ACTIVATIONS,
    head: str = DEFAULT_HEAD,
    cache: str | os.PathLike[str] | None = None,
    into_cache: bool = False,
) -> ScoreGraph:
    """The score graph of ``source``, found where an earlier start left it, or built.

    It is looked for beside ``source``, then in the cache folder. A missing one is built beside
    ``source`` when that folder is writable (as before the cache existed), else in the cache.
    ``activations`` and ``head`` (see :data:`ACTIVATION_MODES`, :data:`HEAD_MODES`) matter only
    for quantised sources; each combination is kept in its own file.

    Args:
        source: the model's ``.onnx`` file.
        yes_id: token id of "yes" (its ``lm_head`` row is kept).
        no_id: token id of "no".
        keep_present: keep the ``present.*`` outputs (the shared-prefix pass reads them).
        activations: how a dynamic-int8 graph's activations are quantised.
        head: which yes/no head a quantised graph scores with.
        cache: the cache folder; default :func:`default_cache_dir`.
        into_cache: look in and build into the cache only, even when the source's folder is
            writable (``qwen3-rerank optimize --cache``: an image whose model folder is mounted
            read-only later).

    Returns:
        The graph's record (path, output kind, batch limit with a past).

    Raises:
        ValueError: an unknown ``activations`` or ``head``.
        ScoreGraphNoSpace: the disk filled up while it was written (nothing is left behind).
        ScoreGraphError: the source cannot be read or has a shape the builder does not know.
        OSError: the graph can be written neither beside the source nor in the cache.
    """
    _check_modes(activations, head)
    activations = resolve_activations(activations)
    source = Path(source)
    cache_dir = Path(cache).expanduser() if cache is not None else default_cache_dir()
    keys: dict[tuple[str, str], _ContentKey] = {}

    def key_of(options: tuple[str, str]) -> _ContentKey:  # hashing reads the model: once per call
        if options not in keys:
            keys[options] = _content_key(source, cache_dir, yes_id, no_id, keep_present, *options)
        return keys[options]

    def find(options: tuple[str, str]) -> Path | None:
        if not into_cache:  # the exact file: the float-source rule below is applied once, here
            beside = _cached_beside(source, yes_id, no_id, *options)
            if beside is not None:
                return beside
        if not cache_dir.is_dir():
            return None
        return _cached_entry(cache_dir, key_of(options), yes_id, no_id, *options)

    if (activations, head) != _UNTAGGED:
        # The options change nothing in a float graph: share the untagged file instead of a copy.
        default = find(_UNTAGGED)
        if (default is not None and score_graph_record(default).get("quantized") is False) or (
            default is None and not _is_quantized(source)
        ):
            activations, head = _UNTAGGED
    options = (activations, head)
    found = find(options)
    if found is not None:
        return ScoreGraph.from_record(found)
    if not into_cache:
        try:
            return ScoreGraph.from_record(
                _build_beside(
                    source, yes_id=yes_id, no_id=no_id, keep_present=keep_present, activations=activations, head=head
                )
            )
        except _NotWritable:
            pass  # a read-only model folder: the cache keeps the fast path
    return ScoreGraph.from_record(
        _build_in_cache(
            source,
            cache_dir,
            key_of(options),
            yes_id=yes_id,
            no_id=no_id,
            keep_present=keep_present,
            activations=activations,
            head=head,
        )
    )


class _NotWritable(Exception):
    """The folder refuses new files (read-only mount, permissions)."""


def _temp_dir(folder: Path, prefix: str) -> Path:
    """A new temporary folder in ``folder`` named ``<prefix>.tmp-<pid>-<random>``.

    Raises:
        _NotWritable: ``folder`` does not take new files.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{_TMP_MARK}{os.getpid()}-", dir=folder))
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _NotWritable(str(folder)) from None
        raise


def _remove_stale_temps(folder: Path, prefix: str) -> None:
    """Remove what builders killed mid-way left in ``folder``: temporary files and folders (named
    ``<prefix>…​.tmp-<pid>-…``) of processes that no longer run, or older than a day. Called with
    the folder's lock held."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        mark = entry.name.find(_TMP_MARK, len(prefix)) if entry.name.startswith(prefix) else -1
        if mark < 0:
            continue
        pid_text = entry.name[mark + len(_TMP_MARK) :].split("-", 1)[0]
        try:
            old = time.time() - entry.lstat().st_mtime > 86400
        except OSError:
            continue
        if old or (pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):  # a folder mounted read-only since
                    entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` while building into it, waiting at most
    :data:`LOCK_WAIT_S`. Why: processes starting together (server workers, Ray actors) then build a
    graph once; the others wait and find it. Where locking is impossible (no ``fcntl``, or the
    folder cannot be opened) or the wait runs out, the build goes ahead unlocked: the atomic writes
    make parallel builds harmless."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning(
                        "qwen3-rerank: %s stayed locked %.0f s; building the score graph anyway", folder, LOCK_WAIT_S
                    )
                    break
                time.sleep(0.1)
            except OSError:  # a file system without flock
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_record(path: Path, meta: Record) -> None:
    """Write a JSON record atomically: a temporary name in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(meta, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _run_build(
    source: Path,
    target: Path,
    final_dir: Path,
    report_dir: Path | None = None,
    *,
    yes_id: int,
    no_id: int,
    keep_present: bool,
    activations: str,
    head: str,
) -> _BuildInfo:
    """:func:`_build` into ``target`` (in a temporary folder), with its failures as ScoreGraphError
    (a full disk names ``report_dir``, by default ``final_dir``)."""
    started = time.perf_counter()
    try:
        built = _build(
            source,
            target,
            yes_id,
            no_id,
            keep_present=keep_present,
            activations=activations,
            head=head,
            final_dir=final_dir,
        )
        log.info(
            "qwen3-rerank: built the score graph of %s for %s in %.1f s",
            source,
            final_dir,
            time.perf_counter() - started,
        )
        return built
    except ScoreGraphNoSpace as exc:  # name the folder it was going to, not the temporary one
        raise ScoreGraphNoSpace(report_dir or final_dir, exc.needed) from None
    except ScoreGraphError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ScoreGraphNoSpace(report_dir or final_dir, _tree_size(target.parent)) from None
        raise ScoreGraphError(f"cannot build the score graph of {source.name}: {_first_line(exc)}") from None
    except Exception as exc:  # unreadable protobuf, missing external data, ...
        raise ScoreGraphError(f"cannot build the score graph of {source.name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _meta(source: Path, yes_id: int, no_id: int, keep_present: bool, activations: str, head: str) -> Record:
    return {
        "format_version": FORMAT_VERSION,
        "source": source.name,
        "yes_no_ids": [yes_id, no_id],
        "keep_present": keep_present,
        "options": {"activations": activations, "head": head},
    }


def _build_beside(source: Path, *, yes_id: int, no_id: int, keep_present: bool, activations: str, head: str) -> Path:
    """Build the score graph next to ``source``; returns its path.

    Order of the commit: the graph and its own data are written and flushed in a temporary
    folder; the old record is removed (from then on nothing there counts as built), the data
    file and the graph are renamed into place, the emptied temporary folder is removed, and the
    new record is written last (itself through a temporary name and a rename).

    Raises:
        _NotWritable: the folder does not take new files.
    """
    folder = source.parent
    target = score_graph_path(source, activations, head)
    with _folder_lock(folder):
        found = cached_score_graph(source, yes_id, no_id, activations=activations, head=head)
        if found is not None:  # built by another process while this one waited
            return found
        _remove_stale_temps(folder, f".{source.stem}.score")
        tmp = _temp_dir(folder, "." + target.name)
        try:
            built = _run_build(
                source,
                tmp / target.name,
                folder,
                yes_id=yes_id,
                no_id=no_id,
                keep_present=keep_present,
                activations=activations,
                head=head,
            )
            meta: Record = {
                **_meta(source, yes_id, no_id, keep_present, activations, head),
                "source_sha256": file_sha256(source),
                "source_stamp": _stamp(source),
                "data_stamps": _data_stamps(source),
                **built,
                "own_data_size": _own_data_size(tmp / target.name),
            }
            try:
                _sidecar(target).unlink(missing_ok=True)
                _fsync(folder)
                own = tmp / (target.name + "_data")
                final_own = target.with_name(target.name + "_data")
                if own.is_file():
                    os.replace(own, final_own)
                else:
                    final_own.unlink(missing_ok=True)
                os.replace(tmp / target.name, target)
                tmp.rmdir()  # empty now; gone before the commit marker, so a kill leaves no temporary
                _write_record(_sidecar(target), meta)
                _fsync(folder)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise ScoreGraphNoSpace(folder, _tree_size(tmp) + 4096) from None
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_in_cache(
    source: Path,
    cache: Path,
    key: _ContentKey,
    *,
    yes_id: int,
    no_id: int,
    keep_present: bool,
    activations: str,
    head: str,
) -> Path:
    """Build the score graph into the cache entry ``cache/<key>``; returns its path.

    The entry is assembled in a temporary folder (graph, its own data with every weight it needs,
    record) and renamed to its key in one step, so that it exists whole or not at all.

    Raises:
        OSError: the cache folder cannot be created or written.
    """
    entry = cache / key["key"]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the score-graph cache {cache}: {exc.strerror}") from None
    with _folder_lock(cache):
        found = _cached_entry(cache, key, yes_id, no_id, activations, head)
        if found is not None:
            return found
        _remove_stale_temps(cache, "")
        _remove_stale_temps(cache / "index", "")
        try:
            tmp = _temp_dir(cache, "")
        except _NotWritable:
            raise OSError(errno.EACCES, f"the score-graph cache {cache} is not writable") from None
        try:
            graph = tmp / _CACHE_GRAPH
            built = _run_build(
                source,
                graph,
                entry,
                cache,
                yes_id=yes_id,
                no_id=no_id,
                keep_present=keep_present,
                activations=activations,
                head=head,
            )
            meta: Record = {
                **_meta(source, yes_id, no_id, keep_present, activations, head),
                "key": key["key"],
                "source_sha256": key["source_sha256"],
                "data_sha256": key["data_sha256"],
                **built,
                "own_data_size": _own_data_size(graph),
            }
            try:
                _write_record(_sidecar(graph), meta)
                _fsync(tmp)
                if _cached_entry(cache, key, yes_id, no_id, activations, head) is not None:
                    return entry / _CACHE_GRAPH  # a parallel builder finished first: keep its entry,
                    # which other processes may be loading, and drop ours (removed below)
                _commit_entry(tmp, entry)
                _fsync(cache)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise ScoreGraphNoSpace(cache, _tree_size(tmp) + 4096) from None
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry / _CACHE_GRAPH


def _commit_entry(tmp: Path, entry: Path) -> None:
    """Rename the finished folder ``tmp`` to ``entry``; an entry already there (a damaged one: the
    caller keeps a valid one) is moved aside first and removed."""
    try:
        os.rename(tmp, entry)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    aside = entry.with_name(f"{_TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}-old")
    os.rename(entry, aside)
    try:
        os.rename(tmp, entry)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
