"""Person names from large name lists, by the shape of the text around them (one presidio recognizer).

name_recognizer() reports PERSON for:
  sequences  two to four capitalised words (accents, Mc/O', particles: "José da Silva") whose first word
             is a listed first name, or whose last word is a listed surname after a word that is no
             everyday English word; leading words that are not names ("Tell", "Dear") are left out;
  initials   "J. Smith", "Andrea V. Roberts" (a listed surname after an initial);
  inverted   "REEVES, Ashley" (capitals, comma, a listed first name);
  cues       one name (capitalised or lowercase) after a word that introduces a person: greetings and
             sign-offs (hi, hey, yo, dear, thanks, thx, cheers, regards), self-introductions (i'm, its,
             this is, my name is), relations (my husband, sister, neighbour), and slots (ask for, tell,
             called, cardholder, contact), with a listed surname after it taken too;
  titles     "Ms Niță", "Herr Müller", "Dr. van Dijk" (the name after the title);
  possessive "Sent from Pooja's phone";
  self       a message or sentence that starts with a name and "here"/"again" ("Sarah here, ...");
  signatures a line holding only one to three capitalised words that start with a listed first name.
"Listed" = lexicon.first_names()/surnames() (names-dataset's top names of 105 countries, plus the
US census and ONS lists); a listed word that is also an everyday English word (lexicon.common_word:
"Will", "Grace", "Gold") counts only in the US/UK census list or with a second clue.
"""

from __future__ import annotations

import re

from tuneline.data.pii import lexicon
from tuneline.data.pii.addresses import EN_TYPES, LO, UP

NW = rf"(?:Mc|Mac|O['’]|D['’])?[{UP}][{LO}'’]+(?:-[{UP}][{LO}'’]+)?(?![{UP}{LO}])"
"""One capitalised name word."""
_PARTICLE = r"(?:van der|van den|van de|van|von der|von|de la|de los|de|da|di|del|der|den|la|le|dos|das|du|ter|bin|al|el)"
_SEQ = re.compile(rf"\b{NW}(?:\s+(?:[{UP}]\.(?=\s)|{NW}|{_PARTICLE}\s+{NW}))+")
_INITIAL = re.compile(rf"\b(?:{NW}\s+)?[{UP}]\.\s?({NW})\b")
_INVERTED = re.compile(rf"\b([{UP}]{{2,}}(?:[-'’][{UP}]{{2,}})?),\s+({NW})\b")
_STRONG_CUES = (r"i'?m|i am|it'?s|its|this is|my name is|my name's|name's|call me|hi|hey|hiya|hello|yo|dear|thanks|"
                r"thank you|thx|ty|cheers|bye|regards|morning|good morning|afternoon|evening|husband|wife|sister|"
                r"brother|son|daughter|mum|mom|dad|neighbou?r|fianc[ée]e?|called|named|cardholder|card holder|holder|"
                r"signed|attn:?|c/o|mr\\.?|mrs\\.?|ms\\.?|dr\\.?")
"""Words after which a capitalised word is a name unless it is an everyday word."""
_WEAK_CUES = r"tell|ask for|speak to|spoke to|spoke with|reach|contact|friend|partner|colleague|boss|with|for|by|from|to"
"""Words after which only a listed name counts ("from Leeds", "for Gold" are not names)."""
_CUE = re.compile(
    rf"(?i:\b(?P<cue>{_STRONG_CUES}|{_WEAK_CUES})[,:]?\s+)"
    rf"(?P<name>[{UP}{LO}][{LO}'’]+(?:-[{UP}][{LO}'’]+)?)(?![{UP}{LO}])(?:\s+(?P<next>{NW}|[{LO}]{{2,}}))?")
_STRONG_RX = re.compile(rf"(?i:{_STRONG_CUES})")
_INTRO_LOWER = re.compile(r"(?i:\b(?:i'?m|i am|it'?s|its|this is|my name is|my name's|name's|call me)\s+)"
                          rf"([{LO}]{{3,}}(?:-[{LO}]{{2,}})?)(?:\s+((?:{_PARTICLE}\s+)?[{LO}]{{3,}}(?:-[{LO}]{{2,}})?))?"
                          r"(?=\s*(?:again|here|speaking|from|[,.!?]|$))")
_POSSESSIVE = re.compile(rf"\b({NW})['’]s\s+(?:phone|account|order|email|e-mail|laptop|card|address|parcel|package|"
                         r"number|mobile|car|house|flat|tablet|computer|iphone|ipad)\b")
_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Sig|Sig\.ra|Dott|Pan|Pani)\.?\s+"
                    rf"({NW}(?:\s+(?:{_PARTICLE}\s+)?{NW})?)")
"""A lowercase self-introduction that ends there ("hi im ross, ...", "its diana again"): any listed first name."""
_SIGNATURE = re.compile(rf"^[ \t]*(?:[-–—~]+\s*)?({NW}(?:\s+(?:[{UP}]\.|{NW})){{0,2}})[ \t]*[.!]?[ \t]*$", re.MULTILINE)
_SELF = re.compile(rf"(?:^|(?<=[\n.!?]\s)|(?<=[\n]))({NW}(?:\s+{NW})?)(?=,?\s+(?:here|again|speaking)\b)", re.MULTILINE)
"""A message that starts with the writer's name: "Sarah here", "Mike Dunne again"."""
_STREET_TYPE = re.compile(rf"(?:{EN_TYPES})s?")
_NOT_NAMES = frozenset("""street road lane avenue drive close court way place hill park the and or but for a an
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december i im it its this that team support customer service order
invoice account thanks thank hi hello hey dear regards please sorry ok okay yes no christmas easter sir
madam mr mrs ms dr prof care help desk center centre new big happy merry kind best good great warm love
yours sincerely cheers reception returns billing delivery shipping refund card credit debit visa bank
""".split())


def _first(word: str) -> bool:
    w = word.lower()
    return w in lexicon.census_first_names() or (w in lexicon.first_names() and not lexicon.common_word(w))


def _surname(word: str, strict: bool = True) -> bool:
    w = word.lower()
    return w in lexicon.surnames() and (not strict or not lexicon.common_word(w))


def _lower_name(word: str) -> bool:
    """A lowercase word that is a listed first name counts as one when it is rare in English, or a
    little more frequent but among the POPULAR_RANK most given names of some country ("federico")."""
    z = lexicon.zipf(word)
    return z < LOWER_ZIPF or z < LOWER_ZIPF_POPULAR and lexicon.first_name_rank(word) <= POPULAR_RANK


def _plain(word: str) -> bool:
    """Not a name: an everyday English word that is not listed as a first name."""
    w = word.lower()
    return w in _NOT_NAMES or (lexicon.common_word(w) and w not in lexicon.census_first_names())


def find(text: str) -> list[tuple[int, int]]:
    """(start, end) of every person name found (see module doc)."""
    out: list[tuple[int, int]] = []
    places = lexicon.places()
    for m in _SEQ.finditer(text):
        words = [(w.start(), w.end(), w.group()) for w in re.finditer(rf"[{UP}]\.|{NW}|{_PARTICLE}", m.group())]
        words = [(m.start() + s, m.start() + e, w) for s, e, w in words]
        while words and (words[0][2].lower() in _NOT_NAMES or (_plain(words[0][2]) and not _first(words[0][2]))):
            words.pop(0)
        while words and (_plain(words[-1][2]) and not _surname(words[-1][2], strict=False)
                         or _STREET_TYPE.fullmatch(words[-1][2]) or words[-1][2].lower() in _NOT_NAMES):
            words.pop()
        if len(words) < 2 or len(words) > 5 or any(_plain(w) and not _surname(w, strict=False)
                                                   and not re.fullmatch(_PARTICLE, w) for _, _, w in words[1:-1]):
            continue
        first, last = words[0][2], words[-1][2]
        if " ".join(w for _, _, w in words).lower() in places or last.lower() in places and not _surname(last):
            continue
        if _first(first) or (_surname(last) and not _plain(first)):
            out.append((words[0][0], words[-1][1]))
    for m in _INITIAL.finditer(text):
        if _surname(m.group(1), strict=False) and m.group(1).lower() not in _NOT_NAMES:
            out.append((m.start(), m.end()))
    for m in _INVERTED.finditer(text):
        if _first(m.group(2)) and not lexicon.common_word(m.group(1).lower()):
            out.append((m.start(), m.end()))
    pos = 0
    while (m := _CUE.search(text, pos)) is not None:
        pos = m.start("name")  # cues chain ("hey its federico"): search again from the word after the cue
        name, nxt = m.group("name"), m.group("next")
        strong = _STRONG_RX.fullmatch(m.group("cue")) is not None
        if name.lower() in _NOT_NAMES or name.lower() in places and not _first(name):
            continue
        if name.islower():  # SMS slang is full of listed words ("jus", "oni", "lor"): rare listed first names only
            if not (_first(name) and len(name) >= 3 and _lower_name(name)
                    or name in lexicon.census_first_names() and not lexicon.common_word(name)):
                continue
        elif not (_first(name) or _surname(name) or strong and not _plain(name)):
            continue
        end = m.end("name")
        if nxt and (_surname(nxt) if nxt.islower() else _surname(nxt, strict=False) or (
                not _plain(nxt) and not _STREET_TYPE.fullmatch(nxt) and nxt.lower() not in places)):
            end = m.end("next")
        out.append((m.start("name"), end))
    for m in _INTRO_LOWER.finditer(text):
        name, last = m.group(1), m.group(2)
        if name in _NOT_NAMES or not (name in lexicon.census_first_names() or _first(name) and _lower_name(name)):
            continue
        last_ok = last and last.split()[-1] not in _NOT_NAMES and not lexicon.common_word(last.split()[-1])
        out.append((m.start(1), m.end(2) if last_ok else m.end(1)))
    for m in _POSSESSIVE.finditer(text):
        if not _plain(m.group(1)) or _first(m.group(1)):
            out.append(m.span(1))
    for m in _TITLE.finditer(text):
        words = m.group(1).split()
        while len(words) > 1 and _plain(words[-1]) and not _surname(words[-1], strict=False):
            words.pop()
        if not _plain(words[0]) or _surname(words[0], strict=False):
            out.append((m.start(1), m.start(1) + len(" ".join(words)) if len(words) == len(m.group(1).split())
                        else m.start(1) + m.group(1).index(words[-1]) + len(words[-1])))
    for m in _SELF.finditer(text):
        words = m.group(1).split()
        if not any(_plain(w) and not _first(w) for w in words) and m.group(1).lower() not in places:
            out.append((m.start(1), m.end(1)))
    for m in _SIGNATURE.finditer(text):
        words = m.group(1).split()
        if _first(words[0]) and not any(w.lower() in _NOT_NAMES for w in words):
            out.append((m.start(1), m.end(1)))
    return out


def name_recognizer():
    """presidio EntityRecognizer for PERSON (see module doc)."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class TunelineNameRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return [RecognizerResult("PERSON", s, e, 0.6, recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for s, e in dict.fromkeys(find(text)) if e > s]

    return TunelineNameRecognizer(supported_entities=["PERSON"], name="TunelineNameRecognizer")


def plausible_ner_span(text: str, start: int, end: int, entity: str) -> bool:
    """Whether a spaCy PERSON or LOCATION span is kept (spaCy sm takes SMS slang for names and places).

    PERSON: some word is a listed name that is no everyday word ("Mandy Sullivan", "uncle john"), or
    two or three capitalised words none of which is an everyday word. LOCATION: a listed place
    (any case), or capitalised words (not all capitals) none of which is an everyday word."""
    value = text[start:end]
    words = re.findall(rf"[{UP}{LO}'’]+", value)
    if not words or ".." in value:
        return False
    if entity == "PERSON":
        if len(words) == 1:  # one word: a census name, a listed first name that is a rare word, or a word
            w = words[0]     # English text hardly has (a name from no list: "Weiyi", "Scallon")
            if _CONTRACTION.match(text, start):  # "Don know", "Don wan": don't, apostrophe dropped
                return False
            if w.lower() in lexicon.census_first_names():
                return True
            if w.islower() or w.isupper() or len(w) < 3 or not re.search("[aeiouyäöüéèáíóú]", w.lower()):
                return False
            return lexicon.zipf(w.lower()) < (RARE_ZIPF if _first(w) or _surname(w) else UNLISTED_ZIPF)
        firsts = [w for w in words if len(w) >= 3 and (w.lower() in lexicon.census_first_names()
                                                       or not w.islower() and _first(w))]
        named = firsts + [w for w in words if len(w) >= 3 and not w.islower() and _surname(w)]
        plain = [w for w in words if _plain(w) and w not in named]
        if (firsts and len(plain) <= 1 or named and not plain) and len(words) <= 4:
            return True
        return 2 <= len(words) <= 3 and all(w[0].isupper() and not w.isupper() and not _plain(w) for w in words)
    if entity == "LOCATION":
        key = " ".join(words).lower()
        if len(words) == 1 and lexicon.common_word(key):  # "Tea" (a town of 5,000) is tea; "Reading" a city
            return key in lexicon.big_places()
        if value.lower().strip(" .") in lexicon.places() or key in lexicon.places():
            return True
        if len(words) == 1:
            return bool(_TOWN_END.search(words[0])) and words[0][0].isupper() and not _plain(words[0])
        return all(w[0].isupper() and not w.isupper() and len(w) >= 3 and not _plain(w) for w in words)
    return True


_CONTRACTION = re.compile(r"Don\s+(?:know|want|wan|worry|think|like|have|go|be|care|need|get|mind|feel|understand|"
                          r"remember|forget|let|say|tell|wait|cry|do)\b")
"""A dropped apostrophe: "Don know" is "don't know", not the name Don (SMS writes it so)."""
LOWER_ZIPF = 3.0
"""A lowercase word after a cue is a name when it is a listed first name rarer than this in English
("federico", "ashley" is a census name; "jus" 3.2, "fri" 3.4 are not)."""
LOWER_ZIPF_POPULAR = 3.5
POPULAR_RANK = 50
UNLISTED_ZIPF = 1.5
"""...and a capitalised word in no name list must be rarer still ("Grl" 1.7, "Bcoz" 1.7 are SMS slang)."""
RARE_ZIPF = 2.5
"""A one-word spaCy PERSON that is no census name must be rarer than this in English (wordfreq Zipf):
"Weiyi" 0, "Jacek" 2.2 are kept; SMS slang that name lists hold too ("Iam" 2.95, "Wat" 3.4) is not."""
_TOWN_END = re.compile(r"(?:ville|ton|town|burg|burgh|borough|bury|mouth|port|ford|chester|caster|ham|furt|berg|"
                       r"heim|stad|haven|field|dorf|hausen|bach|wick|stead|worth|thorpe|sund|holm|pur|abad|grad)$")
