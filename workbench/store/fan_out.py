"""Recording a corpus by shards on an executor (`workbench.distributed`): one unit per shard.

Each shard starts its segments from the model's initial state at the plan's declared boundaries, so
its contents depend only on the plan and the model: any worker may write any shard, a retried shard
rewrites the same file atomically, and every tensor and metadata entry equals the serial `record`'s
bit for bit (the files' bytes may not: safetensors orders header metadata by a per-process hash). Every
worker writes into `out_dir` itself, so on several machines it must be a directory they all see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.store.plan import RecordPlan
from workbench.store.writer import begin, finalize, pending_shards, record_shard

if TYPE_CHECKING:
    from workbench.distributed import Executor
    from workbench.models.language_model import HookedLanguageModel
    from workbench.store.reader import ActivationStore

__all__ = ["ShardJob", "record_shards_on"]


@dataclass(frozen=True)
class ShardJob:
    """What every shard's unit shares: the model, the plan and the store's directory."""

    model: HookedLanguageModel
    plan: RecordPlan
    out_dir: str


def write_shard(job: ShardJob, index: int) -> int:
    """One shard's unit: record it into the store's directory; returns its token count."""
    record_shard(job.model, job.plan, index, job.out_dir)
    return job.plan.shards[index].n_tokens


def record_shards_on(
    executor: Executor, model: HookedLanguageModel, plan: RecordPlan, out_dir: str | os.PathLike[str], *,
    overwrite: bool = False, progress: bool = False,
) -> ActivationStore:
    """`begin`, every pending shard of `plan` as one unit on `executor`, then `finalize`; resumes like `record`."""
    begin(plan, out_dir, overwrite=overwrite)
    todo = pending_shards(plan, out_dir)
    executor.map(write_shard, todo, context=ShardJob(model, plan, str(out_dir)), desc="recording shards",
                 progress=progress)
    return finalize(plan, out_dir)
