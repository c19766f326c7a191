"""The peer engines of the benchmark: OpenVINO (optimum-intel) and llama.cpp (``llama-server``).

Both score the same texts as every other engine (:mod:`workloads`), one call per query with all its
documents, and time each call. ``run_ov`` runs in the OpenVINO peer's own venv (see
``scripts/setup_peers.sh``): ``OVModelForCausalLM`` on an IR exported by ``optimum-cli``, fed by the
recipe's tokenization (:class:`~qwen3_rerank.bench.recipe.RecipeTokenizer`) and scored from the
last-position yes/no logits, as the PyTorch recipe is. ``run_llamacpp`` starts one ``llama-server
--reranking`` for the run, waits for its health check, posts each call to ``/v1/rerank`` and stops it;
the server builds the prompt itself from the GGUF's rerank template, so the run also checks the
token ids it feeds the model against the recipe's (through ``/tokenize``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .timing import Calls, Warmup, timed_calls

if TYPE_CHECKING:
    from .recipe import RecipeTokenizer


#: ``llama-server`` context and slots: 8 documents decoded together, and room for one prompt of the
#: recipe's whole ``max_length`` (8,192 tokens); ``-kvu`` shares the cache between the slots, without
#: it each slot gets ``ctx / parallel`` tokens and a longer prompt is refused (HTTP 400).
LLAMA_CTX = 8192
LLAMA_PARALLEL = 8
HEALTH_TIMEOUT_S = 600.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- OpenVINO --------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    """An OpenVINO element type as its short name (``f32``, ``bf16``)."""
    to_string = getattr(value, "to_string", None)
    return str(to_string()) if callable(to_string) else str(value)


def run_ov(args: argparse.Namespace, calls: Calls, warmup: Warmup) -> dict[str, Any]:
    """``OVModelForCausalLM`` on the IR in ``--ov-model``, batches of ``--batch`` pairs (the recipe's 8).

    ``--ov-precision`` sets OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32`` for the fp32 parity
    engine); without it OpenVINO picks its default for the CPU (bf16 where the CPU has AMX or
    avx512_bf16), and the row records which one ran.
    """
    import importlib

    import torch

    from .recipe import RecipeTokenizer

    # Only in the OpenVINO peer's own venv (scripts/setup_peers.sh), never in this package's: loaded by name.
    openvino = importlib.import_module("openvino")
    ov_model_class = importlib.import_module("optimum.intel").OVModelForCausalLM

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    ov_config = {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    if args.ov_precision:
        ov_config["INFERENCE_PRECISION_HINT"] = args.ov_precision
    t0 = time.perf_counter()
    recipe = RecipeTokenizer(args.checkpoint)
    model = ov_model_class.from_pretrained(args.ov_model, ov_config=ov_config, use_cache=False, compile=True)
    load_s = time.perf_counter() - t0
    compiled = model.request.get_compiled_model()
    out: dict[str, Any] = {
        "load_s": load_s,
        "rss_after_load_mb": _peak_rss_mb(),
        "openvino": openvino.__version__,
        "ov_config": ov_config,
        "ov_inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "ov_model": str(args.ov_model),
    }
    if args.load_only:
        return out

    def compute_scores(query: str, docs: Sequence[str]) -> list[float]:
        scores: list[float] = []
        with torch.no_grad():
            for s in range(0, len(docs), args.batch):
                inputs = recipe.batch(query, docs[s : s + args.batch])
                scores.extend(recipe.scores(model(**inputs).logits[:, -1, :]))
        return scores

    out.update(timed_calls(compute_scores, calls, warmup, args.repeat))
    return out


# -- llama.cpp -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LlamaServer:
    """One ``llama-server --reranking`` on a loopback port, for the length of a ``with`` block.

    Args:
        binary: the ``llama-server`` executable.
        gguf: the model file.
        threads: ``-t`` and ``-tb``.
        ctx: ``-c`` (the whole KV cache, shared by the slots: ``-kvu``).
        parallel: ``-np``, documents decoded together.
        log: where the server's output goes.
        kv_type: ``-ctk``/``-ctv``, the KV cache's type (default: llama.cpp's, f16; the fp32 parity
            engine keeps f32, so that its scores are the recipe's within float32 rounding).
        flash_attn: ``-fa`` (default: llama.cpp's, ``auto``: on for this CPU). Its CPU flash attention
            moved the tiny model's f32 scores by up to 1.6e-4 (8e-7 with it off), so the fp32 parity
            engine turns it off; the quantized engines keep the default.
    """

    def __init__(
        self,
        binary: Path,
        gguf: Path,
        threads: int,
        ctx: int,
        parallel: int,
        log: Path,
        kv_type: str | None = None,
        flash_attn: str | None = None,
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command = [
            str(binary),
            "-m",
            str(gguf),
            "--reranking",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-c",
            str(ctx),
            "-np",
            str(parallel),
            "-kvu",
            "--no-webui",
        ]
        if kv_type:
            self.command += ["-ctk", kv_type, "-ctv", kv_type]
        if flash_attn:
            self.command += ["-fa", flash_attn]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT)
        self.load_s = self._wait_healthy()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_healthy(self) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < HEALTH_TIMEOUT_S:
            if self.proc is None or self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited while loading; its log: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"llama-server was not healthy after {HEALTH_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def post(self, path: str, body: dict[str, Any], timeout: float = 3600.0) -> Any:
        """POST ``body`` as JSON to ``path``; the decoded answer (a clear error on an HTTP error)."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            raise SystemExit(f"llama-server {path}: HTTP {err.code}: {detail}") from None

    def peak_rss_mb(self) -> float:
        """The server process's peak resident set (``VmHWM``), model mapping and KV cache included."""
        if self.proc is None:
            return float("nan")
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the server's output, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rerank(self, query: str, docs: Sequence[str]) -> list[float]:
        """``/v1/rerank`` of ``docs`` for ``query``: the relevance scores in input order."""
        answer = self.post("/v1/rerank", {"query": query, "documents": list(docs), "top_n": len(docs)})
        scores = [float("nan")] * len(docs)
        for item in answer["results"]:
            scores[int(item["index"])] = float(item["relevance_score"])
        return scores

    def tokenize(self, text: str) -> list[int]:
        """``/tokenize`` as the rerank task tokenizes its prompt (no BOS/EOS added, special tokens parsed)."""
        answer = self.post("/tokenize", {"content": text, "add_special": False, "parse_special": True})
        return [int(t) for t in answer["tokens"]]


def rerank_template(gguf: Path) -> str | None:
    """The rerank template the GGUF carries, from the sidecar ``<gguf>.json`` written at setup."""
    sidecar = gguf.with_name(gguf.name + ".json")
    if not sidecar.is_file():
        return None
    value = json.loads(sidecar.read_text()).get("rerank_template")
    return value if isinstance(value, str) else None


def token_check(server: Any, template: str | None, recipe: RecipeTokenizer, calls: Calls) -> dict[str, Any]:
    """Do the token ids ``llama-server`` feeds the model equal the recipe's, for every pair of ``calls``?

    The server fills the GGUF's rerank template with ``{query}`` and ``{document}`` and tokenizes the
    whole text; this does the same through ``/tokenize`` (``server.tokenize``) and compares with the
    recipe's ids (prefix, content and suffix tokenized apart, then joined).
    """
    from ..prompt import format_prompt

    if template is None:
        return {"checked": 0, "note": "no rerank template recorded next to the GGUF (rerun scripts/setup_peers.sh)"}
    checked = same = 0
    first_difference: dict[str, Any] | None = None
    prompt_equal = True
    for c, (query, docs) in enumerate(calls):
        expected = recipe.token_ids(query, docs)
        for i, doc in enumerate(docs):
            text = template.replace("{query}", query).replace("{document}", doc)
            prompt_equal = prompt_equal and text == format_prompt(query, doc)
            ids = server.tokenize(text)
            checked += 1
            if ids == expected[i]:
                same += 1
            elif first_difference is None:
                at = next(
                    (k for k, (x, y) in enumerate(zip(ids, expected[i], strict=False)) if x != y),
                    min(len(ids), len(expected[i])),
                )
                first_difference = {
                    "call": c,
                    "document": i,
                    "position": at,
                    "llama_cpp": ids[max(0, at - 3) : at + 5],
                    "recipe": expected[i][max(0, at - 3) : at + 5],
                    "lengths": [len(ids), len(expected[i])],
                }
    return {
        "checked": checked,
        "identical": same,
        "template_equals_recipe_prompt": prompt_equal,
        "first_difference": first_difference,
    }


def run_llamacpp(args: argparse.Namespace, calls: Calls, warmup: Warmup) -> dict[str, Any]:
    """One ``llama-server --reranking`` on ``--gguf``; each call is one ``/v1/rerank`` request."""
    from .recipe import RecipeTokenizer

    threads = args.threads or os.cpu_count() or 1
    gguf = Path(args.gguf)
    version = subprocess.run([args.llama_server, "--version"], capture_output=True, text=True, timeout=60)
    with tempfile.TemporaryDirectory(prefix="qwen3-bench-llama-") as tmp:
        server = LlamaServer(
            Path(args.llama_server),
            gguf,
            threads,
            args.llama_ctx,
            args.llama_parallel,
            Path(tmp) / "log",
            kv_type=args.llama_kv_type,
            flash_attn=args.llama_flash_attn,
        )
        with server:
            out: dict[str, Any] = {
                "load_s": server.load_s,
                "rss_after_load_mb": server.peak_rss_mb(),
                "gguf": gguf.name,
                "server_command": " ".join(server.command),
                "llama_cpp_version": (version.stdout + version.stderr).strip().splitlines()[-2:],
            }
            if args.load_only:
                out["server_peak_rss_mb"] = server.peak_rss_mb()
                return out
            out.update(timed_calls(server.rerank, calls, warmup, args.repeat))
            out["server_peak_rss_mb"] = server.peak_rss_mb()
            recipe = RecipeTokenizer(args.checkpoint)
            out["token_check"] = token_check(server, rerank_template(gguf), recipe, calls)
    return out
