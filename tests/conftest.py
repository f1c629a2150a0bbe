"""Shared fixtures: tiny real components (no downloads, milliseconds to build).

- `tiny_model_dir`: a 2-layer BERT (hidden 32) with a real WordPiece tokenizer, saved like a
  hub model folder, so every code path that loads a base model by path can use it.
- `tiny_records`: a small labelled ham/spam-like dataset, enough rows per class to split.
- `tiny_pipeline`: one real `dvc repro` of the whole DAG on tiny data, once per session.
- `repo_root`: the repository root (tests never chdir into it).
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core box torch's thread pool
# makes them up to 10x slower; subprocesses (dvc repro in the e2e tests) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextmanager
def single_thread():
    """torch on one thread in this process (subprocesses get OMP_NUM_THREADS above): the same float
    reductions as a one-thread subprocess, and no spinning thread pool on a shared 2-core CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Module-wide single_thread(): `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with single_thread():
        yield


HAM_WORDS = "ok see you later at home call me when lunch dinner thanks love going now sure good night".split()
SPAM_WORDS = "free win prize cash claim urgent offer call now txt reply stop award winner mobile".split()


def make_texts(n: int, seed: int = 0) -> pd.DataFrame:
    """n synthetic short messages, ~1/4 spam, distinguishable by vocabulary."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        spam = i % 4 == 0
        words = SPAM_WORDS if spam else HAM_WORDS
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + f" {i}"
        rows.append({"text": text, "label": "spam" if spam else "ham"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny BERT base model folder (config, weights, tokenizer), like a hub snapshot."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted(set(HAM_WORDS + SPAM_WORDS + ["<", ">", "person", "phone", "number", "email", "address"]))
    vocab += [str(i) for i in range(10)] + list("abcdefghijklmnopqrstuvwxyz")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    # transformers 5: BertTokenizerFast takes the vocab as a dict (vocab_file is ignored)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(d)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, type_vocab_size=2)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(d)
    return d


@pytest.fixture
def tiny_records() -> pd.DataFrame:
    return make_texts(120)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_model_dir):
    """One real `dvc repro` of the whole DAG on tiny data (tests/tiny_repo.py), run once per session and
    shared by the end-to-end tests and the report tests."""
    from tests.tiny_repo import run_tiny_pipeline

    return run_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline"), tiny_model_dir)
