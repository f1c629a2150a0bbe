"""Logging and seeding set-up shared by every stage's main()."""

from __future__ import annotations

import logging
import os
import random


def setup_logging(level: int = logging.INFO) -> None:
    """One readable line per event on stderr; quiet the chatty libraries."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("presidio-analyzer", "presidio-anonymizer", "great_expectations", "httpx", "urllib3",
                  "filelock", "datasets", "transformers", "tldextract"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from base.seed."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import numpy as np

    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # the data stages do not need torch
        pass
