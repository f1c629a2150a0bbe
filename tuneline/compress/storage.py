"""A compressed variant on disk: save it, load it back, measure its size.

One folder per variant under models/compressed/<name>/:
  variant.json      what it is: name, kind, format, source, labels, max_length, kept heads,
                    quantization recipe, measured sparsity (written by the compress stage)
  config.json       the transformers config of the fp32 architecture
  model.safetensors fp32 weights (format `hf` and `heads`), or
  model.int8.pt     the int8 state_dict (format `int8`; loads with torch.load(weights_only=True))
  tokenizer files   so the folder is self-contained
  calibrator/       calibrator.json: the variant's own calibrator (tuneline.evaluate.calibration), fitted by the stage

Formats:
  hf     a plain transformers folder: `AutoModelForSequenceClassification.from_pretrained` loads it
         (the distilled student; magnitude-pruned models, whose zeros are ordinary zeros).
  heads  attention heads removed, so layer shapes differ from what the config says: the loader
         builds the architecture from config.json, slices it to `kept_heads`, then loads weights.
  int8   dynamic int8 (tuneline.compress.quantization): rebuilt from config.json (+ kept_heads if its
         source was head-pruned), quantized with the saved recipe, then the int8 weights loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tuneline.compress.pruning import apply_kept_heads
from tuneline.compress.quantization import load_int8, save_int8
from tuneline.data.records import write_json

VARIANT_FILE = "variant.json"
WEIGHT_FILES = ("model.safetensors", "model.int8.pt", "pytorch_model.bin")
FORMATS = ("hf", "heads", "int8")


@dataclass
class Compressed:
    """A loaded variant: eval-mode model (outputs `.logits`), its tokenizer and its variant.json."""

    model: nn.Module
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.info.get("labels", []))

    @property
    def max_length(self) -> int:
        return int(self.info.get("max_length", 128))


def save_variant(model: nn.Module, tokenizer: Any, out_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write a variant folder. `info["format"]` picks how the weights are stored (see module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fmt = info.get("format")
    if fmt not in FORMATS:
        raise ValueError(f"variant format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "int8":
        model.config.save_pretrained(out)
        save_int8(model, out / "model.int8.pt")
    else:
        model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    write_json(info, out / VARIANT_FILE)
    return out


def read_info(path: str | Path) -> dict[str, Any]:
    f = Path(path) / VARIANT_FILE
    if not f.exists():
        raise FileNotFoundError(f"{f}: missing; {path} is not a compressed variant folder (run dvc repro compress)")
    return json.loads(f.read_text(encoding="utf-8"))


def _skeleton(path: Path, info: dict[str, Any]) -> nn.Module:
    """The fp32 architecture of a variant with freshly initialised weights (overwritten by the loader)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path)  # nosec B615 # a folder we saved
    model = AutoModelForSequenceClassification.from_config(config)
    if info.get("kept_heads"):
        apply_kept_heads(model, info["kept_heads"])
    return model


def load_variant(path: str | Path) -> Compressed:
    """Load a variant folder written by save_variant; the model is in eval mode on the CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    info = read_info(path)
    fmt = info.get("format")
    if fmt == "hf":
        model = AutoModelForSequenceClassification.from_pretrained(path)  # nosec B615 # a folder we saved
    elif fmt == "heads":
        from safetensors.torch import load_file

        model = _skeleton(path, info)
        model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
    elif fmt == "int8":
        q = info.get("quantization", {})
        model = load_int8(_skeleton(path, info), path / "model.int8.pt",
                          per_channel=q.get("per_channel", True), embeddings=q.get("embeddings", True))
    else:
        raise ValueError(f"{path / VARIANT_FILE}: unknown format {fmt!r} (expected one of {FORMATS})")
    tokenizer = AutoTokenizer.from_pretrained(path)  # nosec B615 # a folder we saved
    return Compressed(model=model.eval(), tokenizer=tokenizer, info=info)


def weights_bytes(path: str | Path) -> int:
    """Size on disk of a variant's (or model folder's) weight files; tokenizer and config excluded."""
    path = Path(path)
    return sum((path / f).stat().st_size for f in WEIGHT_FILES if (path / f).exists())
