"""Attribution (rollout, gradient-weighted maps of Ali et al. 2024, gradient × input) and the
perturbation harness, on tiny models."""

import pytest
import torch

from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.attribution import (
    METHODS,
    attribute,
    gradient_rollout,
    layer_maps,
    output_gradients,
    rollout,
)
from workbench.analysis.implicit_attention.evaluation import (
    benchmark_naive,
    exactness_report,
    long_range_closers,
    paired_gap_interval,
    perturbation_test,
)
from workbench.analysis.implicit_attention.figures import map_figure, perturbation_figure, row_heatmap
from workbench.models import HookedRecurrentLM, RecurrentConfig


def make(family: str, seed: int = 0) -> HookedRecurrentLM:
    torch.manual_seed(seed)
    return HookedRecurrentLM(RecurrentConfig(family=family, n_layers=2, d_model=16, d_hidden=16,
                                             d_vocab=11, d_state=4))


def test_rollout_of_identity_maps_is_identity_and_rows_sum_to_one():
    eye = torch.eye(5)[None]
    assert torch.allclose(rollout([eye, eye]), eye)
    maps = [torch.rand(1, 5, 5).tril() for _ in range(3)]
    assert torch.allclose(rollout(maps).sum(-1), torch.ones(1, 5))
    assert torch.allclose(gradient_rollout([torch.zeros(1, 5, 5)]), eye)


def test_gradient_weighted_map_is_gradient_times_map_times_value():
    """∂target/∂Ã_tj = g_t v_j: the closed form equals autograd through y = Ã v."""
    model = make("s6")
    tokens = torch.randint(0, 11, (1, 12))
    target = torch.tensor([3])
    grads, _, _ = output_gradients(model, tokens, 11, target, [0, 1])
    weighted = layer_maps(model, tokens, gradients=grads, layers=[1])[0]  # [1, L, L]
    att = implicit_attention(model, tokens, layer=1)
    out_proj = model.blocks[1].mixer.out_proj.weight.detach()
    maps = att.maps.clone().requires_grad_(True)
    y = (maps @ att.value[..., None])[..., 0] + att.bias  # [1, d, L]: y ⊙ gate
    surrogate = (grads[1] * (y.transpose(1, 2) @ out_proj.T)).sum()  # linear in hook_out
    (grad_maps,) = torch.autograd.grad(surrogate, maps)
    expected = (grad_maps * att.maps).clamp_min(0).mean(1)
    assert torch.allclose(weighted, expected, atol=1e-6)


@pytest.mark.parametrize("family", ["s6", "minlstm", "lstm"])
def test_every_method_scores_each_position_up_to_the_query(family):
    model = make(family)
    tokens = torch.randint(0, 11, (3, 20))
    for method in METHODS:
        if method.endswith("_paper") and family != "s6":
            continue
        scores = attribute(model, tokens, method, query=14)
        assert scores.shape == (3, 20) and torch.isfinite(scores[:, :15]).all(), method


def test_perturbation_harness_and_its_figure():
    model = make("mingru")
    text = torch.randint(0, 11, (400,), generator=torch.Generator().manual_seed(0))
    result = perturbation_test(model, text, methods=["attr", "random"], n_examples=6, context=16,
                               steps=(0, 1, 4))
    assert set(result.table.method) == {"attr", "random"}
    assert len(result.curves) == 2 * 2 * 3
    zero = result.curves[result.curves.removed == 0].delta_loss
    assert torch.allclose(torch.tensor(zero.to_numpy()), torch.zeros(len(zero), dtype=torch.float64))
    assert len(perturbation_figure(result).data) == 4
    masked = perturbation_test(model, text, methods=["random"], n_examples=4, context=16,
                               steps=(0, 2), perturbation="mask")
    assert masked.perturbation == "mask"
    with pytest.raises(ValueError, match="needs at least"):
        perturbation_test(model, text[:20], n_examples=2, context=16)


def test_recency_ranks_the_nearest_position_first_and_nothing_after_the_query():
    scores = attribute(make("s6"), torch.randint(0, 11, (2, 10)), "recency", query=6)
    assert torch.argsort(scores[0, :7], descending=True).tolist() == [6, 5, 4, 3, 2, 1, 0]
    assert torch.isinf(scores[:, 7:]).all() and (scores[:, 7:] < 0).all()


def test_long_range_closers_find_far_openers_and_forget_at_a_mismatch():
    text = "f(a, b)\nx = g(1, [2, 3], {4: 5})\n] (y)"
    queries, openers = long_range_closers(text, 6, 40)
    assert openers.tolist() == [13] and queries.tolist() == [30]  # g(...) spans 18; the rest span 5
    queries, openers = long_range_closers(text, 1, 40)
    assert [text[q + 1] for q in queries] == [")", "]", "}", ")", ")"]  # the stray ']' matched nothing
    assert [text[o] for o in openers] == ["(", "[", "{", "(", "("]
    with pytest.raises(ValueError, match="min_distance"):
        long_range_closers(text, 5, 2)


def test_perturbation_at_given_windows_ranks_a_relevant_token_and_pairs_methods():
    model = make("mingru")
    text = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(1))
    ends = [40, 100, 150, 220]
    relevant = [p - 3 for p in ends]  # three before the query: recency ranks it 3rd (rank 3)
    result = perturbation_test(model, text, methods=["recency", "random", "attr"], context=16,
                               steps=(0, 1, 2), ends=ends, relevant=relevant)
    assert result.n_examples == 4 and result.ends.tolist() == ends
    assert result.relevant_ranks["recency"].tolist() == [3, 3, 3, 3]
    assert result.relevant_delta.shape == (4,)
    # the per-window gaps average to the table's gap
    table = result.table.set_index("method")
    for method in ("recency", "attr"):
        assert result.example_gaps[method].mean() == pytest.approx(table.gap[method], abs=1e-9)
    diff, low, high = paired_gap_interval(result, "attr", "recency")
    assert low <= diff <= high and diff == pytest.approx(table.gap["attr"] - table.gap["recency"], abs=1e-9)
    with pytest.raises(KeyError, match="was not in this perturbation test"):
        paired_gap_interval(result, "rollout", "recency")
    with pytest.raises(ValueError, match="ends must be"):
        perturbation_test(model, text, methods=["random"], context=16, steps=(0, 1), ends=[5])
    with pytest.raises(ValueError, match="must lie in its window"):
        perturbation_test(model, text, methods=["random"], context=16, steps=(0, 1), ends=[40],
                          relevant=[10])


def test_exactness_report_and_benchmark_tables():
    assert len(exactness_report(make("minlstm"), torch.randint(0, 11, (1, 12)), jacobian_positions=4)) == 2
    report = exactness_report(make("s6"), torch.randint(0, 11, (1, 40)), jacobian_positions=10)
    assert len(report) == 4 and (report.max_error < 1e-5).all() and (report.upper_triangle_max == 0).all()
    assert (report.jacobian_error < 1e-5).all() and (report.prefix_error < 1e-5).all()
    bench = benchmark_naive(lengths=(16, 32), channels=2, n=2, naive_max_length=16, repeats=1)
    assert bench.naive_extrapolated.tolist() == [False, True] and (bench.ratio > 0).all()
    for kernel in ("scalar", "wkv"):
        bench = benchmark_naive(lengths=(8, 16, 32), channels=2, n=2, naive_max_length=16, repeats=1,
                                kernel=kernel)
        assert bench.naive_extrapolated.tolist() == [False, False, True] and (bench.ratio > 0).all()


def test_figures_label_characters_and_blank_the_upper_triangle():
    model = make("s6")
    att = implicit_attention(model, torch.randint(0, 11, (1, 6)), layer=0)
    fig = map_figure(att, list("ab\n d "), channel=1)
    assert list(fig.data[0].x) == ["0:a", "1:b", "2:↵", "3:␣", "4:d", "5:␣"]
    z = fig.data[0].z
    assert all(z[0][j] != z[0][j] for j in range(1, 6))  # NaN above the diagonal
    assert "channel 1" in fig.layout.title.text
    html = row_heatmap("ab\n d ", att.maps[0, 1, 3], 3).html
    assert html.count('class="wb-c"') == 6 and 'data-query="1"' in html
