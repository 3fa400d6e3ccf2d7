"""MIPS (Michaud et al. 2024): RNN -> finite state machine -> Python program.

>>> from workbench.analysis import mips
>>> task = mips.Task("Count_Sevens", lambda xs: [xs[: t + 1].count(7) for t in range(len(xs))], range(10))
>>> result = mips.solve(task, budget=30)  # doctest: +SKIP
>>> print(result.program.source, result.verification.summary())  # doctest: +SKIP

`solve` checks the task's reference function, then runs the pipeline (`pipeline.solve_task`); the
62-task suite is `run_benchmark` (`suite`), the command line `python -m workbench.analysis.mips.benchmark`
(`--task-file` / `--task` for your own tasks). Programs are verified in a sandbox (`sandbox`).
Imports are lazy (PEP 562, as in `workbench`): importing the package is cheap, each name loads its
module when first touched.
"""

from __future__ import annotations

from workbench.lazy import lazy_exports

_LAZY = {
    # the pipeline and the suite
    "DEFAULT_BUDGET": "pipeline",
    "SolveResult": "pipeline",
    "solve": "pipeline",
    "extract_program": "pipeline",
    "extraction_candidates": "pipeline",
    "solve_task": "pipeline",
    "merge_results": "suite",
    "results_table": "suite",
    "run_benchmark": "suite",
    "update_results": "suite",
    # tasks, networks, training
    "TASKS": "tasks",
    "Task": "tasks",
    "TaskDefinitionError": "tasks",
    "UnknownTaskError": "tasks",
    "get_task": "tasks",
    "list_tasks": "tasks",
    "register_task": "tasks",
    "MipsRNN": "rnn",
    "RNNSpec": "rnn",
    "TrainedRNN": "training",
    "candidate_specs": "training",
    "predict": "training",
    "train_rnn": "training",
    # the stages: simplify, extract, synthesise, verify
    "simplify_linear": "simplify",
    "FSM": "fsm",
    "minimize": "fsm",
    "Lattice": "lattice",
    "LatticeError": "lattice",
    "lattice_candidates": "lattice",
    "state_machines": "clustering",
    "Program": "synthesis",
    "program_from_fsm": "synthesis",
    "program_from_lattice": "synthesis",
    "SandboxError": "sandbox",
    "SandboxLimits": "sandbox",
    "UnsafeProgramError": "sandbox",
    "check_program": "sandbox",
    "run_program": "sandbox",
    "Verification": "verify",
    "verify_program": "verify",
    # artefacts and figures
    "load_network": "artifacts",
    "save_artifacts": "artifacts",
    "fsm_figure": "figures",
    "state_cloud_figure": "figures",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
