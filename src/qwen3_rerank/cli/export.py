"""``qwen3-rerank export`` and ``qwen3-rerank verify``: thin commands over :mod:`..export.pipeline` and
:mod:`..export.verify`.

Nothing here imports torch or transformers at import time, so the main CLI starts without the
``export`` extra; the commands say which extra to install when it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from .options import Parser, UsageError


def register(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add ``export`` and ``verify`` to the CLI's subparsers (errors: one line, exit 2)."""
    export = subparsers.add_parser(
        "export", help="convert a Qwen3-Reranker checkpoint to ONNX (fp32, fp16, q8, q4) and verify it"
    )
    export.add_argument("source", help="checkpoint folder (config.json, safetensors, tokenizer) or Hub id")
    export.add_argument("--out", required=True, help="output folder (published layout: config, tokenizer, onnx/)")
    export.add_argument(
        "--dtype", default="fp32,fp16,q8,q4", help="comma-separated variants (default: fp32,fp16,q8,q4)"
    )
    export.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    export.add_argument("--no-verify", dest="verify", action="store_false", help="skip the check against PyTorch")
    export.add_argument("--revision", default=None, help="Hub revision of SOURCE")
    export.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    export.set_defaults(handler=_cmd_export)

    verify = subparsers.add_parser(
        "verify", help="score a probe set with every ONNX variant against the PyTorch checkpoint"
    )
    verify.add_argument("model_dir", help="exported model folder")
    verify.add_argument(
        "--reference", default=None, help="checkpoint folder or Hub id (default: the one the export recorded)"
    )
    verify.add_argument("--dtype", default=None, help="comma-separated variants to check (default: all present)")
    verify.add_argument(
        "--report", default=None, help="where to write the JSON report (default: MODEL_DIR/export_report.json)"
    )
    verify.set_defaults(handler=_cmd_verify)


def _need_export_extra() -> None:
    missing = []
    for module in ("torch", "transformers", "onnx"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(
            f"this command needs {', '.join(missing)}: pip install 'qwen3-rerank[export]' (install torch CPU first)"
        )


def _cmd_export(args: argparse.Namespace) -> int:
    _need_export_extra()
    from ..export.pipeline import export_checkpoint

    log = (lambda _: None) if args.quiet else (lambda text: print(f"qwen3-rerank: {text}", file=sys.stderr, flush=True))
    result = export_checkpoint(
        args.source, args.out, dtypes=args.dtype, force=args.force, verify=args.verify, revision=args.revision, log=log
    )
    summary = {
        "out": str(result.out),
        "files": result.files,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
    }
    if result.report is not None:
        summary["verify"] = {d: v["max_abs_gap_diff"] for d, v in result.report["variants"].items()}
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    _need_export_extra()
    from ..export.verify import verify_model

    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()] if args.dtype else None
    report = verify_model(args.model_dir, reference=args.reference, dtypes=dtypes, report_path=args.report)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if not report["ok"]:
        print(f"qwen3-rerank: error: verification failed: {report['summary']}", file=sys.stderr)
        return 1
    return 0
