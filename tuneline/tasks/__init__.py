"""What differs per task: `classification` (its loss, validation metrics and fit over the shared loop)
and `generation` (chat-template tokenization with response-only labels, packing without attention
across examples, the causal-LM loss, generation metrics; not yet wired into the DAG)."""
