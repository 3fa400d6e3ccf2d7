"""Views of the workbench's analyses in other tools' formats: CircuitsVis (`circuits_vis`), for
TransformerLens users. The tuned-lens package's lens files live with the lens (`lens.tuned_lens_package`)."""
