"""`import workbench` stays cheap (PEP 562 lazy exports) and every exported name resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import workbench
import workbench.analysis.mips as mips


def test_importing_the_package_does_not_import_transformer_lens():
    probe = "import sys, workbench, workbench.analysis.mips; print('transformer_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("package", [workbench, mips], ids=["workbench", "mips"])
def test_every_exported_name_resolves_and_is_listed(package):
    for name in package.__all__:
        assert getattr(package, name) is not None
        assert name in dir(package)


def test_an_unknown_name_is_an_attribute_error_naming_the_package():
    with pytest.raises(AttributeError, match="'workbench.analysis.mips' has no attribute 'nope'"):
        _ = mips.nope
