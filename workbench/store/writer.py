"""Writing a store: `begin` the manifest, `record_shard` each shard of the plan, `finalize`.

`record` is the serial driver; a parallel one (one worker per shard) calls the same three
functions, so both write byte-identical shards. Each shard is one safetensors file, written to a
temporary name, flushed and renamed into place: after a kill, a shard is there whole or not at all,
and a rerun records exactly the missing ones (no duplicated or missing tokens).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench.files import _pid_alive, fsync_path
from workbench.models.memory import checked_by_caller
from workbench.store.corpus import CorpusSource, read_tokens
from workbench.store.plan import DTYPES, RecordPlan, ShardSpec, plan_shards
from workbench.store.reductions import HookStats, histogram_edges, merge_stats, stats_from_tensors, update_stats

if TYPE_CHECKING:
    from workbench.distributed import Executor
    from workbench.models.language_model import HookedLanguageModel
    from workbench.store.reader import ActivationStore

__all__ = ["MANIFEST", "StoreMismatchError", "begin", "finalize", "pending_shards", "record", "record_shard"]

FORMAT = "workbench-activation-store"
SHARD_FORMAT = "workbench-activation-shard"
VERSION = 1
MANIFEST = "manifest.json"
REDUCTIONS_FILE = "reductions.safetensors"
PAD_TOKEN = 0  # fills the rows of a batch past their segment's end; never recorded


class StoreMismatchError(ValueError):
    """A directory that holds another recording (other corpus, model or settings) than the plan."""


def _write_atomically(directory: Path, name: str, write: object) -> Path:
    """Call write(temporary path), flush it, rename it to `name`: the file appears whole or not at all."""
    target = directory / name
    staging = directory / f".{name}.{os.getpid()}.tmp"
    write(staging)  # type: ignore[operator]
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o666 & ~mask)  # safetensors creates its files 0o600
    fsync_path(staging)
    os.replace(staging, target)
    fsync_path(directory)
    return target


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files left by writers that were killed (their process is gone)."""
    for staging in directory.glob(".*.tmp"):
        try:
            pid = int(staging.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            staging.unlink(missing_ok=True)


def _manifest(plan: RecordPlan, status: str, shards: list[dict] | None = None) -> dict:
    return {"format": FORMAT, "version": VERSION, "status": status, "plan_sha256": plan.sha256,
            "tokenizer": plan.tokenizer, "plan": plan.describe(), "shards": shards or []}


def begin(plan: RecordPlan, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Create `out_dir` with a manifest of `plan`, or check the one there is the same recording.

    A directory holding another recording raises `StoreMismatchError` naming what differs, unless
    `overwrite` (then its shards are deleted). Stale temporary files of killed writers are removed.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old.get("plan_sha256") == plan.sha256:
            _remove_stale_temporaries(directory)
            return directory
        if not overwrite:
            raise StoreMismatchError(_difference(old.get("plan", {}), plan.describe(), directory))
        for stale in [*directory.glob("shard-*.safetensors"), directory / REDUCTIONS_FILE, manifest_path]:
            stale.unlink(missing_ok=True)
    _remove_stale_temporaries(directory)
    _write_atomically(directory, MANIFEST, lambda p: p.write_text(
        json.dumps(_manifest(plan, "recording"), indent=1) + "\n", encoding="utf-8"))
    return directory


def _difference(old: dict, new: dict, directory: Path) -> str:
    differing = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return (f"out_dir {str(directory)!r} holds another recording (it differs in: {', '.join(differing)}); "
            "pass overwrite=True (CLI --overwrite) to replace it, or choose another directory")


def _shard_done(plan: RecordPlan, directory: Path, shard: ShardSpec) -> bool:
    path = directory / shard.file_name
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return _read_metadata(handle).get("plan_sha256") == plan.sha256
    except Exception:  # a foreign or damaged file: record the shard again
        return False


def pending_shards(plan: RecordPlan, out_dir: str | os.PathLike[str]) -> list[int]:
    """Indices of the plan's shards not yet written whole to `out_dir`."""
    directory = Path(out_dir)
    return [s.index for s in plan.shards if not _shard_done(plan, directory, s)]


@torch.no_grad()
def _record_rows(
    model: HookedLanguageModel, plan: RecordPlan, rows: list[torch.Tensor], starts: list[int],
) -> tuple[dict[str, torch.Tensor], dict[str, HookStats]]:
    """Run the segments (rows of one batch, state from the initial one) window by window."""
    lengths = [row.shape[0] for row in rows]
    total, longest = sum(lengths), max(lengths)
    offsets = [sum(lengths[:i]) for i in range(len(rows))]  # row -> first index in the shard
    batch = torch.full((len(rows), longest), PAD_TOKEN, dtype=torch.int64)
    for i, row in enumerate(rows):
        batch[i, : row.shape[0]] = row
    dtype = DTYPES[plan.dtype]
    raw = {name: torch.empty((total, *shape), dtype=dtype) for name, shape in plan.hooks.items()} if plan.raw else {}
    stats = {name: HookStats() for name in plan.hooks}
    edges = histogram_edges(*plan.histogram)
    names = list(plan.hooks)
    state = None
    for start in range(0, longest, plan.window):
        part = batch[:, start : start + plan.window].to(model.device)  # [rows, w]
        (_, state), cache = model.run_with_cache(
            part, names_filter=names, initial_state=state, return_state=True, return_type=None, path=plan.path,
        )
        state = [{key: value.clone() for key, value in layer.items()} for layer in state]
        live = [(i, min(part.shape[1], lengths[i] - start)) for i in range(len(rows)) if lengths[i] > start]
        positions = torch.cat([torch.arange(starts[i] + start, starts[i] + start + n) for i, n in live])
        for name in names:
            values = torch.cat([cache[name][i, :n].cpu() for i, n in live])  # [n_live, ...]
            if plan.reductions:
                stats[name] = update_stats(stats[name], values, positions, plan.reductions, plan.topk, edges)
            if plan.raw:
                for i, n in live:
                    raw[name][offsets[i] + start : offsets[i] + start + n] = cache[name][i, :n].to(dtype)
        del cache
    return raw, stats


def record_shard(model: HookedLanguageModel, plan: RecordPlan, index: int, out_dir: str | os.PathLike[str]) -> Path:
    """Record shard `index` of `plan` into `out_dir` (atomically) and return its file.

    The file holds `tokens` [n] int64, each hook's values [n, ...] in the plan's dtype (if raw), and
    each hook's partial reductions (`reduce/{hook}/{field}`); its metadata names the plan. Its bytes
    depend only on the plan and the model, so any process may record any shard. Call `begin` first.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(plan.shards):
        raise IndexError(f"index: the plan has shards 0..{len(plan.shards) - 1}, got {index!r}")
    shard = plan.shards[index]
    rows = [read_tokens(plan.documents[s.document], s.start, s.stop, plan.segment_tokens, model.tokenizer,
                        plan.unknown) for s in shard.segments]
    starts = [s.token_start for s in shard.segments]
    with checked_by_caller():  # the plan checked one window's forward and the shard's buffers
        raw, stats = _record_rows(model, plan, rows, starts)
    tensors = {"tokens": torch.cat(rows).to(torch.int64)}
    tensors.update(raw)
    for name in plan.hooks:
        if plan.reductions:
            tensors.update(stats[name].to_tensors(f"reduce/{name}/"))
    metadata = _metadata({"format": SHARD_FORMAT, "version": VERSION, "plan_sha256": plan.sha256, "index": index,
                          "token_start": shard.token_start, "token_stop": shard.token_stop})
    directory = Path(out_dir)
    return _write_atomically(directory, shard.file_name, lambda p: save_file(tensors, str(p), metadata=metadata))


def _metadata(fields: dict[str, object]) -> dict[str, str]:
    """One safetensors metadata entry holding sorted JSON: safetensors writes several entries in a
    hash order that changes from process to process, which would make equal shards differ in bytes."""
    return {"workbench": json.dumps(fields, sort_keys=True)}


def _read_metadata(handle: object) -> dict:
    try:
        return json.loads((handle.metadata() or {}).get("workbench", "{}"))  # type: ignore[attr-defined]
    except ValueError:
        return {}


def finalize(plan: RecordPlan, out_dir: str | os.PathLike[str]) -> ActivationStore:
    """Merge the shards' reductions in shard order, mark the manifest complete, and open the store.

    Raises `FileNotFoundError` naming the shards still missing.
    """
    from workbench.store.reader import ActivationStore

    directory = Path(out_dir)
    missing = pending_shards(plan, directory)
    if missing:
        raise FileNotFoundError(f"cannot finalize {str(directory)!r}: shards {missing} of {len(plan.shards)} "
                                "are not recorded yet (record_shard each, or rerun record to resume)")
    if plan.reductions:
        merged = {name: HookStats() for name in plan.hooks}
        for shard in plan.shards:
            with safe_open(str(directory / shard.file_name), framework="pt") as handle:
                for name in plan.hooks:
                    prefix = f"reduce/{name}/"
                    part = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
                    merged[name] = merge_stats(merged[name], stats_from_tensors(part, prefix), plan.topk)
        tensors = {}
        for name, stats in merged.items():
            tensors.update(stats.to_tensors(f"{name}/"))
        _write_atomically(directory, REDUCTIONS_FILE, lambda p: save_file(tensors, str(p), metadata=_metadata({
            "format": FORMAT, "plan_sha256": plan.sha256})))
    shards = [{"index": s.index, "file": s.file_name, "token_start": s.token_start, "token_stop": s.token_stop,
               "segments": [[g.token_start, g.token_start + g.length] for g in s.segments],
               "bytes": (directory / s.file_name).stat().st_size} for s in plan.shards]
    _write_atomically(directory, MANIFEST, lambda p: p.write_text(
        json.dumps(_manifest(plan, "complete", shards), indent=1) + "\n", encoding="utf-8"))
    return ActivationStore(directory)


def record(
    model: HookedLanguageModel,
    corpus: CorpusSource,
    out_dir: str | os.PathLike[str],
    hooks: str | Sequence[str],
    *,
    overwrite: bool = False,
    progress: bool = False,
    executor: Executor | None = None,
    **settings: object,
) -> ActivationStore:
    """Record `hooks` of `model` over `corpus` into `out_dir` and return the opened store.

    `settings` are `plan_shards`'s (segment_tokens, segments_per_shard, dtype, raw, reductions, topk,
    histogram, window, path, unknown, memory_budget_bytes). Rerunning the same call after an
    interruption records only the shards that are missing. `executor` (e.g.
    `workbench.distributed.RayExecutor()`) records one shard per unit, with the serial run's tensors
    (`store/fan_out.py`).
    """
    from tqdm.auto import tqdm

    plan = plan_shards(model, corpus, hooks, **settings)  # type: ignore[arg-type]
    if executor is not None:
        from workbench.store.fan_out import record_shards_on

        return record_shards_on(executor, model, plan, out_dir, overwrite=overwrite, progress=progress)
    begin(plan, out_dir, overwrite=overwrite)
    todo = pending_shards(plan, out_dir)
    bar = tqdm(total=plan.n_tokens, initial=plan.n_tokens - sum(plan.shards[i].n_tokens for i in todo),
               desc="recording", unit="tok", unit_scale=True, disable=not progress)
    for index in todo:
        record_shard(model, plan, index, out_dir)
        bar.update(plan.shards[index].n_tokens)
    bar.close()
    return finalize(plan, out_dir)
