"""Notice when the model files of a running server change on disk, and refuse to answer wrongly.

What ONNX Runtime (1.32, Linux) does with the files, measured on the tiny test model
(``tests/test_model_files_change.py``): the graph file (``.onnx``) is read and closed at load;
an external weight file (``*.onnx_data``) is memory-mapped (``MAP_PRIVATE``) for the session's
whole life, and the weights are read from that mapping at every run. So:

* the folder renamed, replaced by another (rename / symlink swap) or deleted: the mapping keeps
  the old file's pages alive, answers do not change. Harmless; a warning says a restart is needed
  to load the new model.
* a mapped weight file overwritten in place (``cp new.onnx_data model.onnx_data``, an rsync
  without ``--inplace=no``, a download tool writing into the same path): the session reads the new
  bytes under the old graph, and answers become wrong (NaN in the test), silently. A file cut
  short kills the process with SIGBUS on the next run. Neither can be undone without a restart,
  so the server marks itself broken: ``/ready`` 503, every rerank request 503, one error logged.

The check is two ``stat`` calls per watched file (one on the path, one on a descriptor held
open on the file that was loaded), done on each rerank request, before each model step and on
``/ready``: microseconds, and it catches a change before the model reads the changed pages,
unless the change lands during a step. It goes by size and modification time, so a ``touch`` of a
mapped weight file counts as a change too: telling equal bytes from new ones would mean reading
the whole file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("qwen3_rerank.server")

#: a graph file larger than this holds its weights inline: it has no external data to look for
#: (and parsing it again would cost as much memory as the model)
_MAX_GRAPH_BYTES_TO_PARSE = 100 * 1024 * 1024


class ModelChanged(Exception):
    """A weight file the session reads from was changed in place: answers can no longer be trusted."""


@dataclass(frozen=True)
class Identity:
    """What tells a file's version apart: which file (device, inode) and its contents' stamp."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> Identity:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def external_data_files(graph: Path) -> list[Path]:
    """The external weight files an ONNX graph names (read without loading the weights).

    Args:
        graph: an ``.onnx`` file.

    Returns:
        The files, resolved against the graph's folder; empty when the graph holds its weights
        inline, is too large to parse cheaply (then its weights are inline) or cannot be read.
    """
    try:
        if graph.stat().st_size > _MAX_GRAPH_BYTES_TO_PARSE:
            return []
        import onnx

        model = onnx.load(str(graph), load_external_data=False)
    except Exception:  # the session loaded it, so this is at most a file we cannot watch
        return []
    locations: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return [graph.parent / location for location in sorted(locations)]


def mapped_files(maps: Path = Path("/proc/self/maps")) -> set[tuple[int, int, int]] | None:
    """(device major, device minor, inode) of every file mapped into this process; None if unknown.

    Linux only (``/proc/self/maps``); elsewhere None, and every watched file counts as mapped.
    """
    try:
        text = maps.read_text()
    except OSError:
        return None
    found: set[tuple[int, int, int]] = set()
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[4] == "0":  # anonymous memory
            continue
        major, _, minor = parts[3].partition(":")
        try:
            found.add((int(major, 16), int(minor, 16), int(parts[4])))
        except ValueError:
            continue
    return found


class ModelWatch:
    """The identity of each model file at start, compared with the disk on every :meth:`check`."""

    def __init__(self, files: Iterable[Path], *, mapped: set[tuple[int, int, int]] | None = None) -> None:
        """Record the files as they are now.

        Args:
            files: the files the loaded session came from (missing ones are skipped).
            mapped: what :func:`mapped_files` returned after the session loaded; None: unknown,
                so an in-place change of any watched file is treated as fatal.
        """
        self._files: list[tuple[Path, int, Identity, bool]] = []
        for path in dict.fromkeys(files):  # once each, in order
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            start = Identity.of(os.fstat(fd))
            # Matched by inode alone: on btrfs subvolumes and some overlayfs mounts the device that
            # stat reports is not the one /proc/self/maps shows, and a mapped file taken for an
            # unmapped one would let an in-place overwrite pass as harmless.
            is_mapped = mapped is None or start.inode in {inode for _major, _minor, inode in mapped}
            self._files.append((path, fd, start, is_mapped))
        self._warned: set[tuple[Path, str]] = set()
        #: why answers can no longer be trusted; None while they can
        self.failure: str | None = None

    @classmethod
    def for_model(cls, model: object) -> ModelWatch | None:
        """A watch over the graph a :class:`~qwen3_rerank.Reranker` runs and its weight files.

        None for a model that does not say where its graph is (the fakes of the tests).
        """
        path = getattr(getattr(model, "engine", None), "path", None)
        if not isinstance(path, Path):
            return None
        return cls([path, *external_data_files(path)], mapped=mapped_files())

    @property
    def files(self) -> Sequence[Path]:
        return [path for path, _fd, _start, _mapped in self._files]

    def close(self) -> None:
        """Close the descriptors held on the loaded files."""
        for _path, fd, _start, _mapped in self._files:
            os.close(fd)
        self._files = []

    def check(self) -> str | None:
        """Compare the files with their start; the failure message once a mapped file changed in place.

        Logs a warning once per file and kind of change (renamed or deleted, replaced, changed
        in place but not mapped) and an error once when the watch fails.
        """
        if self.failure is not None:
            return self.failure
        for path, fd, start, is_mapped in self._files:
            loaded = Identity.of(os.fstat(fd))  # the file the session loaded, wherever it now is
            if (loaded.size, loaded.mtime_ns) != (start.size, start.mtime_ns):
                if is_mapped:
                    self.failure = (
                        f"model file {path} was overwritten in place while the server ran; its weights are "
                        "memory-mapped, so answers would be wrong: restart the server (replace a model with "
                        "a new folder and a rename instead)"
                    )
                    log.error("%s", self.failure)
                    return self.failure
                self._warn_once(
                    path,
                    "in-place",
                    "model file %s changed in place; it was read whole at start, so the loaded "
                    "model is unaffected: restart to load the new one",
                )
            try:
                now = os.stat(path)
            except OSError:
                self._warn_once(
                    path,
                    "gone",
                    "model file %s was renamed or deleted; still serving the model loaded at start "
                    "(restart to load another)",
                )
                continue
            if (now.st_dev, now.st_ino) != (start.device, start.inode):
                self._warn_once(
                    path,
                    "replaced",
                    "model file %s was replaced by another file; still serving the model "
                    "loaded at start (restart to load the new one)",
                )
        return None

    def _warn_once(self, path: Path, kind: str, message: str) -> None:
        if (path, kind) not in self._warned:
            self._warned.add((path, kind))
            log.warning(message, path)
