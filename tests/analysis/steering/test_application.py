"""Applying steering vectors (Rimsky et al. 2024; Paulo et al. 2024): the planted logit moves by
the predicted amount, edits are causal, both paths agree, generation matches a step-by-step loop,
and a state injected once differs from one added at every position."""

import pytest
import torch

from workbench.analysis.cells import printable_tokenizer
from workbench.analysis.steering import (
    LOGIT_GAIN,
    Steer,
    contrastive_vector,
    generate_steered,
    planted_steering_lstm,
    run_steered,
    steering,
)
from workbench.models import MIXER_FAMILIES, HookedRecurrentLM, RecurrentConfig
from workbench.models.protocol import carried_state

TOK = printable_tokenizer()
POSITIVE = ["x = 1  # set it", "def f():  # a"]
NEGATIVE = ["x = 1  + set it", "def f():  + a"]
TEXT = "for i in range(3):\n    print(i)  # go\n"


@pytest.fixture(scope="module")
def planted():
    return planted_steering_lstm(n_layers=2)


def small(family: str) -> HookedRecurrentLM:
    torch.manual_seed(0)
    m = HookedRecurrentLM(RecurrentConfig(family=family, n_layers=2, d_model=12, d_hidden=10,
                                          d_state=3, d_vocab=len(TOK))).double()
    m.tokenizer = TOK
    return m


def tokens(text: str = TEXT) -> torch.Tensor:
    return TOK.encode(text)[None]  # [1, pos]


def test_residual_steering_moves_the_planted_logit_linearly(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "resid_post", layer=0)
    hash_id = TOK.stoi["#"]
    clean = planted(tokens()).detach()
    for m in (-2.0, -0.5, 0.5, 1.0, 3.0):
        steered = run_steered(planted, tokens(), Steer(v, m)).detach()
        change = steered - clean  # [1, pos, d_vocab]
        # only logit('#') moves, at every position, by gain × m × |v|
        torch.testing.assert_close(change[..., hash_id], torch.full_like(change[..., hash_id],
                                   LOGIT_GAIN * m * v.norm), atol=1e-5, rtol=1e-5)
        change[..., hash_id] = 0
        assert change.abs().max() < 1e-6


def test_multiplier_zero_changes_nothing(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "c", layer=0)
    clean = planted(tokens())
    assert torch.equal(run_steered(planted, tokens(), Steer(v, 0.0)), clean)


def test_state_steering_grows_with_the_multiplier(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "c", layer=0)
    hash_id = TOK.stoi["#"]
    last = [float(run_steered(planted, "x = 1", Steer(v, m, positions=2))[0, -1, hash_id].detach())
            for m in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(last, last[1:], strict=False))


@pytest.mark.parametrize("family", MIXER_FAMILIES)
def test_steering_at_t_leaves_earlier_logits_alone_and_paths_agree(family):
    model = small(family)
    t = 7
    for hook in ("resid_post", carried_state(model)):
        v = contrastive_vector(model, POSITIVE, NEGATIVE, hook, layer=0)
        clean = model(tokens(), path="reference")
        for positions in (t, slice(t, None), [t, t + 3]):
            out = {path: run_steered(model, tokens(), Steer(v, 2.0, positions), path=path)
                   for path in ("reference", "fused")}
            torch.testing.assert_close(out["fused"], out["reference"], atol=1e-10, rtol=1e-10)
            change = (out["reference"] - clean).abs().amax(dim=(0, 2))  # [pos]
            assert torch.all(change[:t] == 0), f"{hook} {positions}: an earlier position changed"
            assert change[t] > 1e-6


def test_state_injected_once_is_carried_and_differs_from_adding_everywhere(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "c", layer=0)
    hash_id = TOK.stoi["#"]
    text = "abcdef\nab"
    once = run_steered(planted, text, Steer(v, 1.0, positions=2))[0, :, hash_id]
    every = run_steered(planted, text, Steer(v, 1.0, positions=slice(2, None)))[0, :, hash_id]
    # once: the cell holds 1 from position 2 until the newline (position 6) clears it
    expected = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0, 0.0]) * LOGIT_GAIN
    torch.testing.assert_close(once.detach(), expected, atol=1e-4, rtol=0)
    assert torch.all(every[3:6] > once[3:6] + 0.5)  # adding at every step accumulates
    assert every[7] > 1.0  # and keeps acting after the newline


@pytest.mark.parametrize("family", ["lstm", "s6", "mingru"])
@pytest.mark.parametrize("greedy", [True, False])
def test_steered_generation_equals_a_manual_step_loop(family, greedy):
    model = small(family)
    v = contrastive_vector(model, POSITIVE, NEGATIVE, carried_state(model, 1), layer=1)
    r = contrastive_vector(model, POSITIVE, NEGATIVE, "resid_post", layer=0)
    prompt, n = tokens("def f(x):\n"), 12
    length = prompt.shape[1]
    # one state injection inside the generated part, residual addition everywhere
    steers = [Steer(v, 3.0, positions=length + 4, relative=True), Steer(r, 1.5, relative=True)]
    dv, dr = (s.delta().double() for s in steers)
    out = generate_steered(model, prompt, steers, n, greedy=greedy, seed=3, path="fused")

    def add_at(vector, absolute):
        def hook(x, hook, start):
            x = x.clone()
            for i in range(x.shape[1]):
                if absolute is None or start + i == absolute:
                    x[:, i] = x[:, i] + vector
            return x
        return hook

    gen = torch.Generator().manual_seed(3)
    seq, state, start = prompt, None, 0
    step_in = prompt
    for _ in range(n + 1):
        fwd = [(v.hook, lambda x, hook, s=start: add_at(dv, length + 4)(x, hook, s)),
               (r.hook, lambda x, hook, s=start: add_at(dr, None)(x, hook, s))]
        with model.hooks(fwd_hooks=fwd):
            logits, state = model(step_in, initial_state=state, return_state=True, path="reference")
        start += step_in.shape[1]
        if seq.shape[1] == length + n:
            break
        last = logits[:, -1].float()
        if greedy:
            nxt = last.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(last.softmax(-1), 1, generator=gen)
        seq, step_in = torch.cat([seq, nxt], 1), nxt
    assert torch.equal(out, seq)
    unsteered = model.generate(prompt, n, greedy=greedy, seed=3)
    assert not torch.equal(out, unsteered), "the steering did not change the generation"


def test_generation_agrees_with_one_steered_forward_pass(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "c", layer=0)
    prompt = tokens("x = 1")
    # from the prompt's second-to-last token on, as an absolute position: a negative index counts from
    # the end of the prompt, and the forward pass below sees the whole output as its prompt
    steer = Steer(v, 1.5, positions=slice(prompt.shape[1] - 2, None))
    out = generate_steered(planted, prompt, steer, 10, greedy=True)
    logits = run_steered(planted, out, steer)
    assert torch.equal(logits[0, prompt.shape[1] - 1 : -1].argmax(-1), out[0, prompt.shape[1]:])
    unsteered = generate_steered(planted, prompt, Steer(v, 0.0), 10, greedy=True)
    assert not torch.equal(unsteered, out)  # the steering changed what was generated


def test_steering_context_restores_the_model(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "c", layer=0)
    clean = planted(tokens())
    with steering(planted, Steer(v, 1.0)) as clock:
        planted(tokens())
        assert clock.prompt_length == tokens().shape[1]
    assert torch.equal(planted(tokens()), clean)


def test_other_layers_and_bad_specs(planted):
    v = contrastive_vector(planted, POSITIVE, NEGATIVE, "resid_post", layer=0)
    hash_id = TOK.stoi["#"]
    both = run_steered(planted, "ab", Steer(v, 1.0, layers=[0, 1]))[0, -1, hash_id].detach()
    assert float(both) == pytest.approx(2 * LOGIT_GAIN, abs=1e-4)  # added once in each layer
    with pytest.raises(ValueError, match="unknown positions 'middle'"):
        run_steered(planted, "ab", Steer(v, 1.0, positions="middle"))
    with pytest.raises(ValueError, match=r"shape \(8,\) but blocks.0.mixer.hook_c holds \(4,\)"):
        run_steered(planted, "ab", Steer(v.at("blocks.0.mixer.hook_c"), 1.0))
    with pytest.raises(TypeError, match="Steer"):
        run_steered(planted, "ab", [v])
