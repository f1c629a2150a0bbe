"""What a prediction server calls from the library: the model loader, the registry's production
loader and the feedback anonymizer (the clean stage's presidio settings). The application itself
(FastAPI, params, environment, uvicorn) is apps/serve.py; nothing here reads params.yaml or the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tuneline.params import CleanParams
from tuneline.deploy.predictor import Predictor
from tuneline.deploy.registry import Registry

Anonymizer = Callable[[list[str]], list[tuple[str, int]]]
"""texts -> [(anonymized text, number of replaced entities)]"""


def build_anonymizer(clean: CleanParams) -> Anonymizer:
    """The clean stage's presidio set-up (clean.*), as texts -> [(anonymized, n_replaced)].
    The analyzer is built once (~1 s); each call anonymizes in this process (no worker pool)."""
    from tuneline.data.pii import fast

    run = fast.clean_anonymizer(clean, n_process=1)

    def anonymize(texts: list[str]) -> list[tuple[str, int]]:
        return [(a.text, len(a.replaced)) for a in run(texts)]

    anonymize(["warm-up: a bad clean.pii_entities fails here, at start-up"])
    return anonymize


def load_model(path: str | Path, version: str, cache_dir: str | Path | None = None) -> Predictor:
    """A model folder (finetuned/ [+ calibrated/]) or a compressed variant folder
    (${paths.models}/compressed/<name>/: variant.json, weights, its own calibrator/)."""
    path = Path(path)
    if not (path / "variant.json").exists():
        return Predictor.load(path, version, cache_dir=cache_dir)
    from tuneline.evaluate.calibration import load_calibrator
    from tuneline.compress.storage import load_variant

    v = load_variant(path)
    calibrator = load_calibrator(path / "calibrator") if (path / "calibrator" / "calibrator.json").exists() else None
    return Predictor(version=version, labels=v.labels, max_length=v.max_length, model=v.model, tokenizer=v.tokenizer,
                     calibrator=calibrator, meta=dict(v.info))


def production_loader(registry_dir: str | Path, cache_dir: str | Path | None = None
                      ) -> tuple[Callable[[], Predictor], Callable[[], str | None]]:
    """(load the registry's production model, its version on disk now) for a server that reloads."""
    registry = Registry(registry_dir)

    def version() -> str | None:
        rec = registry.production()
        return rec["version"] if rec else None

    def load() -> Predictor:
        rec = registry.production()
        if rec is None:
            raise FileNotFoundError(f"{registry.pointer}: no production model yet. Run one retraining "
                                    "(python -m flows.retrain run) or pass --model DIR")
        return Predictor.load(registry.version_dir(rec["version"]), rec["version"], cache_dir=cache_dir)

    return load, version
