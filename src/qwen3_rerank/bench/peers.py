"""Where the benchmark's peers live, and how their model files are made: OpenVINO and llama.cpp.

``scripts/setup_peers.sh`` builds the tools once into a cache folder (``$QWEN3_RERANK_PEERS``, by
default ``~/.cache/qwen3-rerank/peers``); this module names every path in it, makes the model files
of one checkpoint (``prepare``) and tells the benchmark how to run a peer engine on a checkpoint, or
why it cannot (``locate``)::

    PEERS/ov-venv/                   optimum-intel[openvino] + nncf on torch==2.13.0 CPU, no torchvision
    PEERS/llama.cpp/                 llama.cpp's source (the llama-cpp-python sdist's vendor/llama.cpp)
    PEERS/llama.cpp/build/bin/       llama-server, llama-quantize
    PEERS/models/KEY/ov-int8/        optimum-cli export openvino --weight-format int8 (also fp32, int4)
    PEERS/models/KEY/gguf/model-q8_0.gguf
                                     convert_hf_to_gguf.py (f32), then llama-quantize (also q4_k_m)

``KEY`` (e.g. ``qwen3-1024x28-<hash>``) hashes the checkpoint's config and weights, so a rebuilt
checkpoint gets new files and the same checkpoint at another path reuses them.

    python -m qwen3_rerank.bench.peers paths [--shell]
    python -m qwen3_rerank.bench.peers prepare CHECKPOINT [--ov fp32,int8,int4] [--gguf f32,q8_0,q4_k_m]
    python -m qwen3_rerank.bench.peers status CHECKPOINT
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEERS_ENV = "QWEN3_RERANK_PEERS"

#: ``ov-<suffix>`` engine → ``optimum-cli export openvino --weight-format``.
OV_FORMATS = {"fp32": "fp32", "int8": "int8", "int4": "int4"}
#: ``llamacpp-<suffix>`` engine → the GGUF type (``f32``/``f16``: the converter's ``--outtype``;
#: the others: ``llama-quantize``'s type, quantized from the f32 file).
GGUF_TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}
OV_ENGINES = tuple(f"ov-{k}" for k in OV_FORMATS)
LLAMACPP_ENGINES = tuple(f"llamacpp-{k}" for k in GGUF_TYPES)
PEER_ENGINES = OV_ENGINES + LLAMACPP_ENGINES
#: What ``prepare`` makes unless told otherwise: each peer's fp32 (parity) and its quantized forms.
DEFAULT_OV = ("fp32", "int8", "int4")
DEFAULT_GGUF = ("f32", "q8_0", "q4_k_m")

SETUP_HINT = "run scripts/setup_peers.sh {checkpoint}"
#: The files of a checkpoint that decide its key.
_KEYED = ("config.json", "*.safetensors", "*.bin")


def peers_root(explicit: str | Path | None = None) -> Path:
    """The peers' cache folder: ``explicit``, else ``$QWEN3_RERANK_PEERS``, else the user cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(PEERS_ENV):
        return Path(os.environ[PEERS_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwen3-rerank" / "peers"


@dataclass(frozen=True)
class PeerTools:
    """Every path of the peers' cache folder ``root`` (nothing is checked or made here)."""

    root: Path

    @property
    def ov_venv(self) -> Path:
        return self.root / "ov-venv"

    @property
    def ov_python(self) -> Path:
        return self.ov_venv / "bin" / "python"

    @property
    def optimum_cli(self) -> Path:
        return self.ov_venv / "bin" / "optimum-cli"

    @property
    def llama_src(self) -> Path:
        return self.root / "llama.cpp"

    @property
    def llama_build(self) -> Path:
        return self.llama_src / "build"

    @property
    def llama_server(self) -> Path:
        return self.llama_build / "bin" / "llama-server"

    @property
    def llama_quantize(self) -> Path:
        return self.llama_build / "bin" / "llama-quantize"

    @property
    def converter(self) -> Path:
        return self.llama_src / "convert_hf_to_gguf.py"

    def model_dir(self, key: str) -> Path:
        """The model files made from the checkpoint whose key is ``key``."""
        return self.root / "models" / key

    def ov_dir(self, key: str, fmt: str) -> Path:
        """The OpenVINO IR of weight format ``fmt`` (a key of :data:`OV_FORMATS`)."""
        return self.model_dir(key) / f"ov-{fmt}"

    def gguf_path(self, key: str, gguf_type: str) -> Path:
        """The GGUF of type ``gguf_type`` (a key of :data:`GGUF_TYPES`)."""
        return self.model_dir(key) / "gguf" / f"model-{gguf_type}.gguf"

    def paths(self) -> dict[str, Path]:
        """The tools' paths by shell-variable name."""
        return {
            "PEERS_ROOT": self.root,
            "OV_VENV": self.ov_venv,
            "LLAMA_SRC": self.llama_src,
            "LLAMA_BUILD": self.llama_build,
            "LLAMA_SERVER": self.llama_server,
            "LLAMA_QUANTIZE": self.llama_quantize,
        }

    def shell(self) -> str:
        """The paths as shell assignments, for ``eval`` in ``scripts/setup_peers.sh``."""
        return "\n".join(f"{k}={shlex.quote(str(v))}" for k, v in self.paths().items())


_KEY_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _keyed_files(checkpoint: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in _KEYED:
        files.update(p for p in checkpoint.glob(pattern) if p.is_file())
    return sorted(files)


def checkpoint_key(checkpoint: str | Path) -> str:
    """``<model type>-<hidden size>x<layers>-<16 hex>``: a SHA-256 of the checkpoint's ``config.json``
    and weight files (the same files at another path share the key; the folder's name plays no part).

    Raises:
        FileNotFoundError: ``checkpoint`` has no ``config.json``.
    """
    folder = Path(checkpoint).resolve()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no config.json)")
    files = _keyed_files(folder)
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    cached = _KEY_CACHE.get((str(folder), stamp))
    if cached:
        return cached
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    shape = f"{config.get('model_type', 'model')}-{config.get('hidden_size', 0)}x{config.get('num_hidden_layers', 0)}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in shape)[:48]
    key = f"{name}-{digest.hexdigest()[:16]}"
    _KEY_CACHE[(str(folder), stamp)] = key
    return key


# -- launching a peer engine -----------------------------------------------------------------------


@dataclass(frozen=True)
class PeerLaunch:
    """How the benchmark runs one peer engine: the worker's flags, and the Python it runs under
    (``None``: the benchmark's own; else a venv's, with this package put on its path)."""

    flags: list[str]
    python: Path | None


def locate(engine: str, checkpoint: Path, tools: PeerTools, key: str | None = None) -> PeerLaunch | str:
    """The worker launch of peer ``engine`` on ``checkpoint``, or why it cannot run (a sentence).

    Args:
        engine: one of :data:`PEER_ENGINES`.
        checkpoint: the PyTorch checkpoint the peer's model files were made from.
        tools: the peers' cache folder.
        key: :func:`checkpoint_key` of ``checkpoint`` when already known.

    Raises:
        ValueError: ``engine`` is not a peer engine.
    """
    kind, _, variant = engine.partition("-")
    hint = SETUP_HINT.format(checkpoint=checkpoint)
    if kind == "ov" and variant in OV_FORMATS:
        if not tools.ov_python.is_file():
            return f"OpenVINO peer not set up (no {tools.ov_python}): {hint}"
        key = key or checkpoint_key(checkpoint)
        ir = tools.ov_dir(key, variant)
        if not (ir / "openvino_model.xml").is_file():
            return f"no OpenVINO {variant} IR of this checkpoint ({ir}): {hint}"
        flags = ["--engine", "ov", "--ov-model", str(ir), "--checkpoint", str(checkpoint)]
        if variant == "fp32":
            flags += ["--ov-precision", "f32"]  # not OpenVINO's bf16 default on AMX/avx512_bf16 CPUs
        return PeerLaunch(flags, tools.ov_python)
    if kind == "llamacpp" and variant in GGUF_TYPES:
        if not tools.llama_server.is_file():
            return f"llama.cpp peer not set up (no {tools.llama_server}): {hint}"
        key = key or checkpoint_key(checkpoint)
        gguf = tools.gguf_path(key, variant)
        if not gguf.is_file():
            return f"no {variant} GGUF of this checkpoint ({gguf}): {hint}"
        flags = ["--engine", "llamacpp", "--gguf", str(gguf), "--llama-server", str(tools.llama_server)]
        if variant in ("f32", "f16"):
            # The parity engines: KV cache in the weights' float type (not f16), and no flash attention
            # (llama.cpp's CPU kernel moved f32 scores by 1.6e-4 on the tiny model; 8e-7 without it).
            flags += ["--llama-kv-type", variant, "--llama-flash-attn", "off"]
        return PeerLaunch(flags + ["--checkpoint", str(checkpoint)], None)
    raise ValueError(f"unknown peer engine {engine!r}: use one of {', '.join(PEER_ENGINES)}")


@contextlib.contextmanager
def package_path() -> Iterator[Path]:
    """A temporary folder holding only a link to this package, for another venv's ``PYTHONPATH``.

    The package's own parent folder may be a site-packages full of this venv's packages (torch
    among them), which must not shadow the peer venv's.
    """
    package = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="qwen3-rerank-path-") as tmp:
        os.symlink(package, Path(tmp) / package.name)
        yield Path(tmp)


# -- making the model files ------------------------------------------------------------------------


def _log(text: str) -> None:
    print(f"[peers] {text}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str | Path], log: Path) -> None:
    """Run ``cmd`` (niced), its output appended to ``log``; a clear error with the log's end on failure."""
    line = [str(c) for c in cmd]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("a") as handle:
        handle.write(f"\n$ {shlex.join(line)}\n")
        handle.flush()
        proc = subprocess.run(["nice", "-n", "10", *line], stdout=handle, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{line[0]} failed ({proc.returncode}); the end of {log}:\n{tail}")


def _write_stamp(path: Path, **fields: Any) -> None:
    path.write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}, indent=1))


#: optimum-cli's int4 group size (its default), used wherever the model's widths allow it.
OV_INT4_GROUP = 128


def int4_group_size(config: dict[str, Any]) -> int:
    """The int4 group size: :data:`OV_INT4_GROUP`, or for a model too narrow for it (the tiny test
    model: 64 wide) the largest power of two that divides every linear layer's input width."""
    widths = [
        int(config.get("hidden_size", 0)),
        int(config.get("intermediate_size", 0)),
        int(config.get("num_attention_heads", 0)) * int(config.get("head_dim", 0)),
    ]
    group = OV_INT4_GROUP
    while group > 8 and any(w % group for w in widths if w):
        group //= 2
    return group


def prepare_ov(checkpoint: Path, tools: PeerTools, key: str, fmt: str, log: Path) -> Path:
    """Export ``checkpoint`` to an OpenVINO IR with weight format ``fmt``, unless it is there already.

    ``--task text-generation``: a plain forward (no KV-cache inputs), what scoring runs. The IR is
    written beside its final place and renamed at the end, so a stopped export leaves nothing half made.
    """
    target = tools.ov_dir(key, fmt)
    if (target / "openvino_model.xml").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    cmd: list[str | Path] = [tools.optimum_cli, "export", "openvino", "--model", checkpoint.resolve()]
    cmd += ["--task", "text-generation", "--weight-format", OV_FORMATS[fmt], "--disable-convert-tokenizer"]
    if fmt == "int4":
        group = int4_group_size(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")))
        if group != OV_INT4_GROUP:
            cmd += ["--group-size", str(group)]
    cmd.append(partial)
    _log(f"OpenVINO {fmt} IR of {checkpoint} ...")
    t0 = time.perf_counter()
    _run(cmd, log)
    _write_stamp(
        partial / "peer.json",
        command=shlex.join(str(c) for c in cmd).replace(str(partial), str(target)),
        checkpoint=str(checkpoint.resolve()),
        key=key,
        seconds=time.perf_counter() - t0,
    )
    partial.rename(target)
    return target


@contextlib.contextmanager
def _reranker_link(checkpoint: Path) -> Iterator[Path]:
    """A folder of links to ``checkpoint``'s files that llama.cpp's converter takes for a Qwen3 reranker.

    The converter makes the rerank GGUF (yes/no head, rank pooling, rerank template) only for a
    folder whose ``README.md`` holds ``# Qwen3-Reranker`` or whose name says ``qwen3-reranker``; a
    random-weight checkpoint has neither, so the link folder has both.
    """
    with tempfile.TemporaryDirectory(prefix="qwen3-rerank-gguf-") as tmp:
        link = Path(tmp) / "Qwen3-Reranker-link"
        link.mkdir()
        for path in checkpoint.resolve().iterdir():
            if path.is_file() and path.name != "README.md":
                os.symlink(path, link / path.name)
        (link / "README.md").write_text("# Qwen3-Reranker\n\nLinks to a checkpoint, for convert_hf_to_gguf.py.\n")
        yield link


_TEMPLATE_SCRIPT = """
import json, sys
from gguf import GGUFReader
fields = GGUFReader(sys.argv[1]).fields
field = fields.get("tokenizer.chat_template.rerank")
print(json.dumps(field.contents() if field is not None else None))
"""


def _rerank_template(tools: PeerTools, gguf: Path) -> str | None:
    """The GGUF's ``tokenizer.chat_template.rerank`` (read with llama.cpp's gguf-py in the peer venv)."""
    proc = subprocess.run(
        [str(tools.ov_python), "-c", _TEMPLATE_SCRIPT, str(gguf)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reading {gguf.name}'s rerank template failed: {proc.stderr[-1000:]}")
    value = json.loads(proc.stdout.strip().splitlines()[-1])
    return value if isinstance(value, str) else None


def prepare_gguf(checkpoint: Path, tools: PeerTools, key: str, gguf_type: str, log: Path, threads: int = 2) -> Path:
    """Make the ``gguf_type`` GGUF of ``checkpoint`` with llama.cpp's own tools, unless it is there.

    ``f32``/``f16``: ``convert_hf_to_gguf.py --outtype``; the rest: ``llama-quantize`` of the f32 file
    (made first when missing). A sidecar ``<file>.json`` keeps the command and the rerank template.
    """
    target = tools.gguf_path(key, gguf_type)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if gguf_type in ("f32", "f16"):
        _log(f"{gguf_type} GGUF of {checkpoint} ...")
        with _reranker_link(checkpoint) as link:
            cmd: list[str | Path] = [
                tools.ov_python,
                tools.converter,
                link,
                "--outtype",
                gguf_type,
                "--outfile",
                partial,
            ]
            _run(cmd, log)
        command = shlex.join(str(c) for c in cmd).replace(str(link), "LINK_FOLDER")
    else:
        source = prepare_gguf(checkpoint, tools, key, "f32", log, threads)
        if not tools.llama_quantize.is_file():
            raise RuntimeError(
                f"llama-quantize is not built yet ({tools.llama_quantize}): rerun scripts/setup_peers.sh"
            )
        _log(f"{gguf_type} GGUF of {checkpoint} ...")
        cmd = [tools.llama_quantize, source, partial, GGUF_TYPES[gguf_type], str(threads)]
        _run(cmd, log)
        command = shlex.join(str(c) for c in cmd)
    sidecar = target.with_name(target.name + ".json")
    _write_stamp(
        sidecar,
        command=command.replace(str(partial), str(target)),
        checkpoint=str(checkpoint.resolve()),
        key=key,
        seconds=time.perf_counter() - t0,
        rerank_template=_rerank_template(tools, partial),
    )
    partial.rename(target)
    return target


def prepare(
    checkpoint: Path,
    tools: PeerTools,
    ov: Sequence[str] = DEFAULT_OV,
    gguf: Sequence[str] = DEFAULT_GGUF,
    threads: int = 2,
) -> dict[str, str]:
    """Make every missing peer model file of ``checkpoint``; each outcome by engine name.

    A peer whose tools are not built is skipped with its reason; one failure does not stop the others.
    """
    key = checkpoint_key(checkpoint)
    folder = tools.model_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "prepare.log"
    outcome: dict[str, str] = {}
    for fmt in ov:
        engine = f"ov-{fmt}"
        if fmt not in OV_FORMATS:
            outcome[engine] = f"error: unknown OpenVINO format (use {', '.join(OV_FORMATS)})"
        elif not tools.optimum_cli.is_file():
            outcome[engine] = f"skipped: no {tools.optimum_cli}"
        else:
            try:
                outcome[engine] = f"ready: {prepare_ov(checkpoint, tools, key, fmt, log)}"
            except RuntimeError as err:
                outcome[engine] = f"error: {err}"
    for gguf_type in gguf:
        engine = f"llamacpp-{gguf_type}"
        if gguf_type not in GGUF_TYPES:
            outcome[engine] = f"error: unknown GGUF type (use {', '.join(GGUF_TYPES)})"
        elif not (tools.ov_python.is_file() and tools.converter.is_file()):
            outcome[engine] = f"skipped: no {tools.ov_python} or {tools.converter}"
        else:
            try:
                outcome[engine] = f"ready: {prepare_gguf(checkpoint, tools, key, gguf_type, log, threads)}"
            except RuntimeError as err:
                outcome[engine] = f"error: {err}"
    return outcome


def status(checkpoint: Path, tools: PeerTools) -> dict[str, str]:
    """Each peer engine: ``ready`` or why the benchmark would skip it."""
    key = checkpoint_key(checkpoint)
    out: dict[str, str] = {}
    for engine in PEER_ENGINES:
        found = locate(engine, checkpoint, tools, key)
        out[engine] = found if isinstance(found, str) else "ready"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m qwen3_rerank.bench.peers``: paths, prepare, status; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m qwen3_rerank.bench.peers", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--root", default=None, help=f"the peers' cache folder (default: ${PEERS_ENV} or the user cache)")
    sub = p.add_subparsers(dest="command", required=True)
    paths = sub.add_parser("paths", help="print the cache folder's paths")
    paths.add_argument("--shell", action="store_true", help="as shell assignments")
    prep = sub.add_parser("prepare", help="make the peer model files of checkpoints")
    prep.add_argument("checkpoints", nargs="+", type=Path)
    prep.add_argument("--ov", default=",".join(DEFAULT_OV), help="OpenVINO weight formats")
    prep.add_argument("--gguf", default=",".join(DEFAULT_GGUF), help="GGUF types")
    prep.add_argument("--threads", type=int, default=2, help="llama-quantize threads")
    stat = sub.add_parser("status", help="which peer engines can run on a checkpoint")
    stat.add_argument("checkpoint", type=Path)
    args = p.parse_args(argv)
    tools = PeerTools(peers_root(args.root))
    if args.command == "paths":
        print(tools.shell() if args.shell else json.dumps({k: str(v) for k, v in tools.paths().items()}, indent=1))
        return 0
    try:
        if args.command == "status":
            print(json.dumps(status(args.checkpoint, tools), indent=1))
            return 0
        failed = False
        for checkpoint in args.checkpoints:
            ov = [f for f in args.ov.split(",") if f]
            gguf = [g for g in args.gguf.split(",") if g]
            outcome = prepare(checkpoint, tools, ov, gguf, args.threads)
            for engine, text in outcome.items():
                _log(f"{checkpoint.name} {engine}: {text.splitlines()[0]}")
            failed = failed or any(t.startswith("error") for t in outcome.values())
            print(json.dumps({"checkpoint": str(checkpoint), "key": checkpoint_key(checkpoint), **outcome}))
        return 1 if failed else 0
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
