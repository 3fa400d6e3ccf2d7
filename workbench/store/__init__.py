"""The activation store: a corpus streamed through a model, selected hooks written to disk in shards.

What outgrows one machine in recurrent-model interpretability is the states, so a recording of a
corpus goes to disk instead of memory, with memory bounded by one shard:

    store = workbench.record(model, ["a.txt", "b.txt"], "acts/", hooks=["blocks.1.mixer.hook_c"],
                             dtype="float16", reductions=("moments", "topk"))
    for values in store.iter_tensors("blocks.1.mixer.hook_c"): ...   # [n, d_hidden] per shard
    store.stats("blocks.1.mixer.hook_c").mean                          # [d_hidden] float64

The API for fan-out (one worker per shard; the serial `record` is these calls in a loop):

    plan = plan_shards(model, corpus, hooks, segment_tokens=..., segments_per_shard=...)
    begin(plan, out_dir)                          # writes the manifest (or checks the one there)
    for index in pending_shards(plan, out_dir):   # the shards not yet written whole
        record_shard(model, plan, index, out_dir) # any process, any order: equal shards
    store = finalize(plan, out_dir)               # merges the reductions, marks the manifest complete

The plan cuts every document into segments of `segment_tokens` (the state starts from the model's
initial state at each segment start, in serial and parallel runs alike) and groups
`segments_per_shard` consecutive segments into a shard, recorded as the rows of one batch. Files:
`manifest.json` (model name and weight hash, corpus hash, hooks, dtype, shards and their token
ranges), `shard-NNNNN.safetensors` (`tokens`, each hook [n, ...], partial reductions) and
`reductions.safetensors` (the merged reductions). Modules: `corpus` (documents), `plan`, `reductions`,
`writer`, `reader`.
"""

from workbench.store.plan import RecordPlan, plan_shards
from workbench.store.reader import ActivationStore, StoreDataset, TopContext, open_store
from workbench.store.reductions import HookStats
from workbench.store.writer import StoreMismatchError, begin, finalize, pending_shards, record, record_shard

__all__ = [
    "ActivationStore",
    "HookStats",
    "RecordPlan",
    "StoreDataset",
    "StoreMismatchError",
    "TopContext",
    "begin",
    "finalize",
    "open_store",
    "pending_shards",
    "plan_shards",
    "record",
    "record_shard",
]
