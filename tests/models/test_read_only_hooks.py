"""The replay decision: hooks marked `read_only` are not replayed, every other hook is."""

from __future__ import annotations

import torch

from workbench.models import read_only
from workbench.models.recurrence import ActivationRecorder, hook_may_edit, is_read_only

from .conftest import small_lm

LENGTH, EDIT_AT = 8, 3
NAME = "blocks.0.mixer.hook_c"


def counting(calls: list[int], returns_input: bool = False):
    def hook(x, hook):
        calls.append(1)
        return x if returns_input else None

    return hook


def edit(x, hook):
    x = x.clone()  # [batch, pos, d_hidden]
    x[:, EDIT_AT] = x[:, EDIT_AT] + 0.5
    return x


def run(hooks, path: str = "fused") -> torch.Tensor:
    model = small_lm("lstm")
    tokens = torch.arange(LENGTH)[None] % model.cfg.d_vocab  # [1, pos]
    return model.run_with_hooks(tokens, fwd_hooks=[(NAME, h) for h in hooks], path=path)


def test_the_mark_is_what_decides():
    assert is_read_only(read_only(lambda x, hook: None))
    assert is_read_only(ActivationRecorder({}))  # the cache's recorders
    assert not is_read_only(lambda x, hook: None)  # no mark: may edit
    model = small_lm("lstm")
    point = model.hook_dict[NAME]
    point.add_hook(read_only(lambda x, hook: None))
    assert not hook_may_edit(point)
    point.add_hook(lambda x, hook: None)
    assert hook_may_edit(point)
    model.reset_hooks()


def test_a_read_only_hook_is_not_replayed_an_editing_one_is():
    for path in ("reference", "fused"):
        reader, editor = [], []
        run([read_only(counting(reader)), counting(editor, returns_input=True), edit], path)
        # the edit at EDIT_AT replays positions EDIT_AT..LENGTH-1; the reader sees the first pass
        # and the fixed point only
        assert len(reader) == 2, path
        assert len(editor) == 1 + (LENGTH - EDIT_AT), path


def test_an_unmarked_hook_is_treated_as_editing_even_if_it_only_reads():
    calls = []
    run([counting(calls), edit])
    assert len(calls) == 1 + (LENGTH - EDIT_AT)


def test_without_an_edit_nothing_is_replayed():
    marked, unmarked = [], []
    run([read_only(counting(marked)), counting(unmarked)])
    assert len(marked) == 1 and len(unmarked) == 1


def test_read_only_drops_a_return_value_so_the_mark_cannot_hide_an_edit():
    clean = run([])
    torch.testing.assert_close(run([read_only(edit)]), clean)
    assert not torch.equal(run([edit]), clean)
