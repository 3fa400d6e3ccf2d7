"""A static, self-contained HTML report of one model on one text, for readers without Jupyter.

`workbench report --model NAME --text FILE --out report.html` writes one page with five sections,
each computed on that text by the analysis modules:

1. **cell heatmaps** (Karpathy et al. 2015): per layer, the most active units of the recurrent state
   drawn over the text;
2. **lens trajectory** (logit lens; Belrose et al. 2023, Paulo et al. 2024): what each layer would
   predict at each position;
3. **implicit-attention map** (Zimerman et al. 2024): the last layer written as a causal L x L map;
4. **steering sweep** (Rimsky et al. 2024): a "line ends here" vector built from this text's own
   lines, added at a sweep of multipliers, against the probability of a newline;
5. **activation patching** (Meng et al. 2022; Heimersheim & Nanda 2024): a window of the text with one
   character near its middle substituted, the carried state patched back layer by layer and position
   by position (a heatmap; clicking a cell shows that patched run's prediction), and the correlation
   of attribution patching (Nanda 2023; Kramár et al. 2024) with it.

plotly is embedded once, inline (`include_plotlyjs=True`); the page loads nothing from the network.
"""

from __future__ import annotations

import datetime
import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import EmptyInputError

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["ReportSection", "build_report", "load_text", "report_sections", "write_report"]

SECTION_IDS = ("cells", "lens", "implicit-attention", "steering", "patching")
DEFAULT_MAX_CHARS = 2_000  # characters of the text the report analyses
CELLS_WINDOW = 600  # characters drawn in each cell heatmap (units are ranked over all of them)
LENS_WINDOW = 96  # positions drawn in the lens trajectory
ATTENTION_WINDOW = 160  # positions in the implicit-attention map (an L x L grid)
STEERING_WINDOW = 32  # characters in each steering prompt (equal lengths run as one batch)
PATCHING_WINDOW = 32  # characters of the clean/corrupted pair the patching section sweeps
PATCHING_MIN_GAP = 0.05  # |clean - corrupted| metric below which the raw effect is drawn, not normalized
PATCHING_REPLACEMENTS = "xqzjkXQZ0"  # the substituted character: the first in the vocabulary that differs
MULTIPLIERS = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)  # x the hook's typical norm


@dataclass
class ReportSection:
    """One section of the page: an anchor id, a title, a paragraph, and HTML bodies (figures)."""

    id: str
    title: str
    intro: str
    bodies: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_text(path: str | Path) -> str:
    """The text of `path` (UTF-8); a missing or empty file raises a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"text file {str(file)!r} does not exist (pass --text a UTF-8 text file)")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"text file {str(file)!r} is not UTF-8 text: {error.reason}") from None
    if not text.strip():
        raise EmptyInputError(f"text file {str(file)!r} is empty")
    return text


def _in_vocab(model: HookedModel, text: str) -> tuple[str, int]:
    """`text` with characters outside the vocabulary mapped to the unknown token, and their count."""
    tokenizer = model.tokenizer
    mapped = tokenizer.decode(tokenizer.encode(text, unknown="map"))
    changed = sum(a != b for a, b in zip(text, mapped, strict=False)) + abs(len(text) - len(mapped))
    return mapped, changed


def _figure_html(figure: Any, first: list[bool], **kwargs: Any) -> str:
    """A plotly figure as a <div>; plotly.js goes inline with the first figure only. `kwargs` go to
    `to_html` (`div_id`, `post_script`)."""
    include = first[0]
    first[0] = False
    return figure.to_html(full_html=False, include_plotlyjs=include, include_mathjax=False,
                          config={"displaylogo": False, "responsive": True}, **kwargs)


# ------------------------------------------------------------------------------------- sections
def cells_section(model: HookedModel, text: str, units_per_layer: int = 3) -> ReportSection:
    """Per layer, the `units_per_layer` units of the recurrent state that vary most over `text`."""
    from workbench.analysis.cells import record
    from workbench.analysis.heatmap import heatmap_grid
    from workbench.models.protocol import carried_state

    quantity = carried_state(model, 0)  # LSTM c, S6 state, else h
    if quantity == "state":  # [pos, d, n] states: use the layer output h-like quantity instead
        quantity = "out" if "out" in model.blocks[0].mixer.quantities else quantity
    rec = record(model, text, [quantity])
    bodies = []
    for layer in sorted({layer for layer, _ in rec.values}):  # the recurrent layers (a hybrid's others attend)
        values = rec.values[(layer, quantity)]  # [pos, units]
        values = values.reshape(values.shape[0], -1)
        spread = values.std(axis=0)  # [units]
        units = np.argsort(-spread)[:units_per_layer]
        columns = {
            f"L{layer} {quantity}[{int(u)}]  std {spread[u]:.2f}":
                (values[:, u] - np.median(values[:, u]))[:CELLS_WINDOW]
            for u in units
        }
        grid = heatmap_grid(rec.text[:CELLS_WINDOW], columns, wrap=100)
        bodies.append(f"<h3>layer {layer}</h3>" + str(grid))
    return ReportSection(
        "cells", "Cell heatmaps",
        f"Each character is coloured by one unit's value of <code>{quantity}</code> after reading it "
        "(red above the unit's median, blue below; hover for the value). Per layer, the three units "
        f"that vary most over this text, drawn over its first {CELLS_WINDOW} characters (Karpathy, "
        "Johnson &amp; Fei-Fei 2015, Figs. 2 and 4).",
        bodies,
    )


def lens_section(model: HookedModel, text: str, first: list[bool]) -> ReportSection:
    """Logit-lens trajectory of the first `LENS_WINDOW` characters: entropy and top-1 per layer."""
    from workbench.analysis.lens import LogitLens, prediction_trajectory
    from workbench.analysis.lens.figures import trajectory_figure

    window = text[:LENS_WINDOW]
    trajectory = prediction_trajectory(LogitLens(model), window)
    figure = trajectory_figure(trajectory, "entropy",
                               title=f"logit lens over the first {len(window)} characters")
    return ReportSection(
        "lens", "Lens trajectory",
        "Each block's output decoded with the model's own final norm and unembedding (the logit "
        "lens; Belrose et al. 2023, applied to RNNs as in Paulo et al. 2024). A cell is one layer "
        "at one position: its label is the character that layer would predict next, its colour the "
        "entropy of that prediction in bits; hover for the top five.",
        [_figure_html(figure, first)],
    )


def implicit_attention_section(model: HookedModel, text: str, first: list[bool]) -> ReportSection:
    """The last layer's implicit-attention map (channel mean) over the first characters."""
    import plotly.graph_objects as go

    from workbench.analysis.implicit_attention import implicit_attention

    window = text[:ATTENTION_WINDOW]
    layer = len(model.blocks) - 1
    attention = implicit_attention(model, window, layer=layer, aggregate="mean")
    maps = attention.maps[0].detach().float().cpu().numpy()  # [query, key]
    labels = [f"{i}:{c!r}" for i, c in enumerate(window)]
    figure = go.Figure(go.Heatmap(
        z=np.where(np.tril(np.ones_like(maps, dtype=bool)), maps, np.nan), x=labels, y=labels,
        colorscale="RdBu", zmid=0.0, colorbar={"title": "Ã"},
        hovertemplate="query %{y}<br>key %{x}<br>Ã %{z:.3g}<extra></extra>",
    ))
    figure.update_layout(
        title=f"implicit attention of layer {layer} ({attention.family}, mean over channels)",
        xaxis={"title": "key position", "showticklabels": False, "showgrid": False},
        yaxis={"title": "query position", "autorange": "reversed", "showticklabels": False,
               "showgrid": False},
        plot_bgcolor="white",
        height=620, width=680,
    )
    return ReportSection(
        "implicit-attention", "Implicit-attention map",
        "The recurrent layer rewritten as y = Ã v + bias, a causal matrix from every earlier "
        "position (key) to every later one (query), averaged over channels (Zimerman, Ali &amp; "
        f"Wolf 2024). It reproduces the layer's output exactly: largest per-channel error of this "
        f"text's map {_reproduction_error(model, window, layer):.1e}.",
        [_figure_html(figure, first)],
    )


def _reproduction_error(model: HookedModel, window: str, layer: int) -> float:
    """Largest |Ã v + bias - y| over a few channels, the check that the map is the layer."""
    from workbench.analysis.implicit_attention import implicit_attention

    return implicit_attention(model, window, layer=layer, channels=[0, 1, 2, 3]).max_error()


def steering_prompts(text: str, width: int = STEERING_WINDOW) -> tuple[list[str], list[str]]:
    """Windows of `text` ending at the last character of a line (positive: a newline comes next)
    and windows ending mid-line before a letter (negative), each `width` characters long."""
    positive, negative = [], []
    for t in range(width - 1, len(text) - 1):
        window = text[t - width + 1 : t + 1]
        if text[t + 1] == "\n" and text[t] != "\n":
            positive.append(window)
        elif text[t + 1].isalpha() and text[t] != "\n" and t % 7 == 0:
            negative.append(window)
    return positive, negative


def steering_section(model: HookedModel, text: str, first: list[bool]) -> ReportSection:
    """A line-end steering vector from half of this text's lines, swept on the other half."""
    import plotly.graph_objects as go

    from workbench.analysis.steering.evaluation import multiplier_sweep
    from workbench.analysis.steering.vectors import contrastive_vector

    positive, negative = steering_prompts(text)
    if len(positive) < 4 or len(negative) < 4:
        raise EmptyInputError(
            f"the steering sweep needs at least 4 lines of {STEERING_WINDOW}+ characters; this text "
            f"gives {len(positive)} line ends and {len(negative)} mid-line windows"
        )
    fit_pos, fit_neg = positive[0::2], negative[0::2]
    held_out = negative[1::2][:24]  # mid-line prompts: a newline is unlikely until steered
    vector = contrastive_vector(model, fit_pos, fit_neg, "resid_post", paired=False,
                                normalize="relative", label="line ends here")
    sweep = multiplier_sweep(model, vector, MULTIPLIERS, held_out, "\n", relative=True,
                             label="line ends here")
    table = sweep.table.sort_values("multiplier")
    figure = go.Figure(go.Scatter(
        x=table.multiplier, y=table.behaviour, mode="lines+markers", name="P(newline next)",
        error_y={"type": "data", "array": table.behaviour_sem},
    ))
    figure.update_layout(
        title=f"steering {vector.hook} along 'line ends here' ({len(held_out)} held-out prompts)",
        xaxis_title="multiplier (x typical activation norm)", yaxis_title="P(newline next)",
        height=380,
    )
    return ReportSection(
        "steering", "Steering sweep",
        f"Contrastive activation addition (Rimsky et al. 2024): the mean of <code>{vector.hook}</code> "
        f"after {len(fit_pos)} windows of this text that end a line, minus after {len(fit_neg)} that "
        "stop mid-word, added at every position at each multiplier. On held-out mid-line windows the "
        "curve is the probability of a newline next; its rank correlation with the multiplier is "
        f"{sweep.spearman():+.2f}.",
        [_figure_html(figure, first)],
    )


def patching_corruption(model: HookedModel, window: str) -> tuple[str, int]:
    """`window` with one letter or digit near its middle replaced by the first character of
    `PATCHING_REPLACEMENTS` that the vocabulary holds and that differs from it: (corrupted, position)."""
    if len(window) < 4:
        raise EmptyInputError(f"activation patching needs at least 4 characters; this text has {len(window)}")
    middle = len(window) // 2
    order = sorted(range(len(window) - 1), key=lambda i: (abs(i - middle), i))  # never the read-out
    position = next((i for i in order if window[i].isalnum()), middle)
    for replacement in PATCHING_REPLACEMENTS:
        if replacement == window[position]:
            continue
        try:
            model.to_tokens(replacement)
        except Exception:  # not in this vocabulary
            continue
        return window[:position] + replacement + window[position + 1:], position
    raise ValueError(f"none of {PATCHING_REPLACEMENTS!r} is in the model's vocabulary: no corruption to build")


def patching_metric(model: HookedModel, clean: Any, corrupted: Any) -> Any:
    """logit(clean's top next token) − logit(corrupted's top one) at the last position; the clean
    runner-up stands in where both runs agree on the top one."""
    import torch

    from workbench.analysis.patching import logit_difference

    with torch.no_grad():
        clean_last, corrupted_last = model(clean)[0, -1], model(corrupted)[0, -1]  # [vocab] each
    answer = int(clean_last.argmax())
    other = int(corrupted_last.argmax())
    if other == answer:
        other = int(clean_last.topk(2).indices[1])
    return logit_difference(answer, other)


def patched_last_logits(model: HookedModel, pair: Any, hook: str) -> dict[int, Any]:
    """layer -> the corrupted run's last-position logits [pos, vocab] with `hook` patched
    from the clean run at one position per row: row p equals `patched_logits(..., positions=[p],
    layer=layer)[0, -1]`, all positions of a layer in one batched forward pass."""
    import torch

    from workbench.analysis.patching import PositionPatch, resolve_sites

    sites = resolve_sites(model, hook)
    names = [site.name for site in sites]
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.clean, names_filter=names)
    length = pair.clean.shape[-1]
    rows = pair.corrupted[:1].repeat(length, 1)  # [pos copies, pos]
    mask = torch.eye(length, dtype=torch.bool)  # row p patches position p
    out = {}
    for site in sites:
        patch = PositionPatch(cache[site.name][:1].detach(), mask)
        with torch.no_grad():
            out[site.layer] = model.run_with_hooks(rows, fwd_hooks=[(site.name, patch)])[:, -1]
    return out


def patching_section(model: HookedModel, text: str, first: list[bool]) -> ReportSection:
    """The carried state patched from a clean window into one with a character substituted, with
    each patched run's prediction a click away, and the AtP estimate's correlation with it."""
    import json

    from workbench.analysis.patching import (
        Pair,
        activation_patching,
        attribution_patching,
        patching_heatmap,
        top_predictions,
    )
    from workbench.models.protocol import carried_state

    window = text[:PATCHING_WINDOW]
    corrupted_text, where = patching_corruption(model, window)
    pair = Pair(model.to_tokens(window), model.to_tokens(corrupted_text))
    metric = patching_metric(model, pair.clean, pair.corrupted)
    state = carried_state(model, 0)
    table = activation_patching(model, pair, metric, hooks=state)
    estimate = attribution_patching(model, pair, metric, hooks=state)
    merged = table.merge(estimate, on=["layer", "position", "hook"], suffixes=("", "_atp"))
    effects, estimates = merged["effect"].to_numpy(), merged["effect_atp"].to_numpy()
    correlation = (float(np.corrcoef(effects, estimates)[0, 1])
                   if effects.std() > 0 and estimates.std() > 0 else float("nan"))
    labels = [f"{i}:{c}" for i, c in enumerate(model.to_str_tokens(pair.clean))]
    predictions = {}
    for layer, last in patched_last_logits(model, pair, state).items():  # last: [pos, vocab]
        for position, logits in enumerate(last):
            top = top_predictions(model, logits, 3)
            shown = ", ".join(f"{t!r} {p:.2f}" for t, p in zip(top.token, top.prob, strict=True))
            predictions[f"{layer}|{labels[position]}"] = (
                f"layer {layer}, patched at position {labels[position]}: next token {shown}")
    attrs = table.attrs
    gap = attrs["clean_metric"] - attrs["corrupted_metric"]
    value = "normalized_effect" if abs(gap) >= PATCHING_MIN_GAP else "effect"  # else noise over a tiny gap
    figure = patching_heatmap(table, value=value, labels=labels,
                              title=f"patching {table.name.iloc[0].replace('blocks.0.', 'blocks.L.')} "
                                    f"from clean into corrupted ({value.replace('_', ' ')})")
    payload = json.dumps(predictions).replace("</", "<\\/")  # no '</script>' inside the script
    script = (
        "var gd = document.getElementById('{plot_id}');"
        f"var predictions = {payload};"
        "gd.on('plotly_click', function (event) {"
        "  var p = event.points[0]; var shown = predictions[p.y + '|' + p.x];"
        "  if (shown) { document.getElementById('patching-prediction').textContent = shown; }"
        "});"
    )
    body = _figure_html(figure, first, div_id="patching-heatmap", post_script=script)
    scale = ("1 restores the clean metric" if value == "normalized_effect" else
             f"the corruption moves the metric by only {gap:.2g} here, so each cell shows the change in the "
             "metric itself rather than the fraction of that gap restored")
    r = "n/a (a constant column)" if correlation != correlation else f"{correlation:+.2f}"
    return ReportSection(
        "patching", "Activation patching",
        "Activation patching (Meng et al. 2022; Heimersheim &amp; Nanda 2024): the clean run reads "
        f"<code>{html.escape(repr(window))}</code>, the corrupted one <code>{html.escape(repr(corrupted_text))}"
        f"</code> (position {where} substituted). The metric is <code>{html.escape(repr(metric))}</code> "
        f"at the last position: {attrs['clean_metric']:.4g} clean, {attrs['corrupted_metric']:.4g} "
        f"corrupted. Each cell copies the clean run's carried state <code>{html.escape(state)}</code> at "
        f"one layer and position into the corrupted run; {scale}. Click a cell to see "
        "that patched run's next-token prediction. Attribution patching (AtP; Nanda 2023, Kramár et al. "
        f"2024) estimates the same {len(merged)} effects from one backward pass; its Pearson correlation "
        f"with activation patching is <span id='patching-atp-correlation'>{r}</span>.",
        [body, "<pre id='patching-prediction' class='source'>click a heatmap cell to see that patched "
               "run's prediction</pre>"],
    )


SECTIONS: tuple[Callable[..., ReportSection], ...] = (
    cells_section, lens_section, implicit_attention_section, steering_section, patching_section,
)


def report_sections(model: HookedModel, text: str, progress: bool = False) -> list[ReportSection]:
    """Compute every section; a section that cannot be drawn for this text says why in its place."""
    from tqdm.auto import tqdm

    first = [True]
    sections = []
    titles = dict(zip(SECTION_IDS, ("Cell heatmaps", "Lens trajectory", "Implicit-attention map",
                                    "Steering sweep", "Activation patching"), strict=True))
    bar = tqdm(SECTIONS, desc="report", disable=not progress, unit="section")
    for make, section_id in zip(bar, SECTION_IDS, strict=True):
        bar.set_postfix_str(section_id)
        start = time.perf_counter()
        try:
            section = make(model, text) if make is cells_section else make(model, text, first)
        except (EmptyInputError, ValueError) as error:
            section = ReportSection(section_id, titles[section_id],
                                    f"<b>Not drawn for this text:</b> {html.escape(str(error))}")
        section.seconds = time.perf_counter() - start
        sections.append(section)
    return sections


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } nav a { margin-right: 1em; }
section { border-top: 1px solid #ddd; margin-top: 2em; padding-top: 0.5em; }
.meta { color: #666; font-size: 0.9em; } code { background: #f4f4f4; padding: 0 0.2em; }
pre.source { background: #f8f8f8; padding: 0.6em; max-height: 14em; overflow: auto; }
"""


def build_report(model: HookedModel, text: str, *, name: str = "", source: str = "",
                 max_chars: int = DEFAULT_MAX_CHARS, progress: bool = False) -> str:
    """The report page for `model` on (the first `max_chars` characters of) `text`, as HTML."""
    if not text.strip():
        raise EmptyInputError("the text is empty")
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    started = time.perf_counter()
    clipped = text[:max_chars]
    analysed, mapped = _in_vocab(model, clipped)
    sections = report_sections(model, analysed, progress=progress)
    cfg = model.cfg
    notes = [f"{len(analysed):,} characters analysed"]
    if len(text) > max_chars:
        notes.append(f"of {len(text):,} (the first {max_chars:,})")
    if mapped:
        notes.append(f"{mapped} characters outside the vocabulary shown as the unknown token")
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        body.append(
            f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2><p>{s.intro}</p>'
            + "".join(f'<div class="figure">{b}</div>' for b in s.bodies)
            + f'<p class="meta">computed in {s.seconds:.1f} s</p></section>'
        )
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>recurrent-workbench report: {html.escape(name or cfg.family)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>recurrent-workbench report</h1>"
        f"<p class='meta'>model <b>{html.escape(name or '(unnamed)')}</b>: {cfg.family}, "
        f"{cfg.n_layers} layers, d_model {cfg.d_model} · text <b>{html.escape(source or '(given)')}"
        f"</b>: {'; '.join(notes)} · built {stamp} in {time.perf_counter() - started:.1f} s</p>"
        f"<nav>{nav}</nav>"
        f"<details><summary>the text</summary><pre class='source'>{html.escape(analysed)}</pre>"
        "</details>"
        + "".join(body)
        + "</body></html>\n"
    )


def write_report(model_name: str, text_path: str | Path, out: str | Path, *,
                 max_chars: int = DEFAULT_MAX_CHARS, progress: bool = True) -> Path:
    """Load `model_name` (embedded name or checkpoint directory), read `text_path`, write `out`."""
    from workbench.registry import load

    text = load_text(text_path)  # check the cheap input first
    model = load(model_name)
    page = build_report(model, text, name=str(model_name), source=Path(text_path).name,
                        max_chars=max_chars, progress=progress)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
