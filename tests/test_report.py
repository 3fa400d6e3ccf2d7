"""`workbench report`: one self-contained HTML page of a model on a text, and one-line errors for
bad input. The model is a tiny LSTM trained here for a few seconds (a real checkpoint directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.report import (
    SECTION_IDS,
    patched_last_logits,
    patching_corruption,
    patching_section,
    steering_prompts,
)

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
    assert page.count('class="plotly-graph-div"') == 4  # lens, implicit attention, steering, patching
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


@pytest.mark.slow
def test_report_patching_section_has_the_heatmap_click_predictions_and_atp(report_page):
    page = report_page.read_text(encoding="utf-8")
    section = page[page.index('<section id="patching">'):]
    section = section[: section.index("</section>")]
    assert 'id="patching-heatmap"' in section and "plotly_click" in section
    assert "substituted)" in section
    match = re.search(r"id='patching-atp-correlation'>([^<]+)<", section)
    assert match, "no AtP correlation"
    assert match.group(1).startswith("n/a") or -1.0 <= float(match.group(1)) <= 1.0
    predictions = re.search(r"var predictions = (\{.*?\});", section)
    assert predictions
    import json

    cells = json.loads(predictions.group(1).replace("<\\/", "</"))
    assert len(cells) == 2 * 32  # 2 layers x the 32-character window
    assert all(v.startswith("layer ") and "next token" in v for v in cells.values())


def test_patching_corruption_substitutes_one_character_near_the_middle():
    from workbench.analysis.planted import planted_steering_lstm

    model = planted_steering_lstm()
    window = "def f(alpha, beta):\n    return 1"
    corrupted, where = patching_corruption(model, window)
    assert len(corrupted) == len(window)
    assert [i for i, (a, b) in enumerate(zip(window, corrupted, strict=True)) if a != b] == [where]
    assert abs(where - len(window) // 2) <= 2 and window[where].isalnum()
    assert patching_corruption(model, "xxxxxx")[0] == "xxxqxx"  # never the same character
    with pytest.raises(Exception, match="at least 4 characters"):
        patching_corruption(model, "ab")


def test_patching_section_where_the_corruption_changes_nothing_draws_raw_effects_and_no_correlation():
    from workbench.analysis.planted import planted_steering_lstm

    # the planted comment cell ignores which letter follows the '#': every patch changes nothing
    section = patching_section(planted_steering_lstm(n_layers=2), "x = 1  # a comment that goes on\n", [True])
    assert section.id == "patching" and len(section.bodies) == 2
    assert "moves the metric by only 0" in section.intro
    assert "id='patching-atp-correlation'>n/a" in section.intro
    assert "plotly_click" in section.bodies[0] and "patching-prediction" in section.bodies[1]


@pytest.mark.parametrize("hook", ["c", "resid_post"])
def test_patched_last_logits_equal_one_patched_run_per_cell(hook):
    import torch

    from workbench.analysis.patching import Pair, patched_logits
    from workbench.analysis.planted import planted_steering_lstm

    model = planted_steering_lstm(n_layers=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # break the planted ties so every cell differs
            p.add_(0.05 * torch.randn_like(p))
    pair = Pair(model.to_tokens("# abc"), model.to_tokens("x abc"))
    batched = patched_last_logits(model, pair, hook)
    assert sorted(batched) == [0, 1]
    for layer, last in batched.items():
        assert last.shape == (5, model.cfg.d_vocab)
        for position in range(5):
            direct = patched_logits(model, pair, hook, positions=[position], layer=layer)[0, -1]
            torch.testing.assert_close(last[position], direct, atol=1e-5, rtol=1e-5)
