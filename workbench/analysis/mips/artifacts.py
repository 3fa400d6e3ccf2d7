"""Save one task's MIPS run to disk: weights (safetensors), states (FSM or lattice), program, verification.

Files per task in the programs folder, all named after the task:

- `<task>.py`: the synthesised program (`program(xs) -> ys`);
- `<task>.safetensors`: the trained network's weights, with its spec and output classes as metadata
  (reload with `load_network`);
- `<task>.states.json`: the minimised Moore machine (states, start, transition table, outputs,
  contradictions) or the integer lattice (basis kind, rank, lattice vectors, snapping error);
- `<task>.verification.json`: the verification record (passed, exhaustive length and counts, random
  counts, counterexample) and the result row.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.torch import load_file, save_file

from workbench.analysis.mips.fsm import FSM
from workbench.analysis.mips.lattice import Lattice
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec

if TYPE_CHECKING:
    from workbench.analysis.mips.pipeline import SolveResult

__all__ = ["load_network", "save_artifacts", "states_record"]


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def states_record(extraction: FSM | Lattice) -> dict:
    """The discrete states as plain JSON: an FSM's table, or a lattice's basis."""
    if isinstance(extraction, FSM):
        return {
            "type": "fsm",
            "method": extraction.method,
            "n_states": extraction.n_states,
            "initial": extraction.initial,
            "symbols": [_jsonable(s) for s in extraction.symbols],
            "delta": extraction.delta.tolist(),
            "out": [None if o is None else list(o) for o in extraction.out],
            "contradictions": extraction.contradictions,
            "unobserved": extraction.unobserved,
        }
    return {
        "type": "lattice",
        "kind": extraction.kind,
        "rank": extraction.rank,
        "basis": extraction.basis.tolist(),
        "max_error": extraction.max_error,
    }


def save_artifacts(result: SolveResult, folder: str | Path) -> list[Path]:
    """Write whatever the run produced for one task into `folder`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    name = result.task
    if result.program is not None:
        path = folder / f"{name}.py"
        path.write_text(result.program.source)
        written.append(path)
    if result.trained is not None:
        trained = result.trained
        meta = {
            "task": name,
            "spec": json.dumps(trained.spec.as_dict()),
            "d_input": str(trained.model.d_input),
            "d_output": str(trained.model.d_output),
            "classes": json.dumps(None if trained.classes is None else trained.classes.tolist()),
            "accuracy": str(trained.accuracy),
        }
        tensors = {k: v.detach().contiguous() for k, v in trained.model.state_dict().items()}
        path = folder / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        written.append(path)
    if result.extraction is not None:
        path = folder / f"{name}.states.json"
        path.write_text(json.dumps(states_record(result.extraction)))
        written.append(path)
    record = {"row": result.row(), "verification": asdict(result.verification) if result.verification else None}
    path = folder / f"{name}.verification.json"
    path.write_text(json.dumps(record, default=_jsonable, indent=1))
    written.append(path)
    return written


def load_network(path: str | Path) -> tuple[MipsRNN, RNNSpec, np.ndarray | None]:
    """Rebuild a saved network: (model, spec, output classes or None)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    spec = RNNSpec(**json.loads(meta["spec"]))
    tensors = load_file(str(path))
    model = MipsRNN(int(meta["d_input"]), int(meta["d_output"]), spec)
    model.load_state_dict(tensors)
    classes = json.loads(meta["classes"])
    return model, spec, None if classes is None else np.asarray(classes)
