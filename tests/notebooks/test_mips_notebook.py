"""notebooks/05_mips.ipynb runs top to bottom headless, in the time its header promises."""

import re

import pytest

from .notebook_run import run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_mips_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("05_mips.ipynb")
    text = stream_text(outputs)
    assert text.count("verified:") >= 2 and "UnknownTaskError" in text and "notebook ran in" in text
    assert "<div" not in text, "the widget demo printed raw HTML"
    assert re.search(r"states; (no contradictions|\d+ contradiction\(s\): [\d,]+ of [\d,]+ observed)", text), text
    findings = re.findall(r"FINDING: .*(?:is verified|by \w+)", text)
    assert len(findings) == 4, findings  # Add_Mod_3, Sum_Last2, the search, the custom task
    assert "FINDING: the custom task Game_Score is verified" in text  # defined in the notebook, solved by mips.solve
    assert "a faulty reference is caught before any search: task 'Short'" in text
    assert "exhaustively only up to length 2 (100 symbols)" in text
    assert "of 100 symbols: length 8 would be" in text  # the verification says why it stops at length 2
