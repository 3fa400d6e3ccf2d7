"""MipsExplorer shows errors inside itself and a program for a solved task."""

import pytest

from workbench.widgets.mips import MipsExplorer


def test_unknown_task_error_is_shown_in_the_widget():
    explorer = MipsExplorer("Parity_Al", run=True)
    assert "UnknownTaskError" in explorer.error.value and "Parity_All" in explorer.error.value
    assert explorer.program.value == ""


@pytest.mark.slow
def test_a_solved_task_shows_its_program_and_figures():
    explorer = MipsExplorer("Evens_Counter", budget=600, run=True)  # a safety net only
    assert explorer.error.value == ""
    assert "def program" in explorer.program.value and "verified" in explorer.summary.value
    assert explorer.cloud_figure is not None
