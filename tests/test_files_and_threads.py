"""`workbench.files.atomic_directory` and `workbench.threads.torch_threads`, the utilities that training,
the lenses and the CLI share."""

from __future__ import annotations

import pytest
import torch

from workbench.files import atomic_directory
from workbench.threads import torch_threads


def test_atomic_directory_replaces_its_own_kind_only(tmp_path):
    target = tmp_path / "lens"
    with atomic_directory(target, marker="lens.json") as staging:
        (staging / "lens.json").write_text("{}")
    with atomic_directory(target, marker="lens.json") as staging:
        (staging / "lens.json").write_text('{"v": 2}')
    assert (target / "lens.json").read_text() == '{"v": 2}'
    with pytest.raises(FileExistsError), atomic_directory(target, marker="config.json"):
        pass
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "new") as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("killed mid-write")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["lens"]


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive"), torch_threads(0):
        pass
