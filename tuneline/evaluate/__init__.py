"""Evaluation: scoring a model on a split (`scoring`), batched inference (`inference`), metrics through
`evaluate` with local metric modules (`metrics`, `metric_modules/`), calibration, figures, and the
outputs a person reads: the review report (`report`), its document model (`document`), the comparison
with the previous run (`baseline`) and the model card (`model_card`)."""
