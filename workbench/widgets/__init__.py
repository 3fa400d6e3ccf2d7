"""ipywidgets front ends; they import analysis modules, never the other way round."""
