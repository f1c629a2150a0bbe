"""Fine-tuning methods: which weights train, and how the model is wrapped for that.

`PEFT_TABLE` is a plain table of our defaults per PEFT method: each entry maps the method's
params section to a PEFT config dict, which `peft.get_peft_config` turns into the config
object (PEFT's own registry does the rest). `full` trains everything; `adapter` inserts our
Houlsby adapters (tuneline.train.adapters) and trains them plus the head.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import peft
from torch import nn

from tuneline.train import adapters
from tuneline.train.models import is_head_parameter
from tuneline.params import Method, TrainParams

PEFT_TABLE: dict[str, Callable[[TrainParams, Path], dict]] = {
    "lora": lambda p, base_dir: {
        "peft_type": "LORA", "r": p.lora.r, "lora_alpha": p.lora.alpha, "lora_dropout": p.lora.dropout,
        "target_modules": p.lora.target_modules, "bias": "none",
    },
    "ia3": lambda p, base_dir: {
        "peft_type": "IA3", "target_modules": p.ia3.target_modules,
        "feedforward_modules": p.ia3.feedforward_modules,
    },
    "prefix": lambda p, base_dir: {
        "peft_type": "PREFIX_TUNING", "num_virtual_tokens": p.prefix.num_virtual_tokens,
        "prefix_projection": p.prefix.projection, "encoder_hidden_size": p.prefix.encoder_hidden_size,
    },
    "prompt": lambda p, base_dir: {
        "peft_type": "PROMPT_TUNING", "num_virtual_tokens": p.prompt.num_virtual_tokens,
        **({"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": p.prompt.init_text,
            "tokenizer_name_or_path": str(base_dir)} if p.prompt.init_text else {"prompt_tuning_init": "RANDOM"}),
    },
    "p_tuning": lambda p, base_dir: {
        "peft_type": "P_TUNING", "num_virtual_tokens": p.p_tuning.num_virtual_tokens,
        "encoder_reparameterization_type": p.p_tuning.encoder, "encoder_hidden_size": p.p_tuning.encoder_hidden_size,
    },
}
METHODS: tuple[str, ...] = get_args(Method)
"""Every train.method (tuneline.params.Method): `full`, `adapter` and the PEFT_TABLE entries
(tests/tuneline/test_methods.py checks the table covers exactly these)."""


def peft_config(p: TrainParams, base_dir: str | Path) -> peft.PeftConfig:
    """The PEFT config of `p.method` for a sequence-classification task."""
    if p.method not in PEFT_TABLE:
        raise ValueError(f"train.method {p.method!r} is not a PEFT method; PEFT methods: {sorted(PEFT_TABLE)}")
    return peft.get_peft_config({"task_type": "SEQ_CLS", **PEFT_TABLE[p.method](p, Path(base_dir))})


def apply_method(model: nn.Module, p: TrainParams, base_dir: str | Path) -> nn.Module:
    """Return the model to train for `p.method`, with requires_grad set on exactly the trained weights.

    full: every weight. adapter: Houlsby adapters + head. PEFT methods: what PEFT marks trainable
    (the method's weights + the head, which PEFT's SEQ_CLS task saves as modules_to_save).
    """
    if p.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if p.method == "adapter":
        model.requires_grad_(False)
        adapters.add_adapters(model, p.adapter.bottleneck, p.adapter.target_modules, p.adapter.activation)
        for name, param in model.named_parameters():
            if ".adapter." in f".{name}" or is_head_parameter(name):
                param.requires_grad_(True)
        return model
    if p.method in PEFT_TABLE:
        with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return peft.get_peft_model(model, peft_config(p, base_dir))
    raise ValueError(f"unknown train.method {p.method!r}; choose one of {list(METHODS)}")


def adapter_meta(p: TrainParams) -> dict:
    """What load_finetuned needs to rebuild our adapters (saved as adapter/houlsby.json)."""
    return {"bottleneck": p.adapter.bottleneck, "activation": p.adapter.activation,
            "target_modules": p.adapter.target_modules}
