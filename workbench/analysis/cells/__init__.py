"""Cell visualization (Karpathy, Johnson & Fei-Fei 2015, *Visualizing and Understanding Recurrent
Networks*): text heatmaps, gate saturation, discovery of interpretable cells, n-gram error analysis.

Each module returns plain data (arrays, dataclasses, DataFrames); `figures` draws them with plotly.

>>> from workbench.analysis.cells import planted_lstm, record, discover_cells
>>> model = planted_lstm()
>>> rec = record(model, "f(a, (b))\\n" * 20, ["c"])
>>> int(discover_cells(rec, ["bracket_depth"]).top("bracket_depth").unit[0])
0
"""

from workbench.analysis.cells.causal import push_effects
from workbench.analysis.cells.controls import ValidatedCell, conditional_correlation, validate_cell
from workbench.analysis.cells.discovery import (
    ActivatingSpan,
    CellDiscovery,
    activating_spans,
    correlations,
    discover_cells,
    probe_features,
    unit_profile,
)
from workbench.analysis.cells.features import FEATURES, Feature, compute_features, regex_feature
from workbench.analysis.cells.from_store import discover_cells_from_store
from workbench.analysis.cells.ngram import (
    ERROR_CATEGORIES,
    ErrorAnalysis,
    NGramModel,
    error_analysis,
    long_range_analysis,
)
from workbench.analysis.cells.recording import (
    GATES,
    CellRecording,
    next_char_probs,
    record,
)
from workbench.analysis.cells.sampling import (
    SampleRun,
    TextSample,
    clean_line_starts,
    join_recordings,
    run_sample,
    spread_sample,
)
from workbench.analysis.cells.saturation import GateSaturation, gate_saturation, saturation_fractions
from workbench.analysis.cells.views import cell_heatmap, top_units_heatmap
from workbench.analysis.heatmap import TextHeatmap, heatmap_grid, text_heatmap
from workbench.analysis.planted.cells import PLANTED_CELLS, planted_lstm
from workbench.analysis.tokens import printable_tokenizer

__all__ = [
    "ERROR_CATEGORIES",
    "FEATURES",
    "GATES",
    "PLANTED_CELLS",
    "ActivatingSpan",
    "CellDiscovery",
    "CellRecording",
    "ErrorAnalysis",
    "Feature",
    "GateSaturation",
    "NGramModel",
    "SampleRun",
    "TextHeatmap",
    "TextSample",
    "ValidatedCell",
    "activating_spans",
    "cell_heatmap",
    "clean_line_starts",
    "compute_features",
    "conditional_correlation",
    "correlations",
    "discover_cells",
    "discover_cells_from_store",
    "error_analysis",
    "gate_saturation",
    "heatmap_grid",
    "join_recordings",
    "long_range_analysis",
    "next_char_probs",
    "planted_lstm",
    "printable_tokenizer",
    "probe_features",
    "push_effects",
    "record",
    "regex_feature",
    "run_sample",
    "saturation_fractions",
    "spread_sample",
    "text_heatmap",
    "top_units_heatmap",
    "unit_profile",
    "validate_cell",
]
