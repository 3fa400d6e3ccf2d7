"""Directories written atomically: a checkpoint, a lens or any artefact appears whole or not at all.

A run killed mid-write leaves the previous directory whole: the new one is written into a hidden
sibling and renamed into place; stale staging directories and interrupted swaps are tidied on the
next write (or read, with `recover_interrupted_swap`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "fsync_path", "recover_interrupted_swap"]


def fsync_path(path: Path) -> None:
    """Flush a file (or directory) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(target: Path) -> None:
    """Delete hidden staging directories that runs killed mid-write left beside `target`."""
    for staging in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            pid = int(staging.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(staging, ignore_errors=True)


def _backups(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)


def recover_interrupted_swap(target: Path, tidy: bool = False) -> None:
    """If a run died between moving the old checkpoint aside and moving the new one in, restore.

    With `tidy`, also delete backups left by a run that died after its swap had completed.
    """
    backups = _backups(target)
    if target.exists():
        for backup in backups if tidy else []:
            shutil.rmtree(backup, ignore_errors=True)
        return
    if backups:
        warnings.warn(
            f"restoring {target} from {backups[-1].name}: a previous save was interrupted",
            stacklevel=3,
        )
        os.rename(backups[-1], target)


def _apply_umask(directory: Path) -> None:
    """Give the staged files ordinary permissions (mkdtemp and safetensors create them 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(directory, 0o777 & ~mask)
    for child in directory.iterdir():
        os.chmod(child, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_directory(target: str | Path, marker: str = "config.json") -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces `target`, on failure it vanishes.

    The staging directory is a hidden sibling of `target` (same filesystem, so the rename is
    atomic). An existing `target` is moved aside, the new one renamed in, then the old one removed.
    A non-empty `target` without the file `marker` is not one of ours and is never replaced.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    recover_interrupted_swap(target, tidy=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).exists():
        raise FileExistsError(
            f"{target} is a non-empty directory that is not a workbench checkpoint; "
            "refusing to replace it (choose another output directory)"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield staging
        _apply_umask(staging)
        fsync_path(staging)
        if target.exists():
            backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, backup)
            os.rename(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(staging, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
