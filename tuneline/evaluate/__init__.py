"""Evaluation: scoring a model on a split (`scoring`) and the outputs a person reads: the review
report (`report`: one small function per section), the document model it is rendered with
(`document`: HTML and Markdown), the comparison with the previous run (`baseline`) and the model
card (`model_card`)."""
