"""Hypothesis drives the public API with random and hostile inputs: random unicode, shapes, dtypes,
devices, hook names, hook return values, NaN/Inf, huge lengths under a small budget, CLI arguments.

Each call must give a result or one of the documented errors (docs/errors.md): an instance of a
builtin the table lists, raised by the workbench's own code (its innermost frame is in the package),
never a raw error from inside torch or TransformerLens, a hang or a kill. Examples are derandomized
(the same ones every run) and bounded (`EXAMPLES`), so CI time stays small and fixed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench
from workbench.analysis.cells import record
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.lens import LogitLens, prediction_trajectory
from workbench.analysis.tokens import tokenize
from workbench.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(workbench.__file__).resolve().parent
DEFAULT = "lstm-stdlib-2x128"

# examples per test: 11 tests, 395 examples in all
EXAMPLES = {"tokenize": 60, "load": 40, "tokens": 50, "hooks": 50, "generate": 40, "state": 30,
            "analysis": 30, "huge": 15, "cli": 40, "edits": 25, "seq2seq": 15}


def fuzz(kind: str) -> Callable:
    return settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def _documented() -> tuple[tuple[type[BaseException], ...], set[str]]:
    """The builtins docs/errors.md lists (the roots of the workbench's classes and those raised
    directly), and the names of the workbench's own classes, from tools/write_errors_table.py."""
    spec = importlib.util.spec_from_file_location("write_errors_table", ROOT / "tools" / "write_errors_table.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    classes, direct = tool.collect(tool.sources())
    roots = {root for name in classes for root in tool.builtin_roots(name, classes)} | set(direct)
    roots -= {"NotImplementedError", "AssertionError", "RuntimeError"}  # bugs, not answers to bad input
    import builtins

    return tuple(getattr(builtins, name) for name in sorted(roots)), set(classes)


DOCUMENTED, OWN_CLASSES = _documented()


def outcome(call: Callable[[], object]) -> object:
    """The call's result, or None after a documented error raised by the workbench itself."""
    try:
        return call()
    except DOCUMENTED as error:
        frame = error.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        origin = Path(frame.tb_frame.f_code.co_filename).resolve()
        assert origin.is_relative_to(PACKAGE), f"{type(error).__name__} raised outside the workbench, {origin}: {error}"
        if type(error).__module__.startswith("workbench"):
            assert type(error).__name__ in OWN_CLASSES, f"{type(error).__name__} is not in docs/errors.md"
        assert str(error), f"{type(error).__name__} without a message"
        return None


@pytest.fixture(scope="module")
def model():
    return workbench.load(DEFAULT)


# ------------------------------------------------------------------------------ strategies
DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8, torch.bool, torch.float32, torch.float64,
          torch.float16, torch.complex64]
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e300, -1e-300]


ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
TEXTS = st.one_of(ASCII, st.text(max_size=12))  # half printable ASCII (mostly in the vocabulary), half any


@st.composite
def token_tensors(draw, vocab: int) -> torch.Tensor:
    """Any tensor a user might pass as tokens: shapes of 0-3 axes, any dtype, ids in and out of range,
    NaN/Inf for float dtypes, on the CPU or the meta device."""
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.randint(-2, vocab + 3, shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    tensor = values.to(dtype)
    if tensor.is_floating_point() and tensor.numel() and draw(st.booleans()):
        tensor.view(-1)[0] = torch.tensor(draw(st.sampled_from(SPECIALS)), dtype=torch.float64).to(dtype)
    elif not tensor.is_floating_point() and draw(st.booleans()):
        tensor = values.clamp(0, vocab - 1).to(dtype)  # valid ids half the time
    return tensor.to("meta") if draw(st.integers(0, 9)) == 0 else tensor


@st.composite
def valid_tokens(draw, vocab: int) -> torch.Tensor:
    """Token ids [batch, pos] in the vocabulary, int64 or int32."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)))
    seed = draw(st.integers(0, 99))
    ids = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))
    return ids.to(draw(st.sampled_from([torch.int64, torch.int32])))


def hook_results(x: torch.Tensor, choice: int, number: float) -> object:
    """What a careless or hostile hook returns: nothing, a number, text, the tensor, a NaN/Inf copy,
    a narrower, wider, re-typed or re-shaped tensor, a tuple."""
    options = [
        lambda: None, lambda: 3, lambda: number, lambda: "x", lambda: x, lambda: x * number,
        lambda: x.clone().fill_(math.nan), lambda: x + math.inf, lambda: x[..., :1], lambda: torch.cat([x, x], -1),
        lambda: x.double(), lambda: x.to(torch.int64), lambda: x.reshape(-1), lambda: (x,), lambda: x.flip(1),
        lambda: torch.zeros(2, 2),
    ]
    return options[choice % len(options)]()


# ------------------------------------------------------------------------------ the API
@fuzz("tokenize")
@given(text=TEXTS, unknown=st.sampled_from([None, "map", "skip", "error", "bogus"]))
def test_tokenize_random_unicode(model, text, unknown):
    ids = outcome(lambda: tokenize(model, text, unknown=unknown))
    if ids is not None:
        assert ids.dtype == torch.long and ids.ndim == 1 and len(ids) >= 1
        assert int(ids.min()) >= 0 and int(ids.max()) < model.cfg.d_vocab


@fuzz("load")
@given(name=st.one_of(st.text(max_size=300), st.sampled_from(["", " ", ".", "..", "/", "~", "~nobody-here",
                                                             "lstm-stdlib-2x12", "a" * 5000, "x\x00y"]),
                      st.integers(), st.none(), st.binary(max_size=8)),
       path=st.sampled_from(["fused", "reference", "fast", None]))
def test_load_random_names(name, path):
    model = outcome(lambda: workbench.load(name, path=path))
    assert model is None or name in workbench.list_models().__str__()


def hostile(data) -> bool:
    """One example in three is hostile throughout; the others keep to valid arguments with random
    values, so results are checked too (Hypothesis favours the small choice, here the valid one)."""
    return data.draw(st.integers(0, 2)) == 2


@fuzz("tokens")
@given(data=st.data())
def test_run_with_cache_random_token_tensors(model, data):
    bad = hostile(data)
    tokens = data.draw(token_tensors(model.cfg.d_vocab) if bad else valid_tokens(model.cfg.d_vocab))
    names = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(list(model.hook_dict)), max_size=3),
                                *([st.text(max_size=10)] if bad else [])))
    path = data.draw(st.sampled_from(["fused", "reference", *(["nope"] if bad else [])]))
    result = outcome(lambda: model.run_with_cache(tokens, names_filter=names, path=path))
    if result is not None:
        logits, cache = result
        assert logits.shape == (*tokens.reshape(-1, tokens.shape[-1]).shape, model.cfg.d_vocab)
        assert all(v.shape[0] == logits.shape[0] for v in cache.values())
        assert not bad or tokens.dtype in (torch.int64, torch.int32)


@fuzz("hooks")
@given(data=st.data())
def test_run_with_hooks_random_hook_names_and_returns(model, data):
    bad = hostile(data)
    tokens = data.draw(valid_tokens(model.cfg.d_vocab))
    names = st.sampled_from(list(model.hook_dict))
    name = data.draw(st.one_of(names, st.text(max_size=20), st.integers()) if bad else names)
    choice = data.draw(st.integers(0, 99) if bad else st.sampled_from([0, 4, 5, 14]))  # None, x, x * number, flip
    number = data.draw(st.sampled_from([*SPECIALS, 2.0]))
    kwargs = {"path": data.draw(st.sampled_from(["fused", "reference"])), "check_causal": data.draw(st.booleans()),
              "return_type": data.draw(st.sampled_from(["logits", "loss", None]))}
    logits = outcome(lambda: model.run_with_hooks(
        tokens, fwd_hooks=[(name, lambda x, hook: hook_results(x, choice, number))], **kwargs))
    if logits is not None and kwargs["return_type"] == "logits":
        assert logits.shape == (*tokens.shape, model.cfg.d_vocab)


@fuzz("generate")
@given(data=st.data())
def test_generate_random_arguments(model, data):
    bad = hostile(data)
    prompt = data.draw(TEXTS if bad else st.sampled_from(["def ", "x = ", "(", "\n"]))
    max_new_tokens = data.draw(st.one_of(st.integers(-3, 4), st.floats(allow_nan=True), st.none()) if bad
                               else st.integers(0, 4))
    temperature = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                                      st.text(max_size=2)) if bad else st.floats(0.05, 5))
    seed = data.draw(st.one_of(st.none(), st.integers(0, 2**31), *([st.text(max_size=2)] if bad else [])))
    greedy = data.draw(st.booleans())
    text = outcome(lambda: model.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                          greedy=greedy, seed=seed))
    if text is not None:
        assert isinstance(text, str) and text.startswith(prompt) and len(text) == len(prompt) + max_new_tokens


@fuzz("state")
@given(data=st.data())
def test_random_initial_states(model, data):
    tokens = model.to_tokens("x = 1")
    zero = model.initial_state(1)
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = data.draw(st.sampled_from([(1, 128), (2, 128), (1, 64), (128,), ()]))
    device = data.draw(st.sampled_from(["cpu", "meta"]))
    value = torch.zeros(shape, dtype=dtype, device=device)
    layer0 = data.draw(st.sampled_from(["replace h", "add key", "drop c", "a tensor", "none"]))
    state: object = [dict(zero[0]), dict(zero[1])]
    if layer0 == "replace h":
        state[0]["h"] = value
    elif layer0 == "add key":
        state[0][data.draw(st.text(max_size=3))] = value
    elif layer0 == "drop c":
        del state[0]["c"]
    elif layer0 == "a tensor":
        state = value
    if data.draw(st.booleans()):
        state = state[: data.draw(st.integers(0, 3))] if isinstance(state, list) else state
    outcome(lambda: model(tokens, initial_state=state, path=data.draw(st.sampled_from(["fused", "reference"]))))


@fuzz("edits")
@given(data=st.data())
def test_random_edits(model, data):
    from workbench.models import Edit

    tokens = model.to_tokens("a = [1]")  # 7 positions
    bad = hostile(data)
    hooks = st.sampled_from(["blocks.0.mixer.hook_c", "blocks.1.hook_resid_post", "hook_embed",
                             "blocks.1.mixer.hook_h"])
    hook = data.draw(st.one_of(hooks, st.just("blocks.0.mixer.hook_initial_h"), st.text(max_size=8)) if bad else hooks)
    positions = data.draw(st.one_of(st.integers(-12, 12), st.lists(st.integers(-9, 9), max_size=3),
                                    st.just(slice(2, None)), st.just(slice(5, 2))) if bad else
                          st.one_of(st.integers(-7, 6),
                                    st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True)))
    op = data.draw(st.sampled_from(["set", "add", "scale", "zero", "mean", *(["swap"] if bad else [])]))
    value = data.draw(st.one_of(st.none(), st.sampled_from(SPECIALS), st.just(torch.ones(3)), st.just(torch.ones(128)))
                      if bad else st.floats(-3, 3))
    logits = outcome(lambda: model.run_with_edits(tokens, edits=[Edit(hook, positions, op, value)]))
    assert logits is not None or bad, "a valid edit was refused"


@fuzz("analysis")
@given(data=st.data())
def test_analysis_entry_points(model, data):
    bad = hostile(data)
    text = data.draw(TEXTS if bad else st.sampled_from(["def f(x):\n  return (x)\n", "a", "[1, 2]"]))
    which = data.draw(st.sampled_from(["record", "implicit attention", "trajectory"]))
    if which == "record":
        quantities = data.draw(st.one_of(st.none(), st.sampled_from(["c", "h", "i"]),
                                         *([st.sampled_from(["state"]), st.text(max_size=4)] if bad else [])))
        layers = data.draw(st.one_of(st.none(), st.integers(-3, 3), st.lists(st.integers(-1, 2), max_size=2))
                           if bad else st.sampled_from([None, 0, 1, [0, 1]]))
        outcome(lambda: record(model, text, quantities, layers))
    elif which == "implicit attention":
        layer = data.draw(st.integers(-3, 3) if bad else st.integers(0, 1))
        mode = data.draw(st.sampled_from(["exact", "paper", *(["normed", "nonsense"] if bad else [])]))
        aggregate = data.draw(st.sampled_from(["none", "mean", "abs_mean", "norm", *(["max"] if bad else [])]))
        outcome(lambda: implicit_attention(model, text, layer, mode=mode, aggregate=aggregate))
    else:
        budget = data.draw(st.integers(1, 10**6) if bad else st.none())
        outcome(lambda: prediction_trajectory(LogitLens(model), text, memory_budget_bytes=budget))


@fuzz("huge")
@given(length=st.integers(10**4, 10**8), budget=st.integers(1, 10**6), path=st.sampled_from(["fused", "reference"]),
       names=st.sampled_from([None, ["blocks.0.mixer.hook_c"], ["blocks.1.mixer.hook_c", "hook_logits"]]))
def test_huge_lengths_under_a_small_budget_are_refused_before_running(model, length, budget, path, names):
    tokens = torch.zeros(1, 1, dtype=torch.long).expand(1, length)  # [1, length], no memory of its own
    with pytest.raises(MemoryError) as refused:  # MemoryBudgetError: refused before anything runs
        model.run_with_cache(tokens, names_filter=names, memory_budget_bytes=budget, path=path)
    assert "budget" in str(refused.value)


@fuzz("seq2seq")
@given(data=st.data())
def test_sequence_to_sequence_inputs(data):
    from workbench.models import HookedRecurrentSeq2Seq, RecurrentConfig

    seq = HookedRecurrentSeq2Seq(RecurrentConfig(family="gru", n_layers=1, d_model=6, d_hidden=5, d_input=3,
                                                 d_output=2))
    valid = data.draw(st.booleans())
    shape = [data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5)), 3][-data.draw(st.integers(2, 3)):] if valid \
        else data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] if valid else DTYPES))
    x = torch.ones(shape).to(dtype)
    if x.is_floating_point() and x.numel():
        x.view(-1)[0] = torch.tensor(data.draw(st.sampled_from(SPECIALS)), dtype=torch.float64).to(dtype)
    y = outcome(lambda: seq.run_with_cache(x))
    if y is not None:
        assert y[0].shape[-1] == 2


CLI_WORDS = ["list", "eval", "report", "--json", "--model", "--text", "--out", "--split", "test", "--path",
             "fused", "fast", "--max-chars", "-5", "0", "--threads", "--batch-size", "--seq-len", "nowhere",
             "lstm-stdlib-2x12", "--corpus", "no-corpus", "--device", "meta", "--help-me", ""]


@fuzz("cli")
@given(argv=st.lists(st.one_of(st.sampled_from(CLI_WORDS), st.text(max_size=8)), max_size=6))
def test_cli_random_arguments(argv, tmp_path_factory, capsys):
    """`workbench` exits 0, 1 with a one-line error, or 2 (argparse's usage error); never a traceback.
    No valid model name is offered, so nothing trains or evaluates for long."""
    out = tmp_path_factory.mktemp("cli")
    argv = [str(out / "report.html") if word == "--out-here" else word for word in argv]
    try:
        status = cli_main(argv)
    except SystemExit as exit_:  # argparse: usage errors exit 2, --help 0
        status = exit_.code
    captured = capsys.readouterr()
    assert status in (0, 1, 2, None), status
    assert "Traceback" not in captured.err
    if status == 1:
        assert captured.err.startswith("workbench: error: ") and captured.err.count("\n") == 1, captured.err
