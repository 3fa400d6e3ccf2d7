"""`workbench report`: one self-contained HTML page of a model on a text, and one-line errors for
bad input. The model is a tiny LSTM trained here for a few seconds (a real checkpoint directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.report import SECTION_IDS, steering_prompts

SAMPLE = Path(__file__).resolve().parents[1] / "workbench" / "report.py"  # real Python source


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide LSTM trained for 40 steps on the Python stdlib corpus."""
    from workbench.training.train import train

    out = tmp_path_factory.mktemp("tiny") / "lstm-tiny"
    train(family="lstm", n_layers=2, d_model=32, steps=40, batch_size=8, seq_len=64, max_bytes=200_000,
          out=out, eval_chars=2_000, test_chars=2_000, threads=1, progress=False)
    return out


@pytest.fixture(scope="session")
def report_page(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    status = main(["report", "--model", str(tiny_checkpoint), "--text", str(SAMPLE), "--out", str(out),
                   "--max-chars", "1200", "--no-progress"])
    assert status == 0
    return out


@pytest.mark.slow
def test_report_has_every_section_drawn_with_plotly_inline(report_page):
    page = report_page.read_text(encoding="utf-8")
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    assert "Not drawn" not in page
    assert page.count('class="wb-c"') > 1000  # the cell heatmaps, one span per character
    assert page.count('class="plotly-graph-div"') == 3  # lens, implicit attention, steering
    assert page.count("plotly.js v") == 1  # plotly.js embedded once
    assert not re.search(r"<script[^>]+src=", page), "the page loads a script from elsewhere"
    assert not re.search(r"<link[^>]+href=\"https?:", page)
    match = re.search(r"largest per-channel error of this text's map ([0-9]+\.[0-9]+e[+-][0-9]+)", page)
    assert match and float(match.group(1)) < 1e-4  # the map reproduces the layer


def test_report_missing_text_file_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    status = main(["report", "--model", str(tiny_checkpoint), "--text", str(tmp_path / "nope.txt"),
                   "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in err
    assert "nope.txt" in err and "does not exist" in err
    assert not (tmp_path / "r.html").exists()


def test_report_unknown_model_is_a_one_line_error(tmp_path, capsys):
    text = tmp_path / "t.py"
    text.write_text("def f(x):\n    return x\n")
    out = str(tmp_path / "r.html")
    status = main(["report", "--model", "no-such-model", "--text", str(text), "--out", out])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in err and "unknown model 'no-such-model'" in err


def test_report_empty_text_file_is_a_one_line_error(tmp_path, capsys):
    text = tmp_path / "empty.txt"
    text.write_text("  \n")
    out = str(tmp_path / "r.html")
    status = main(["report", "--model", "no-such-model", "--text", str(text), "--out", out])
    err = capsys.readouterr().err.strip()
    assert status == 1 and "\n" not in err and "is empty" in err


def test_steering_prompts_split_line_ends_from_mid_line_windows():
    text = "".join(f"value_{i} = compute(alpha, beta)\n" for i in range(20))
    positive, negative = steering_prompts(text, width=8)
    assert positive and negative
    assert all(len(p) == 8 for p in positive + negative)
    ends = {text.index(p) + 8 for p in positive}
    assert all(text[e] == "\n" for e in ends)
