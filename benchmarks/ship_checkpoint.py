"""Copy a trained checkpoint into the package as an embedded model (weights, config, vocabulary).

Drops the optimizer state (not needed to load; resuming uses the original run folder) and rewrites
the recorded reproduce command so its --out names the embedded location.
Run: python benchmarks/ship_checkpoint.py runs/lstm-stdlib-2x128 lstm-stdlib-2x128
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from workbench.registry import CHECKPOINTS_DIR

SHIPPED_FILES = ("model.safetensors", "config.json", "vocab.json")


def ship(run_dir: Path, name: str) -> Path:
    target = CHECKPOINTS_DIR / name
    target.mkdir(parents=True, exist_ok=True)
    for file in SHIPPED_FILES:
        shutil.copy2(run_dir / file, target / file)
    config_path = target / "config.json"
    document = json.loads(config_path.read_text())
    command = document["provenance"]["command"].split()
    if "--out" in command:
        command[command.index("--out") + 1] = f"workbench/checkpoints/{name}"
    document["provenance"]["command"] = " ".join(command)
    config_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return target


if __name__ == "__main__":
    path = ship(Path(sys.argv[1]), sys.argv[2])
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"shipped {path} ({size / 1e6:.2f} MB)")
