"""Held-out cross-entropy of every embedded model beside a finite-horizon n-gram on the same text.

Writes benchmarks/embedded_models.md. The n-grams (Witten-Bell interpolated, as in
workbench.analysis.cells.ngram) are fitted on the model's own training split and scored on the same
held-out slice of the test split as the model, so the columns compare like with like (Karpathy et
al. 2015, Sec. 4.2, compare LSTMs with n-grams the same way).
Run: python benchmarks/eval_embedded.py [--test-chars 50000 --train-chars 3000000]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

import workbench
from workbench.analysis.cells.ngram import NGramModel
from workbench.data.corpora import load_corpus
from workbench.training.train import evaluate_bpc

LN2 = math.log(2.0)
NGRAM_ORDERS = (3, 5, 7, 10)
# Karpathy, Johnson & Fei-Fei 2015, Linux kernel corpus (6,206,996 characters): their best LSTM's
# test cross-entropy and their 20-gram's, in nats per character. Their per-size table is not
# reproduced here; their best model bounds every size from below, so it is the strict reference.
KARPATHY_BEST_LSTM_NATS = 0.84
KARPATHY_20GRAM_NATS = 0.889


def ngram_bpc(model_tokenizer, train_text: str, test_text: str, n: int) -> float:
    """Bits per character of an order-n character model on `test_text` (first character excluded)."""
    vocab = [model_tokenizer.decode([i]) for i in range(len(model_tokenizer))]
    ngram = NGramModel(n, vocab).fit(train_text)
    probs = ngram.correct_probs(test_text)
    return float(-np.log2(np.clip(probs, 1e-12, 1.0)).mean())


def in_vocabulary(tokenizer, text: str) -> str:
    """`text` with characters outside the vocabulary replaced by its unknown token."""
    return tokenizer.decode(tokenizer.encode(text, unknown="map"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-chars", type=int, default=50_000)
    parser.add_argument("--train-chars", type=int, default=3_000_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "embedded_models.md"))
    args = parser.parse_args()
    rows = []
    for row in workbench.list_models():
        model = workbench.load(row["name"])
        tokenizer = model.tokenizer
        document = workbench.registry.resolve(row["name"]) / "config.json"
        max_bytes = json.loads(document.read_text())["provenance"].get("max_bytes")
        corpus = load_corpus(row["corpus"], max_bytes=max_bytes)  # the split the model was tested on
        test_text = in_vocabulary(tokenizer, corpus.test[: args.test_chars])
        train_text = in_vocabulary(tokenizer, corpus.train[: args.train_chars])
        with torch.no_grad():
            model_bpc = evaluate_bpc(model, tokenizer, test_text)
        ngrams = {n: ngram_bpc(tokenizer, train_text, test_text, n) for n in NGRAM_ORDERS}
        rows.append((row, model_bpc, ngrams))
        print(row["name"], f"{model_bpc:.3f}", {n: round(v, 3) for n, v in ngrams.items()}, flush=True)
    lines = [
        "# Embedded models: held-out cross-entropy",
        "",
        f"Test split of each model's corpus (files never trained on), first {args.test_chars:,} "
        "characters; n-grams fitted on the first "
        f"{args.train_chars:,} characters of the training split. Bits per character (bpc); "
        "nats = bpc x ln 2. Produced by `python benchmarks/eval_embedded.py`.",
        "",
        "| model | family | layers x units | parameters | steps | full test split bpc | slice bpc | "
        "slice nats | " + " | ".join(f"{n}-gram bpc" for n in NGRAM_ORDERS) + " |",
        "|---" * (8 + len(NGRAM_ORDERS)) + "|",
    ]
    for row, model_bpc, ngrams in rows:
        lines.append(
            f"| {row['name']} | {row['family']} | {row['n_layers']} x {row['d_hidden']} | "
            f"{row['parameters']:,} | {row['command'].split('--steps ')[1].split()[0]} | "
            f"{row['test_bpc']:.3f} | {model_bpc:.3f} | {model_bpc * LN2:.3f} | "
            + " | ".join(f"{ngrams[n]:.3f}" for n in NGRAM_ORDERS) + " |"
        )
    lines += [
        "",
        "## Against Karpathy, Johnson & Fei-Fei 2015 (Linux kernel)",
        "",
        f"They report a best LSTM at {KARPATHY_BEST_LSTM_NATS} nats per character on their Linux kernel "
        f"test split, against {KARPATHY_20GRAM_NATS} for a 20-gram. Their per-size table is not "
        "reproduced here; their best model is at most their 2 x 512 figure, so it is the strict bar.",
        "",
        "| model | full test split nats | / their best LSTM | slice: model nats | slice: best n-gram nats |",
        "|---|---|---|---|---|",
    ]
    for row, model_bpc, ngrams in rows:
        if row["corpus"] != "linux":
            continue
        nats = row["test_bpc"] * LN2
        lines.append(
            f"| {row['name']} | {nats:.3f} | {nats / KARPATHY_BEST_LSTM_NATS:.2f}x | {model_bpc * LN2:.3f} | "
            f"{min(ngrams.values()) * LN2:.3f} |"
        )
    lines += [
        "",
        "Not like for like: their corpus was 6.2 M characters of a 2015 kernel, ours is 50 MB of the "
        "6.1 kernel split by file (test files are drivers and headers the "
        "model never saw; machine-generated register maps and tables left out), and ours trained for "
        "minutes on one H100 (`benchmarks/train_embedded_gpu.sh`), theirs for many epochs with tuned hyperparameters.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
