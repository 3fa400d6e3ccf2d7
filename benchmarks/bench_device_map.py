"""What disk offload under a `device_map` costs against the model in memory, in one run.

A random Mamba checkpoint (transformers' MambaForCausalLM, saved to a temporary directory) is opened
three ways with `workbench.from_transformers`: whole in memory; half its blocks on "disk"; every block
on "disk". Each runs the same forward (fused path, no hooks), the candidates interleaved, medians of
the process's CPU time and of wall time. The floor of the offload's extra cost is reading the
offloaded weights themselves, measured beside it: every offloaded tensor read through its hook's
weights map (as accelerate reads it when the block runs) once per repetition. The page cache holds the folder after the
first read, so this is a warm-cache figure: memory bandwidth and deserialisation, not the disk's.

    python benchmarks/bench_device_map.py            # d_model 768, 12 layers, 512 tokens
    python benchmarks/bench_device_map.py --quick    # d_model 256, 4 layers, 128 tokens
Output goes to stdout and to benchmarks/device_map_results.md (--out).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import MambaConfig, MambaForCausalLM

from workbench.adapters import from_transformers
from workbench.adapters.placement import align_hooks


def clocks(fn: Callable[[], object]) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def block_map(layers: int, on_disk: set[int]) -> dict[str, str]:
    device_map = {f"backbone.layers.{i}": "disk" if i in on_disk else "cpu" for i in range(layers)}
    return {"backbone.embeddings": "cpu", **device_map, "backbone.norm_f": "cpu", "lm_head": "cpu"}


def read_offloaded(model: nn.Module) -> int:
    """Every offloaded weight of `model` read once through its accelerate hook's weights map (what the
    hook reads when its block runs; transformers indexes the checkpoint's own safetensors); returns bytes."""
    total = 0
    for module in model.modules():
        for hook in align_hooks(module):
            if hook.offload or hook.weights_map is not None:
                for name, _ in module.named_parameters(recurse=hook.place_submodules):
                    tensor = hook.weights_map[name]
                    total += tensor.numel() * tensor.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).with_name("device_map_results.md")))
    args = parser.parse_args()
    d_model, layers, length = (256, 4, 128) if args.quick else (768, 12, 512)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = MambaConfig(vocab_size=4096, hidden_size=d_model, state_size=16, num_hidden_layers=layers, expand=2)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "mamba"
        MambaForCausalLM(config).save_pretrained(directory)
        half = {i for i in range(layers) if i % 2}
        models = {
            "in memory": from_transformers(directory),
            "half the blocks on disk": from_transformers(directory, device_map=block_map(layers, half),
                                                         offload_folder=Path(tmp) / "half"),
            "every block on disk": from_transformers(directory, device_map=block_map(layers, set(range(layers))),
                                                     offload_folder=Path(tmp) / "all"),
        }
        tokens = torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1))
        reference = models["in memory"](tokens)
        for name, model in models.items():  # same numbers, and a warm-up
            assert torch.equal(model(tokens), reference), name
        on_disk = models["every block on disk"].hf_model
        weight_bytes = read_offloaded(on_disk)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in [*models, "read offloaded weights"]}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, model in models.items():
                    timings[name].append(clocks(lambda model=model: model(tokens, path="fused")))
                timings["read offloaded weights"].append(clocks(lambda: read_offloaded(on_disk)))
    median = {name: (statistics.median(c for c, _ in ts), statistics.median(w for _, w in ts))
              for name, ts in timings.items()}
    base_cpu, base_wall = median["in memory"]
    lines = [
        "# Disk offload under a device_map: cost against the model in memory",
        "",
        f"`python benchmarks/bench_device_map.py{' --quick' if args.quick else ''}`: random MambaForCausalLM, "
        f"d_model {d_model}, {layers} layers, vocab {config.vocab_size}, one row of {length} tokens, fused path, "
        f"no hooks, float32, 1 thread, {args.repeats} interleaved repetitions, medians. Block weights on disk: "
        f"{weight_bytes / 2**20:.1f} MiB. Scan kernel: {models['in memory'].blocks[0].mixer.last_kernel}. "
        "Outputs equal to the in-memory model's (torch.equal) before timing.",
        "",
        "| run | CPU s | wall s | CPU / in memory | wall / in memory |",
        "|---|---|---|---|---|",
    ]
    for name, (cpu, wall) in median.items():
        lines.append(f"| {name} | {cpu:.4f} | {wall:.4f} | {cpu / base_cpu:.2f} | {wall / base_wall:.2f} |")
    extra = median["every block on disk"][0] - base_cpu
    floor = median["read offloaded weights"][0]
    lines += ["", f"Extra CPU time with every block on disk: {extra:.4f} s per forward; reading the same weights "
              f"alone (warm page cache, the floor of that extra): {floor:.4f} s CPU "
              f"({weight_bytes / 2**20 / max(floor, 1e-9):.0f} MiB per CPU second). On a shared machine the "
              "wall column carries other jobs' load; the CPU column is the comparison."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
