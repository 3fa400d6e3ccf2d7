"""`MipsExplorer`: an ipywidgets front end to `workbench.analysis.mips` (Michaud et al. 2024).

Pick a task and a budget (work-seconds of training search), run the pipeline (train -> simplify ->
states -> program -> verify), and see the hidden-state cloud coloured by discovered state, the FSM as
a graph and the program. While the search runs the widget shows its busy state and the search's
progress bars. Every error (unknown task, a failed search) is shown inside the widget; the kernel
keeps running.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from workbench.analysis.mips import pipeline
from workbench.analysis.mips.figures import fsm_figure, state_cloud_figure
from workbench.analysis.mips.fsm import FSM
from workbench.analysis.mips.tasks import get_task, list_tasks
from workbench.analysis.mips.training import TrainedRNN
from workbench.analysis.mips.verify import verify_program
from workbench.widgets.display import BusyState, error_html, set_outputs
from workbench.widgets.display import in_kernel as _in_kernel

__all__ = ["MipsExplorer"]

RUN_LABEL = "train + extract"


class MipsExplorer:
    """Task picker, run button, and the result: state cloud, FSM graph, program, verification.

    `result=` shows a search already run (`pipeline.solve_task`) without running it again;
    `trained=` shows one network already trained (`training.train_rnn`): its states, program and
    verification. The button runs a new search for the chosen task.
    """

    def __init__(
        self,
        task: str = "Parity_All",
        budget: float = pipeline.DEFAULT_BUDGET,
        *,
        run: bool = False,
        result: pipeline.SolveResult | None = None,
        trained: TrainedRNN | None = None,
    ):
        self.result: pipeline.SolveResult | None = None
        self.cloud_figure: Any = None
        self.fsm_figure: Any = None
        if result is not None and trained is not None:
            raise ValueError("give a search result or a trained network, not both")
        if result is not None:
            task = result.task
        elif trained is not None:
            task = trained.task.name
        self.task_select = widgets.Combobox(
            options=list_tasks(), value=task, description="task", ensure_option=False
        )
        self.budget = widgets.FloatSlider(value=budget, min=5, max=300, step=5, description="budget work-s")
        self.run_button = widgets.Button(description=RUN_LABEL, button_style="primary")
        self.busy = BusyState([self.task_select, self.budget, self.run_button])
        self.error = widgets.HTML(value="")
        self.summary = widgets.HTML(value="")
        self.program = widgets.HTML(value="")
        self.cloud = widgets.Output()
        self.graph = widgets.Output()
        tabs = widgets.Tab(children=[self.program, self.cloud, self.graph])
        for i, title in enumerate(("program", "state cloud", "FSM")):
            tabs.set_title(i, title)
        self.widget = widgets.VBox(
            [widgets.HBox([self.task_select, self.budget, self.run_button]), self.busy.widget, self.error,
             self.summary, tabs]
        )
        self.run_button.on_click(lambda _b: self.update())
        if trained is not None:
            self.show_network(trained)
        elif result is not None:
            self.show(result)
        elif run:
            self.update()

    def update(self) -> None:
        """Run the pipeline for the chosen task (busy meanwhile); any error goes to `self.error`."""
        try:
            with self.busy("searching…"):
                task = get_task(str(self.task_select.value))
                result = pipeline.solve_task(task, budget=float(self.budget.value), progress=_in_kernel())
                self._render(result)
        except Exception as exc:  # shown in the widget: the kernel keeps running
            self._show_error(exc)
        else:
            self.error.value = ""

    def show(self, result: pipeline.SolveResult) -> None:
        """Show a finished search (its program, state cloud and FSM); a failed one shows its reason."""
        try:
            self._render(result)
        except Exception as exc:
            self._show_error(exc)
        else:
            self.error.value = ""

    def show_network(self, trained: TrainedRNN) -> None:
        """Show one trained network: read its states, write the program, verify it (busy meanwhile)."""
        try:
            with self.busy("reading states…"):
                self._render(network_result(trained))
        except Exception as exc:
            self._show_error(exc)
        else:
            self.error.value = ""

    def _show_error(self, exc: Exception) -> None:
        self.error.value = error_html(exc)
        self.summary.value = self.program.value = ""

    def _render(self, result: pipeline.SolveResult) -> None:
        task = get_task(result.task)
        self.result = result
        if result.program is None:
            raise RuntimeError(f"{task.name}: no program found ({result.note or 'no exact network'})")
        verdict = result.verification.summary() if result.verification else ""
        self.summary.value = (
            f"<b>{html.escape(task.name)}</b>: RNN {html.escape(result.rnn)}, "
            f"{result.n_states} state(s), {html.escape(result.method)}<br>{html.escape(verdict)}"
        )
        self.program.value = f"<pre>{html.escape(result.program.source)}</pre>"
        trained, ext = result.trained, result.extraction
        x, _ = task.generate(200, seed=7)
        hidden = trained.model.hidden_states(trained.features(x)).numpy().reshape(-1, trained.model.state_size)
        if isinstance(ext, FSM) and ext.labels is not None:
            labels = ext.labels[:200].ravel() if ext.labels.shape[0] >= 200 else None
        else:
            labels = None
        if labels is None or len(labels) != len(hidden):
            from workbench.analysis.mips.lattice import integer_lattice

            labels = (
                integer_lattice(trained, n_seqs=200, seed=7).z[..., 0].ravel()
                if trained.spec.family == "linear"
                else [0] * len(hidden)
            )
        self.cloud_figure = state_cloud_figure(hidden, labels, f"{task.name}: hidden states")
        self.fsm_figure = fsm_figure(ext, f"{task.name}: minimised FSM") if isinstance(ext, FSM) else None
        self._show(self.cloud, self.cloud_figure, "")
        self._show(self.graph, self.fsm_figure, "integer states (lattice): no finite machine to draw")

    def _show(self, out: widgets.Output, fig: Any, empty: str) -> None:
        set_outputs(out, fig if fig is not None else empty)

    def _ipython_display_(self) -> None:
        from workbench.widgets.static import display_with_fallback

        display_with_fallback(self.widget)


def network_result(trained: TrainedRNN) -> pipeline.SolveResult:
    """One trained network as a search result of one attempt: its first state reading (lattice or
    minimised FSM), the program written from it, and that program's strict verification."""
    reading, program = pipeline.extract_program(trained)
    verification = verify_program(program.source, trained.task)
    return pipeline.SolveResult(
        trained.task.name, solved=verification.passed, rnn=trained.spec.label(),
        n_states=reading.n_states if isinstance(reading, FSM) else reading.rank, method=program.method,
        program=program, verification=verification, attempts=1, exact_nets=int(trained.exact),
        trained=trained, extraction=reading,
    )
