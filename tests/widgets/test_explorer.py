"""The `Explorer` skeleton: model selection, recompute on change, errors inside, quiet control changes."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from workbench.widgets.display import BusyState
from workbench.widgets.explorer import Explorer


class Echo(Explorer):
    """Shows the text it is given, in upper case; a text with '!' fails."""

    def __init__(self, models, **kwargs):
        super().__init__(models, **kwargs)
        self.text_input = widgets.Text(value="abc")
        self.busy = BusyState([self.model_select, self.text_input])
        self.out = widgets.HTML(value="")
        self.runs = 0
        self._assemble([self.model_select, self.text_input], [self.out], [self.text_input])

    def _compute(self) -> None:
        self.runs += 1
        self._check_length(self.text_input.value)
        if "!" in self.text_input.value:
            raise ValueError("no shouting")
        self.out.value = f"{self.model_select.value}: {self.text_input.value.upper()}"

    def _clear(self) -> None:
        self.out.value = ""


def test_explorer_recomputes_shows_errors_inside_and_recovers():
    e = Echo({"a": object(), "b": object()}, max_chars=5)
    assert e.out.value == "a: ABC" and e.runs == 1 and e.widget.children[-1] is e.out
    e.model_select.value = "b"
    assert e.out.value == "b: ABC"
    e.text_input.value = "hey!"
    assert "no shouting" in e.error.value and e.out.value == ""
    e.text_input.value = "toolong"
    assert "max_chars=5" in e.error.value
    e.text_input.value = "ok"
    assert e.error.value == "" and e.out.value == "b: OK"
    runs = e.runs
    with e._quiet():
        e.text_input.value = "xy"
    assert e.runs == runs and e.out.value == "b: OK"


def test_explorer_needs_a_model():
    with pytest.raises(ValueError, match="at least one model"):
        Echo({})
