"""Sequence classifiers: build one from a base model folder, save a fine-tuned one, load it back.

A fine-tuned model folder (the train stage's `models/finetuned/`) holds:
  tuneline.json            what it is: method, labels (class-id order), max_length, base source, merged?
  tokenizer files          the base model's tokenizer
  config.json + weights    a plain transformers classifier, for `full` and for methods that merge
                           into the base weights (lora, ia3): loads without peft
  adapter/                 for every non-full method: the trained weights only (peft
                           `save_pretrained` output, or houlsby.json + weights for our adapters),
                           applied on top of the base model named in tuneline.json
`load_finetuned` returns the merged model when there is one, else base + adapter.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from tuneline.train import adapters
from tuneline.data import assets
from tuneline.params import Paths, Source
from tuneline.data.records import replace_dir

META_FILE = "tuneline.json"
ADAPTER_DIR = "adapter"
HOULSBY_CONFIG = "houlsby.json"
HOULSBY_WEIGHTS = "adapter_model.safetensors"
# Modules that form the task head; PEFT's SEQ_CLS task trains the same names (modules_to_save).
HEAD_MODULES = ("classifier", "score")
# Config attributes that hold dropout probabilities, across the encoder families in transformers.
DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                 "dropout", "attention_dropout", "hidden_dropout", "seq_classif_dropout")
MERGEABLE = ("lora", "ia3")
log = logging.getLogger("tuneline.train.models")


@dataclass
class Finetuned:
    """A fine-tuned classifier ready for inference."""

    model: nn.Module
    """In eval mode; `model(**tokenizer(texts, ...)).logits` are class logits [n, len(labels)]."""
    tokenizer: Any
    labels: list[str]
    """Class names in class-id order (classification.labels at training time)."""
    meta: dict = field(default_factory=dict)
    """tuneline.json: method, base (source description), base_source, max_length, labels, merged."""


def _drop_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


def build_classifier(base_dir: str | Path, labels: list[str], dropout: float | None = None) -> tuple[nn.Module, Any]:
    """A sequence classifier on top of a pretrained encoder folder, head sized and named from `labels`.

    The head is freshly initialized from torch's global RNG (seed first for reproducibility).
    `dropout` overrides every dropout probability the config declares; None keeps the model's.
    """
    id2label, label2id = dict(enumerate(labels)), {lab: i for i, lab in enumerate(labels)}
    config = AutoConfig.from_pretrained(base_dir, num_labels=len(labels), id2label=id2label,
                                        label2id=label2id)  # nosec B615 # a local folder (data.assets)
    if dropout is not None:
        for attr in DROPOUT_ATTRS:
            if hasattr(config, attr):
                setattr(config, attr, dropout)
    # transformers logs a table of the (expected) fresh head keys; report only surprising ones
    loader_log = logging.getLogger("transformers.modeling_utils")
    loader_log.addFilter(_drop_load_report)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(  # nosec B615 # a local folder (data.assets)
            base_dir, config=config, output_loading_info=True)
    finally:
        loader_log.removeFilter(_drop_load_report)
    missing = [k for k in info["missing_keys"] if not is_head_parameter(k) and "pooler" not in k]
    if missing:
        log.warning("%s: %d weights missing from the checkpoint were initialized randomly: %s",
                    base_dir, len(missing), missing[:5])
    tokenizer = AutoTokenizer.from_pretrained(base_dir)  # nosec B615 # a local folder (data.assets)
    return model, tokenizer


def encoder_depth(model: nn.Module) -> int:
    """Number of transformer layers of the (possibly PEFT-wrapped) model."""
    config = model.config
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    raise ValueError(f"cannot tell the number of layers of {type(model).__name__} from its config")


def is_head_parameter(name: str) -> bool:
    parts = name.split(".")
    return any(h in parts for h in HEAD_MODULES)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; PEFT's frozen copies of wrapped modules count once in total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)
    return trainable, total


# --------------------------------------------------------------------------- save
def save_finetuned(model: nn.Module, tokenizer: Any, out_dir: str | Path, meta: dict) -> Path:
    """Write a fine-tuned model folder atomically (temp folder, then rename over `out_dir`).

    `meta` must hold method, labels, max_length, base and base_source. For lora/ia3 the adapter
    is saved and then merged into the base weights (this consumes the PEFT wrapper: do it last).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        method = meta["method"]
        meta = {**meta, "merged": method == "full" or method in MERGEABLE}
        tokenizer.save_pretrained(tmp)
        if method == "full":
            model.save_pretrained(tmp)
        elif method == "adapter":
            _save_houlsby(model, tmp / ADAPTER_DIR, meta["adapter"])
        else:
            model.save_pretrained(tmp / ADAPTER_DIR)
            if method in MERGEABLE:
                model.merge_and_unload().save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _save_houlsby(model: nn.Module, out: Path, config: dict) -> None:
    out.mkdir(parents=True)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
             if n in set(adapters.adapter_parameter_names(model)) or is_head_parameter(n)}
    save_file(state, out / HOULSBY_WEIGHTS)
    (out / HOULSBY_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- load
def load_finetuned(path: str | Path, cache_dir: str | Path | None = None, device: str | None = None) -> Finetuned:
    """Load a folder written by `save_finetuned`, in eval mode.

    Merged methods load as plain transformers models. The others (prefix, prompt, p_tuning,
    adapter) rebuild the base model from `base_source` in tuneline.json (resolved through the
    assets module, using `cache_dir`, default paths.cache) and apply the saved adapter.
    """
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file}: missing; {path} is not a tuneline model folder (run dvc repro train)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    labels = list(meta["labels"])
    tokenizer = AutoTokenizer.from_pretrained(path)  # nosec B615 # a folder we saved
    if meta.get("merged"):
        model = AutoModelForSequenceClassification.from_pretrained(path)  # nosec B615 # a folder we saved
    else:
        source = TypeAdapter(Source).validate_python(meta["base_source"])
        base_dir = assets.resolve_model(source, cache_dir if cache_dir is not None else Paths().cache)
        model, _ = build_classifier(base_dir, labels)
        if meta["method"] == "adapter":
            cfg = json.loads((path / ADAPTER_DIR / HOULSBY_CONFIG).read_text(encoding="utf-8"))
            adapters.add_adapters(model, cfg["bottleneck"], cfg["target_modules"], cfg["activation"])
            state = load_file(path / ADAPTER_DIR / HOULSBY_WEIGHTS)
            missing, unexpected = model.load_state_dict(state, strict=False)
            wanted = set(adapters.adapter_parameter_names(model))
            if unexpected or wanted & set(missing):
                raise ValueError(f"{path / ADAPTER_DIR}: weights do not fit the model "
                                 f"(unexpected {unexpected[:3]}, missing {sorted(wanted & set(missing))[:3]})")
        else:
            from peft import PeftModel

            with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                model = PeftModel.from_pretrained(model, path / ADAPTER_DIR)
    n_out = model.config.num_labels if hasattr(model, "config") else len(labels)
    if n_out != len(labels):
        raise ValueError(f"{path}: model has {n_out} outputs but tuneline.json lists {len(labels)} labels")
    if device is not None:
        model.to(torch.device(device))
    model.eval()
    return Finetuned(model=model, tokenizer=tokenizer, labels=labels, meta=meta)
