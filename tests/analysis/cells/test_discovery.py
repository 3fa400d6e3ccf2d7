"""Discovery finds planted cells (Karpathy et al. 2015 Fig. 2 cells, set by hand) with held-out scores."""

import random

import numpy as np
import pytest

from workbench.analysis.cells import (
    PLANTED_CELLS,
    activating_spans,
    compute_features,
    discover_cells,
    planted_lstm,
    probe_features,
    record,
    regex_feature,
    unit_profile,
)
from workbench.analysis.cells.features import lexical_state


def synthetic_code(n_lines: int = 120, seed: int = 0) -> str:
    """Python-looking lines with nested brackets, strings (which may hold brackets) and indents."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        depth = rng.randint(0, 3)
        args = ", ".join(rng.choice(["x", "y1", '"a(b"', "[z]", "{k: v}"]) for _ in range(rng.randint(1, 3)))
        body = "f(" * depth + args + ")" * depth
        lines.append(" " * (4 * rng.randint(0, 2)) + rng.choice(["v = ", "return ", ""]) + body)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def planted():
    model = planted_lstm(d_hidden=24, seed=1)
    text = synthetic_code()
    return model, record(model, text, ["c", "h", "f"])


def test_planted_cells_rank_first_with_held_out_scores_near_one(planted):
    _, rec = planted
    found = discover_cells(rec, list(PLANTED_CELLS) + ["is_digit"])
    for feature, unit in PLANTED_CELLS.items():
        top = found.top(feature, 3)
        assert (int(top.layer[0]), str(top.quantity[0]), int(top.unit[0])) in {
            (0, "c", unit), (0, "h", unit)}, (feature, top)
        assert top.score[0] > 0.97, (feature, top)


def test_the_bracket_cell_is_not_ranked_highly_for_an_unrelated_feature(planted):
    _, rec = planted
    noise = np.random.default_rng(0).integers(0, 2, len(rec)).astype(float)
    found = discover_cells(rec, {"noise": noise, "is_whitespace": "is_whitespace"})
    for feature in ("noise", "is_whitespace"):
        rows = found.table[(found.table.feature == feature) & (found.table.unit == 0)
                           & (found.table.quantity == "c")]
        assert int(rows["rank"].iloc[0]) > 3
    noise_row = found.table[(found.table.feature == "noise") & (found.table.unit == 0)
                            & (found.table.quantity == "c")]
    assert abs(float(noise_row.score.iloc[0])) < 0.1
    assert found.top("noise").score.abs().max() < 0.15  # no unit explains noise held-out


def test_best_gives_one_row_per_feature_and_scores_are_held_out(planted):
    _, rec = planted
    found = discover_cells(rec, ["bracket_depth", "position_in_line"], train_fraction=0.3)
    best = found.best()
    assert sorted(best.feature) == ["bracket_depth", "position_in_line"]
    assert found.n_positions == len(rec)
    # a feature that exists only in the training part has no held-out score
    only_train = np.zeros(len(rec))
    only_train[: len(rec) // 10] = 1.0
    found = discover_cells(rec, {"early": only_train}, keys=[(0, "c")])
    assert found.top("early").score.isna().all()


def test_sparse_probes_score_planted_features_held_out(planted):
    _, rec = planted
    probes = probe_features(rec, ["bracket_depth", "in_string", "is_alpha"], keys=[(0, "c")])
    by = {r.feature: r for r in probes.itertuples()}
    assert by["bracket_depth"].metric == "r2" and by["bracket_depth"].test_score > 0.95
    assert 0 in by["bracket_depth"].units
    assert by["in_string"].metric == "roc_auc" and by["in_string"].test_score > 0.95


def test_reverse_profile_and_threshold_spans_find_what_a_unit_tracks(planted):
    _, rec = planted
    profile = unit_profile(rec, 0, "c", PLANTED_CELLS["in_string"])
    assert profile.feature[0] == "in_string" and profile.r[0] > 0.9
    spans = activating_spans(rec, 0, "c", PLANTED_CELLS["in_string"], threshold=0.5)
    assert spans and all(s.text.startswith('"') for s in spans)
    strings = lexical_state(rec.text).in_string
    assert all(strings[s.start : s.stop].all() for s in spans)


def test_user_features_callables_arrays_and_regexes():
    text = "abc = 12 # hi\n"
    feats = compute_features(text, {"digits": regex_feature(r"\d+"), "ones": np.ones(len(text)),
                                     "col": "position_in_line", "len": lambda s: [len(s)] * len(s)})
    assert feats["digits"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert feats["col"][-1] == 0 and feats["col"][0] == 1
    with pytest.raises(KeyError, match="did you mean 'bracket_depth'"):
        compute_features(text, ["bracket_dept"])
    with pytest.raises(ValueError, match="gave 2 values for 14"):
        compute_features(text, {"bad": [1, 2]})
