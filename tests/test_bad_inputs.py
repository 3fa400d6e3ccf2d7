"""Bad input gets one clear error: one table, each row a mistake a user makes, the error class it must
raise and a phrase of its message (what was expected or given). Nothing here may surface a raw error
from inside torch or TransformerLens: the class and the phrase are the project's own."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench
from workbench.errors import (
    CheckpointError,
    DeviceMapError,
    EmptyInputError,
    HookReturnError,
    InitialStateError,
    MemoryBudgetError,
    MissingTokenizerError,
    NonCausalHookError,
    ShadowedModelWarning,
    UnknownCharacterError,
    UnknownHookError,
    UnknownModelError,
)
from workbench.models import Edit, EditError, position_wise
from workbench.registry import CHECKPOINTS_DIR

DEFAULT = "lstm-stdlib-2x128"
PACKAGE = Path(workbench.__file__).resolve().parent
C0 = "blocks.0.mixer.hook_c"
RESID = "blocks.0.hook_resid_post"


@dataclass
class Ctx:
    """What a row may use: the default model, tokens, its zero state, a scratch directory."""

    model: workbench.models.HookedRecurrentLM
    tokens: torch.Tensor  # [1, pos]
    tmp: Path

    def state(self, **layer0: object) -> list[dict]:
        state = self.model.initial_state(1)
        state[0] = {**state[0], **layer0}
        return state

    def checkpoint(self, config_edit: Callable[[dict], None] | None = None,
                   weights_edit: Callable[[dict], dict] | None = None) -> Path:
        """A copy of the default model's checkpoint, its config.json and weights edited."""
        target = self.tmp / "checkpoint"
        shutil.copytree(CHECKPOINTS_DIR / DEFAULT, target)
        if config_edit is not None:
            document = json.loads((target / "config.json").read_text())
            config_edit(document)
            (target / "config.json").write_text(json.dumps(document))
        if weights_edit is not None:
            weights = load_file(target / "model.safetensors")
            save_file(weights_edit(weights), target / "model.safetensors", metadata={"format": "pt"})
        return target


def hooks(ctx: Ctx, *pairs, **kwargs):
    return ctx.model.run_with_hooks(ctx.tokens, fwd_hooks=list(pairs), **kwargs)


def hf_directory_without_tokenizer(ctx: Ctx):
    from tests.adapters.conftest import tiny

    tiny("mamba").save_pretrained(ctx.tmp / "hf")
    model = workbench.from_transformers(ctx.tmp / "hf")
    return model.to_tokens("hello")


def shadowed(ctx: Ctx, monkeypatch: pytest.MonkeyPatch):
    (ctx.tmp / DEFAULT).mkdir()
    monkeypatch.chdir(ctx.tmp)
    return workbench.load(DEFAULT)


def noncausal_in_a_block(ctx: Ctx):
    with ctx.model.hooks(fwd_hooks=[(C0, lambda x, hook: x + x.flip(1))]):
        return ctx.model.run_with_cache(ctx.tokens, check_causal=True)


def backward_hook_wrong_shape(ctx: Ctx):
    loss = ctx.model.run_with_hooks(ctx.tokens, return_type="loss",
                                    bwd_hooks=[(RESID, lambda g, hook: g[..., :3])])
    loss.backward()


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable  # (ctx) or (ctx, monkeypatch)
    error: type[BaseException] | type[Warning]
    phrase: str
    needs_monkeypatch: bool = False


def int_weights(weights: dict) -> dict:
    return {k: v.to(torch.int64) for k, v in weights.items()}


def float_weights(weights: dict) -> dict:
    return {k: v.float() for k, v in weights.items()}


CASES = [
    # ---- loading: names, directories, checkpoints
    Case("load empty name", lambda c: workbench.load(""), EmptyInputError, "name_or_dir is ''"),
    Case("load blank name", lambda c: workbench.load("   "), EmptyInputError, "expected an embedded model's name"),
    Case("load None", lambda c: workbench.load(None), TypeError, "name_or_dir must be"),
    Case("load a number", lambda c: workbench.load(42), TypeError, "got int 42"),
    Case("load unknown name", lambda c: workbench.load("no-such-model"), UnknownModelError, "unknown model"),
    Case("load near miss", lambda c: workbench.load("lstm-stdlib-2x12"), UnknownModelError, "lstm-stdlib-2x128"),
    Case("load an empty directory", lambda c: workbench.load(c.tmp), CheckpointError, "not a complete checkpoint"),
    Case("load a bad path argument", lambda c: workbench.load(DEFAULT, path="fast"), ValueError,
         "unknown path 'fast'"),
    Case("shadowed embedded name", shadowed, ShadowedModelWarning, "also the directory", needs_monkeypatch=True),
    Case("weights_dtype contradicts tensors",
         lambda c: workbench.load(c.checkpoint(lambda d: d.update(weights_dtype="float32"))),
         CheckpointError, "weights_dtype='float32'"),
    Case("float32 tensors, float16 config",
         lambda c: workbench.load(c.checkpoint(weights_edit=float_weights)), CheckpointError,
         "stored as torch.float32"),
    Case("unknown weights_dtype", lambda c: workbench.load(c.checkpoint(lambda d: d.update(weights_dtype="float8"))),
         CheckpointError, "expected one of"),
    Case("integer weights", lambda c: workbench.load(c.checkpoint(weights_edit=int_weights)), CheckpointError,
         "stored as torch.int64"),
    Case("config not JSON", lambda c: workbench.load(c.checkpoint(lambda d: d.clear())), CheckpointError,
         "not a workbench checkpoint config"),
    Case("HF directory without tokenizer", hf_directory_without_tokenizer, MissingTokenizerError,
         "no tokenizer files"),
    Case("from_transformers empty", lambda c: workbench.from_transformers(""), EmptyInputError,
         "model_or_dir is empty"),
    Case("device_map 'disk' without offload_folder", lambda c: workbench.from_transformers(
        c.tmp, device_map={"": "disk"}), DeviceMapError, "give offload_folder"),
    # ---- inputs
    Case("empty text", lambda c: c.model(""), EmptyInputError, "empty"),
    Case("empty token tensor", lambda c: c.model(torch.zeros(1, 0, dtype=torch.long)), EmptyInputError,
         "give at least one token"),
    Case("float token ids", lambda c: c.model(torch.tensor([[1.5, 2.0]])), TypeError, "integer ids"),
    Case("bool token ids", lambda c: c.model(torch.ones(1, 3, dtype=torch.bool)), TypeError, "integer ids"),
    Case("id beyond the vocabulary", lambda c: c.model(torch.tensor([[10_000]])), ValueError, "must lie in [0,"),
    Case("negative id", lambda c: c.model(torch.tensor([[-1, 2]])), ValueError, "must lie in [0,"),
    Case("3-d token ids", lambda c: c.model(torch.zeros(1, 2, 3, dtype=torch.long)), ValueError,
         "shape [pos] or [batch, pos]"),
    Case("0-d token id", lambda c: c.model(torch.tensor(3)), ValueError, "shape [pos] or [batch, pos]"),
    Case("list of ints", lambda c: c.model([1, 2, 3]), TypeError, "torch.tensor(ids)"),
    Case("None input", lambda c: c.model(None), TypeError, "got NoneType"),
    Case("texts of unequal length", lambda c: c.model(["ab", "abc"]), ValueError, "same length"),
    Case("character outside the vocabulary", lambda c: c.model("snow \u2603"), UnknownCharacterError,
         "U+2603"),
    Case("token ids on the meta device", lambda c: c.model(c.tokens.to("meta")), ValueError, "move them"),
    Case("unknown path", lambda c: c.model(c.tokens, path="fast"), ValueError, "use 'reference' or 'fused'"),
    # ---- initial_state
    Case("state as a bare tensor", lambda c: c.model(c.tokens, initial_state=torch.zeros(1, 128)),
         InitialStateError, "expected a list of 2 dicts"),
    Case("state as one dict", lambda c: c.model(c.tokens, initial_state=c.model.initial_state(1)[0]),
         InitialStateError, "got dict"),
    Case("state with an extra key", lambda c: c.model(c.tokens, initial_state=c.state(z=torch.zeros(1, 128))),
         InitialStateError, "unknown keys ['z']"),
    Case("state missing a key",
         lambda c: c.model(c.tokens, initial_state=[{"h": torch.zeros(1, 128)}, c.model.initial_state(1)[1]]),
         InitialStateError, "lacks ['c']"),
    Case("int64 state", lambda c: c.model(c.tokens, initial_state=c.state(h=torch.zeros(1, 128, dtype=torch.long))),
         InitialStateError, "floating-point"),
    Case("meta state, fused", lambda c: c.model(c.tokens, initial_state=c.state(c=torch.zeros(1, 128, device="meta"))),
         InitialStateError, "meta tensor"),
    Case("meta state, reference",
         lambda c: c.model(c.tokens, path="reference", initial_state=c.state(c=torch.zeros(1, 128, device="meta"))),
         InitialStateError, "meta tensor"),
    Case("state for another batch", lambda c: c.model(c.tokens, initial_state=c.model.initial_state(3)),
         InitialStateError, "has shape (3, 128)"),
    Case("state with three layers", lambda c: c.model(c.tokens, initial_state=(c.model.initial_state(1) * 2)[:3]),
         InitialStateError, "has 3 entries"),
    Case("state entry not a tensor", lambda c: c.model(c.tokens, initial_state=c.state(h=0.0)),
         InitialStateError, "got float"),
    # ---- hooks
    Case("unknown hook name", lambda c: hooks(c, ("blocks.0.mixer.hook_cc", lambda x, hook: None)),
         UnknownHookError, "did you mean"),
    Case("a lone pair, not a list",
         lambda c: c.model.run_with_hooks(c.tokens, fwd_hooks=(C0, lambda x, hook: None)), TypeError,
         "wrap it in a list"),
    Case("hook not callable", lambda c: hooks(c, (C0, 3)), TypeError, "must be callable"),
    Case("hook name a number", lambda c: hooks(c, (3, lambda x, hook: None)), TypeError,
         "must be a string or a predicate"),
    Case("resid_post hook returns a narrower tensor", lambda c: hooks(c, (RESID, lambda x, hook: x[..., :64])),
         HookReturnError, "shape (1, 10, 64)"),
    Case("hook returns an int", lambda c: hooks(c, (RESID, lambda x, hook: 3)), HookReturnError, "returned int 3"),
    Case("hook returns float64", lambda c: hooks(c, (RESID, lambda x, hook: x.double())), HookReturnError,
         "dtype torch.float64"),
    Case("state hook returns a narrower tensor", lambda c: hooks(c, (C0, lambda x, hook: x[:, :, :5])),
         HookReturnError, "on 'blocks.0.mixer.hook_c'"),
    Case("position-wise hook returns a list", lambda c: hooks(c, (C0, position_wise(lambda x, hook, pos: [1]))),
         HookReturnError, "returned list"),
    Case("backward hook returns a narrower gradient", backward_hook_wrong_shape, HookReturnError, "(backward)"),
    Case("non-causal hook, check_causal", lambda c: hooks(c, (C0, lambda x, hook: x + x.flip(1)), check_causal=True),
         NonCausalHookError, "changed when only later input positions changed"),
    Case("non-causal hook in a block, run_with_cache check_causal", noncausal_in_a_block, NonCausalHookError,
         "on 'blocks.0.mixer.hook_c'"),
    # ---- run_with_cache, edits
    Case("names_filter unknown", lambda c: c.model.run_with_cache(c.tokens, names_filter=["hook_c"]),
         UnknownHookError, "unknown hook 'hook_c'"),
    Case("a tiny memory budget", lambda c: c.model.run_with_cache(c.tokens, memory_budget_bytes=1000),
         MemoryBudgetError, "memory budget"),
    Case("remove_batch_dim with a batch",
         lambda c: c.model.run_with_cache(c.tokens.repeat(2, 1), remove_batch_dim=True), ValueError, "batch size 1"),
    Case("edit with an unknown op", lambda c: c.model.run_with_edits(c.tokens, edits=[Edit(C0, 2, "double")]),
         EditError, "is not one of"),
    Case("edit beyond the input", lambda c: c.model.run_with_edits(c.tokens, edits=[Edit(C0, 99, "zero")]),
         EditError, "99"),
    # ---- generation
    Case("negative max_new_tokens", lambda c: c.model.generate("def", max_new_tokens=-1), ValueError, ">= 0"),
    Case("max_new_tokens a float", lambda c: c.model.generate("def", max_new_tokens=2.5), TypeError, "must be an int"),
    Case("zero temperature", lambda c: c.model.generate("def", temperature=0.0), ValueError, "positive and finite"),
    Case("NaN temperature", lambda c: c.model.generate("def", temperature=float("nan")), ValueError,
         "positive and finite"),
    Case("temperature a string", lambda c: c.model.generate("def", temperature="hot"), TypeError, "must be a number"),
    Case("seed a string", lambda c: c.model.generate("def", seed="x"), TypeError, "seed must be an int"),
    Case("NaN logits while sampling", lambda c: _generate_with(c, ("hook_logits", lambda x, hook: x * float("nan"))),
         ValueError, "NaN or Inf"),
    # the activation store (workbench.record)
    Case("record a missing file", lambda c: workbench.record(c.model, [c.tmp / "no.txt"], c.tmp / "s", C0),
         FileNotFoundError, "no such text file"),
    Case("record a float tensor", lambda c: workbench.record(c.model, torch.zeros(9), c.tmp / "s", C0),
         TypeError, "integer tensor"),
    Case("record float64", lambda c: workbench.record(c.model, c.tokens[0], c.tmp / "s", C0, dtype="float64"),
         ValueError, "dtype must be one of"),
    Case("record an unknown hook", lambda c: workbench.record(c.model, c.tokens[0], c.tmp / "s", "blocks.0.hook_x"),
         UnknownHookError, "blocks.0.hook_x"),
    Case("record a stateless hook", lambda c: workbench.record(c.model, c.tokens[0], c.tmp / "s",
                                                              "blocks.0.mixer.hook_initial_c"),
         UnknownHookError, "no position axis"),
    Case("open a missing store", lambda c: workbench.open_store(c.tmp), FileNotFoundError, "no activation store"),
]


def _generate_with(ctx: Ctx, pair) -> object:
    with ctx.model.hooks(fwd_hooks=[pair]):
        return ctx.model.generate("def", max_new_tokens=2)


@pytest.fixture(scope="module")
def model():
    return workbench.load(DEFAULT)


def test_the_table_has_at_least_forty_cases():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_one_clear_error(case: Case, model, tmp_path, monkeypatch):
    ctx = Ctx(model, model.to_tokens("def f(x):\n"), tmp_path)
    args = (ctx, monkeypatch) if case.needs_monkeypatch else (ctx,)
    if issubclass(case.error, Warning):
        with pytest.warns(case.error) as record:
            case.call(*args)
        message = str(record[0].message)
    else:
        with pytest.raises(case.error) as raised:
            case.call(*args)
        message = str(raised.value)
        # raised on purpose by the workbench's own code, not deep inside torch or TransformerLens
        assert Path(raised.traceback[-1].path).is_relative_to(PACKAGE), raised.traceback[-1]
    assert case.phrase in message, message
