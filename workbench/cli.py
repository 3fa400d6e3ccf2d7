"""The `workbench` command: train, list and evaluate models from a shell.

Each subcommand is one `add_<name>_command(subparsers)` function that adds its parser and sets
`run`, the function that executes it; `SUBCOMMANDS` lists them. To add a subcommand (`tour`,
`report`, ...), write such a function and append it to `SUBCOMMANDS`. Heavy imports happen
inside the `run` functions, so `workbench --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from workbench.errors import CheckpointError, CorpusNotFoundError

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

Subparsers = Any  # argparse._SubParsersAction, which argparse does not export
AddCommand = Callable[[Subparsers], None]


# --------------------------------------------------------------------------------------- train
def add_train_command(subparsers: Subparsers) -> None:
    """`workbench train`: train a character-level model and write its checkpoint."""
    from workbench.training.train import TRAIN_OPTIONS

    parser = subparsers.add_parser(
        "train",
        help="train a character-level recurrent LM",
        description="Train a character-level recurrent language model (truncated BPTT) and write "
        "a checkpoint directory (safetensors + config.json + vocab.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for option in TRAIN_OPTIONS:
        parser.add_argument(
            option.flag, dest=option.name, type=option.type, default=option.default, help=option.help
        )
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this step (resumable)")
    parser.add_argument("--corpus-root", default=None, help="another corpus source directory/tarball")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from workbench.training.checkpoint import read_checkpoint
    from workbench.training.train import TRAIN_OPTIONS, TrainConfig, train

    config = TrainConfig(
        **{option.name: getattr(args, option.name) for option in TRAIN_OPTIONS},
        resume=args.resume,
        overwrite=args.overwrite,
        stop_at=args.stop_at,
        corpus_root=args.corpus_root,
        progress=not args.no_progress,
    )
    out = train(config)
    checkpoint = read_checkpoint(out)
    metrics = {k: v for k, v in checkpoint.metrics.items() if k != "history"}
    print(f"checkpoint: {out}")
    print(f"steps: {checkpoint.provenance.get('steps')}  metrics: {json.dumps(metrics)}")
    return 0


# --------------------------------------------------------------------------------------- list
def add_list_command(subparsers: Subparsers) -> None:
    """`workbench list`: the embedded models, with their test bpc and reproduce command."""
    parser = subparsers.add_parser("list", help="list the embedded models")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    from workbench.registry import list_models

    rows = list_models()
    print(json.dumps(list(rows), indent=2) if args.json else str(rows))
    return 0


# --------------------------------------------------------------------------------------- eval
def add_eval_command(subparsers: Subparsers) -> None:
    """`workbench eval`: bits per character of a model on a corpus split."""
    parser = subparsers.add_parser(
        "eval",
        help="bits per character of a model on a corpus split",
        description="Evaluate a checkpoint (directory or embedded name) in bits per character, on "
        "the corpus and byte cap it was trained with unless told otherwise.",
    )
    parser.add_argument("model", help="embedded model name or checkpoint directory")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--corpus", default=None, help="corpus (default: the training corpus)")
    parser.add_argument("--max-bytes", type=int, default=None, help="corpus byte cap (default: as trained)")
    parser.add_argument("--max-chars", type=int, default=None, help="evaluate the first N characters")
    parser.add_argument("--batch-size", type=int, default=16, help="parallel streams")
    parser.add_argument("--seq-len", type=int, default=256, help="characters per window")
    parser.add_argument("--path", default="fused", choices=("fused", "reference"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from workbench.data.corpora import load_corpus
    from workbench.registry import load
    from workbench.threads import torch_threads
    from workbench.training.train import evaluate_bpc

    model = load(args.model, path=args.path, device=args.device)
    provenance = model.checkpoint.provenance
    corpus_name = args.corpus or provenance.get("corpus") or "python-stdlib"
    max_bytes = args.max_bytes if args.max_bytes is not None else provenance.get("max_bytes")
    if args.corpus and args.corpus != provenance.get("corpus") and args.max_bytes is None:
        max_bytes = None
    corpus = load_corpus(corpus_name, max_bytes=max_bytes)
    text = corpus.split(args.split)
    with torch_threads(args.threads):
        bpc = evaluate_bpc(
            model, model.tokenizer, text, batch_size=args.batch_size, seq_len=args.seq_len,
            max_chars=args.max_chars, progress=True,
        )  # fmt: skip
    n_chars = min(len(text), args.max_chars or len(text))
    cap = f", max_bytes={max_bytes:,}" if max_bytes else ""
    print(f"{args.split} bpc: {bpc:.4f} on {n_chars:,} characters of {corpus_name}{cap}")
    recorded = provenance.get("corpus_fingerprint")
    if corpus_name == provenance.get("corpus") and recorded and recorded != corpus.fingerprint:
        print(
            f"note: this machine's {corpus_name} corpus differs from the one the model was trained "
            f"on ({provenance.get('corpus_source')}), e.g. another Python version",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------------------- main

# ---------------------------------------------------------------------------------------- tour
def add_tour_command(subparsers: Subparsers) -> None:
    """`workbench tour`: run the tour notebook on the embedded default model."""
    parser = subparsers.add_parser(
        "tour",
        help="run the tour notebook headless (or open it in JupyterLab with --lab)",
        description="Execute notebooks/00_tour.ipynb top to bottom on the embedded default model "
        "and write the executed notebook and an HTML page of it; --lab opens it in JupyterLab.",
    )
    parser.add_argument("--out", default="tour-output", help="folder for the executed notebook")
    parser.add_argument("--lab", action="store_true", help="open the tour in JupyterLab instead")
    parser.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell")
    parser.set_defaults(run=run_tour)


def run_tour(args: argparse.Namespace) -> int:
    from workbench.notebook_runner import notebooks_dir, run_notebook

    tour = notebooks_dir() / "00_tour.ipynb"
    if args.lab:
        import subprocess

        return subprocess.call([sys.executable, "-m", "jupyter", "lab", str(tour)])
    print(f"running {tour} headless ...", flush=True)
    result = run_notebook(tour, args.out, timeout=args.timeout, progress=True)
    print(f"tour ran in {result.seconds:.0f} s: {result.executed}")
    if result.html is not None:
        print(f"open {result.html} in a browser to read it, or run `workbench tour --lab`")
    return 0


# -------------------------------------------------------------------------------------- report
def add_report_command(subparsers: Subparsers) -> None:
    """`workbench report`: one self-contained offline HTML page of a model on a text."""
    from workbench.report import DEFAULT_MAX_CHARS

    parser = subparsers.add_parser(
        "report",
        help="write a static HTML report of a model on a text",
        description="Write one self-contained HTML page (plotly inline, no network) with the cell "
        "heatmaps, lens trajectory, implicit-attention map, steering sweep and activation patching of a "
        "model on a text.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="embedded model name or checkpoint directory")
    parser.add_argument("--text", required=True, help="UTF-8 text file to analyse")
    parser.add_argument("--out", default="report.html", help="HTML file to write")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                        help="analyse the first N characters of the text")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from workbench.report import write_report

    report_file = write_report(args.model, args.text, args.out, max_chars=args.max_chars,
                               progress=not args.no_progress)
    print(f"report: {report_file} ({report_file.stat().st_size / 1e6:.1f} MB, opens offline in any browser)")
    return 0


# -------------------------------------------------------------------------------------- record
def add_record_command(subparsers: Subparsers) -> None:
    """`workbench record`: stream a corpus through a model into a sharded activation store."""
    parser = subparsers.add_parser(
        "record",
        help="record hooks over a corpus into a sharded activation store on disk",
        description="Stream text files through a model with the state carried, writing the chosen hooks "
        "to sharded safetensors with a JSON manifest (and on-the-fly reductions). Rerunning the same "
        "command after an interruption records only the missing shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="embedded model name or checkpoint directory")
    parser.add_argument("corpus", nargs="+", help="UTF-8 text files, one document each")
    parser.add_argument("--out", required=True, help="the store's directory")
    parser.add_argument("--hooks", required=True, nargs="+", help="hook names, e.g. blocks.1.mixer.hook_c")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--segment-tokens", type=int, default=16_384, help="the state resets every N tokens")
    parser.add_argument("--segments-per-shard", type=int, default=8, help="segments per shard (batch rows)")
    parser.add_argument("--reductions", nargs="*", default=[],
                        help="any of moments covariance topk histogram")
    parser.add_argument("--no-raw", action="store_true", help="keep only the reductions")
    parser.add_argument("--topk", type=int, default=16, help="top activations kept per unit")
    parser.add_argument("--histogram", nargs=3, type=float, default=(-1.0, 1.0, 40), metavar=("LOW", "HIGH", "BINS"))
    parser.add_argument("--path", default="fused", choices=("fused", "reference"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace another recording in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--ray", action="store_true", help="one shard per Ray worker (a local cluster by default)")
    parser.add_argument("--address", default=None, help="join the Ray cluster at HOST:PORT (implies --ray; "
                        "default $WORKBENCH_RAY_ADDRESS); --out must be a directory every node sees")
    parser.set_defaults(run=run_record)


def run_record(args: argparse.Namespace) -> int:
    from workbench.registry import load
    from workbench.store import record

    model = load(args.model, path=args.path, device=args.device)
    executor = None
    if args.ray or args.address:
        from workbench.distributed import RayExecutor

        executor = RayExecutor(args.address)
    low, high, bins = args.histogram
    if bins != int(bins):
        raise ValueError(f"--histogram BINS must be a whole number, got {bins}")
    store = record(
        model, args.corpus, args.out, args.hooks, dtype=args.dtype, segment_tokens=args.segment_tokens,
        segments_per_shard=args.segments_per_shard, reductions=tuple(args.reductions), raw=not args.no_raw,
        topk=args.topk, histogram=(low, high, int(bins)), overwrite=args.overwrite, progress=not args.no_progress,
        executor=executor,
    )  # fmt: skip
    print(store)
    return 0


SUBCOMMANDS: list[AddCommand] = [
    add_train_command, add_list_command, add_eval_command, add_tour_command,
    add_report_command, add_record_command,
]

# Errors that are the user's to fix: printed as one line, not a traceback (--traceback shows it).
# Every workbench error subclasses one of these builtins (docs/errors.md); OSError covers a missing
# or unreadable file, MemoryError the memory budget.
_USER_ERRORS = (CheckpointError, CorpusNotFoundError, OSError, KeyError, ValueError, TypeError, MemoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="recurrent-workbench: train, list and evaluate recurrent language models.",
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on error")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `workbench` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except _USER_ERRORS as error:
        if args.traceback:
            raise
        print(f"workbench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
