"""notebooks/05_mips.ipynb runs top to bottom headless, in the time its header promises."""

import pytest

from .notebook_run import run_within_stated_time, stream_text

pytest.importorskip("nbclient")


@pytest.mark.notebook
@pytest.mark.slow
def test_mips_notebook_runs_top_to_bottom_within_its_stated_time():
    outputs = run_within_stated_time("05_mips.ipynb")
    text = stream_text(outputs)
    assert text.count("verified:") >= 2 and "UnknownTaskError" in text and "notebook ran in" in text
