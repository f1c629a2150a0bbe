"""Street addresses, postcodes and the town written beside them, in the forms of several countries.

One presidio EntityRecognizer (address_recognizer) finds, in this order:
  streets    English-style: [Flat 3,] 113 Mill Road [Apt. 4B] (house number, up to four words, one of
             ~300 street types incl. abbreviations; also "77, Kadakia Marg", "08/377 Kaul Circle");
             German/Dutch/Nordic: a word ending in a street type, then the number
             ("Agnes-Wesack-Straße 26-83", "Oderwaldstr. 8533", "Kerkstraat 12", "Skolvägen 76");
             French/Spanish/Italian/Portuguese/Polish: a street type first ("6, rue Michel",
             "Calle de Juan 5", "Viale Sermonti, 13", "Praça Silveira, 9", "ul. Kościelna 80"); types
             that are English words too ("via", "place", "route") need a house number;
             PO boxes ("PO Box 123", "Postfach 12 34"); a unit alone ("Flat 3", "Apt 4B", "Suite 5")
  postcodes  UK, Ireland (Eircode), Canada, US ZIP (after a state code or a town), Australia (after a
             state), 5-digit European ones before a town ("06812 Coburg", "75001 Paris"), the
             Netherlands ("1234 AB"), Poland ("00-950"), Brazil ("01310-100"), Sweden ("106 69"),
             India ("Ahmednagar-740681"), and any code after "postcode/zip/PLZ/CEP/PIN"
  towns      the capitalised words right after a street and a comma, after a European postcode,
             or before a postcode or a US/AU state code (LOCATION)
A span is always the whole value (house number, street and unit together), so nothing is left.
"""

from __future__ import annotations

import re

from tuneline.data.pii import lexicon

UP = "A-Z\u00C0-\u00D6\u00D8-\u00DE\u0100-\u024F"
LO = "a-z\u00DF-\u00F6\u00F8-\u00FF\u0100-\u024F"
"""Latin letters incl. accents (Latin-1, Extended-A and -B: "Ł", "ș", "ț"); the Extended ranges mix cases."""
WORD = rf"[{UP}][{LO}'’]*[{UP}]?[{LO}'’]+(?:-[{UP}][{LO}'’]*[{UP}]?[{LO}'’]+)*"
"""A capitalised word, accents and hyphenated parts included ("Königs", "Agnes-Wesack")."""
PARTICLE = (r"(?:de|del|de la|de los|di|da|do|dos|das|du|des|le|la|las|los|van|von|der|den|ter|y|e|d['’]|an der|an|am|"
            r"bei|im|ob|op|aan|sur|sous|en|upon|on|della|delle|dei|les|lez)")

EN_TYPES = (
    "Street|St|Str|Road|Rd|Avenue|Ave|Av|Lane|Ln|Drive|Dr|Close|Cl|Court|Ct|Crt|Way|Wy|Place|Pl|Crescent|Cres|Cr|"
    "Boulevard|Blvd|Bvd|Terrace|Tce|Ter|Grove|Gr|Gv|Gardens|Gdns|Square|Sq|Hill|Row|Parade|Pde|Walk|Mews|Park|Pk|"
    "Highway|Hwy|Parkway|Pkwy|Pky|Circle|Cir|Circuit|Cct|Trail|Trl|Mountains?|Mtn|Meadows?|Green|Grn|View|Vw|Rise|"
    "Vale|Path|Alley|Aly|Loop|Pike|Ridge|Rdg|Heights|Hts|Wharf|Quay|Bay|Bend|Bluffs?|Bottom|Branch|Brg|Bridge|Brook|"
    "Burg|Bypass|Byp|Camp|Canyon|Cape|Causeway|Cswy|Center|Ctr|Centre|Cliffs?|Club|Common|Corners?|Cor|Course|Cove|"
    "Creek|Crk|Crossing|Xing|Curve|Dale|Dam|Divide|Estates?|Expressway|Expy|Extension|Ext|Falls|Ferry|Field|Flats?|"
    "Ford|Forest|Forge|Fork|Fort|Ft|Freeway|Fwy|Gateway|Glen|Harbor|Harbour|Hbr|Haven|Hollow|Inlet|Island|Isle|"
    "Junction|Jct|Key|Knolls?|Lake|Lakes|Landing|Lndg|Light|Lodge|Manor|Mill|Mills|Mission|Motorway|Mount|Mt|Neck|"
    "Orchard|Oval|Pass|Pines|Plains?|Plaza|Plz|Point|Pt|Port|Prairie|Radial|Ranch|Rapids|Rest|River|Route|Rte|"
    "Shoals?|Shores?|Skyway|Springs?|Spgs|Spur|Station|Sta|Stravenue|Stream|Summit|Smt|Throughway|Trace|Track|"
    "Tunnel|Turnpike|Tpke|Underpass|Union|Valleys?|Vly|Viaduct|Villages?|Vlg|Ville|Vis|Wells?|Woods?|Yard|Annex|"
    "Arcade|Bayou|Beach|Brooks?|Crest|Crossroads?|Garden|Harbors?|Junctions?|Keys?|Land|Loaf|Locks?|Mall|Overpass|"
    "Passage|Pine|Points?|Ports?|Ramp|Roads|Run|Streets|Trafficway|Trailer|Vista|Vistas|Wall|Ways|Esplanade|Esp|"
    "Promenade|Chase|Approach|Brae|Wynd|Glade|Outlook|Retreat|Grange|Nook|Concourse|Boardwalk|Laneway|Cutting|"
    "Dell|Embankment|Broadway|Mead|Fold|Gate|Lanes|Drives|Courts|Walks|Views|Lights|Parks|Squares|Hills|Groves|"
    "Terraces|Crescents|Places|Closes|Ride|Rdwy|Reserve|Ring|Spit|Strand|Track|Tollway|Glens|Heath|Hts|End|"
    "Reach|Line|Ridgeway|Pathway|Rue|Via|Cove|Fall|Upper|Lower|Quadrant|Serviceway|Manor|Ramble|Steps|"
    "Access|Alleyway|Amble|Anchorage|Artery|Basin|Brace|Break|Brow|Byway|Centreway|Circlet|Circus|Colonnade|"
    "Copse|Cross|Crossway|Cruiseway|Deviation|Dip|Distributor|Driveway|Edge|Elbow|Entrance|Fairway|Firetrail|"
    "Follow|Footway|Foreshore|Formation|Front|Frontage|Gap|Gates|Ground|Gully|Highroad|Interchange|"
    "Intersection|Lees|Link|Lookout|Meander|Mew|Parklands|Part|Plateau|Pocket|Quad|Quadrangle|Quays|Range|"
    "Riverway|Riviera|Roadside|Roadway|Ronde|Rosebowl|Rotary|Round|Siding|Slope|Sound|Stairs|Strip|Subway|"
    "Courtyard|Ganj|Tarn|Thoroughfare|Top|Tor|Towers|Triangle|Trunkway|Turn|Villas|Wade|Walkway|"
    "Marg|Nagar|Chowk|Gali|Colony|Layout|Enclave|Bagh|Peth|Pur|Puram|Salai|Zila"
)
"""USPS Publication 28 suffixes and abbreviations, Royal Mail, Australia Post (its whole street type
list), NZ Post and Canada Post street types, and Indian ones (Marg, Nagar, Chowk)."""
GLUED_TYPES = ("straße|strasse|str\\.|weg|gasse|platz|allee|ring|damm|ufer|steig|pfad|chaussee|markt|graben|"
               "straat|laan|plein|gracht|kade|singel|dijk|hof|pad|steeg|dreef|baan|boulevard|lei|plantsoen|wal|steenweg|"
               "vägen|väg|gatan|gata|gränd|backe|stig|torg|torget|stigen|gången|backen|leden|slingan|allén|kajen|"
               "plan|vej|gade|allé|stræde|vænget|plads|veien|vegen|gaten|stien|lia|haugen|bakken|åsen|berget|lyngen|"
               "ekra|svingen|tunet|jordet|plassen|løkka|grenda|kroken|toppen|"
               "katu|tie|kuja|bulevardi|polku|raitti|rinne|kaari|väylä|aukio|tori|ranta|piha|mäki|portti")
"""German, Dutch, Scandinavian and Finnish street types written as the end of one word."""
LEAD_TYPES_STRONG = ("rue|avenue|boulevard|bd|chemin|allée|impasse|quai|cours|calle|c/|avenida|avda\\.?|paseo|"
                     "glorieta|pasaje|pasadizo|camino|carrera|rambla|ronda|travesía|callejón|cerrada|privada|circuito|"
                     "andador|calzada|prolongación|periférico|retorno|viaducto|ampliación|diagonal|"
                     "viale|piazza|piazzale|corso|vicolo|contrada|borgo|strada|stretto|rotonda|"
                     "rua|travessa|alameda|rodovia|estrada|praça|ladeira|av\\.?|chácara|condomínio|fazenda|"
                     "núcleo|passarela|pátio|recanto|residencial|sítio|trevo|vereda|viaduto|viela|esplanada|"
                     "montée|rang|allé|boul\\.?|côte|cuesta|vial|cañada|feira|incrocio|"
                     "aleea|bulevardul|intrarea|soseaua|șoseaua|calea|piața|piata|splaiul|"
                     "ulica|ul\\.|aleja|al\\.|osiedle|os\\.|plac|pl\\.|via")
"""French, Spanish, Italian, Portuguese and Polish street types written before the name."""
LEAD_TYPES_NEED_NUMBER = ("place|plaza|route|largo|praia|quadra|canale|vila|conjunto|lote|setor|sector|trecho|via|"
                          "parque|lago|lagoa|vale|jardim|distrito|colônia|loteamento|morro|r\\.|c\\.")
"""Street types that are also English (or very common) words: a house number must come with them."""
UNIT = (r"(?:Flat|Apt\.?|Apartment|Unit|Suite|Ste\.?|Studio|Room|Rm\.?|Floor|Fl\.?|Level|Lvl|Piso|Puerta|Interior|"
        r"Nr\.?|Bl\.?|Sc\.?|Ap\.?|Et\.?|Edif\.?|Piano|Scala|Int\.|Depto\.?|Departamento|Appartamento|Escalera|Esc\.|Etage|Bus|RD|"
        r"Box|Building|Bldg\.?|Block|Blk\.?|Lot|#)\s*\d+[A-Za-z]?(?:[-/]\d+)?")
NUM = r"\d{1,5}[A-Za-z]?(?:\s?[-/]\s?\d{1,5}[A-Za-z]?)?"

_NOT_UNIT = r"(?!(?:Nr|Bl|Sc|Ap|Et|Edif|Depto|Piso|Puerta|Interior|Apt|Suite|Unit|Flat)\b)"
_EN = re.compile(
    rf"\b(?:{UNIT},?\s+)?(?:H\.?\s?No\.?\s*)?{NUM},?\s+(?:(?:{WORD}|{PARTICLE})\s+){{1,4}}(?:{EN_TYPES})s?\b\.?"
    rf"(?:\s*,?\s+(?:{UNIT})\b)*")
_GLUED = re.compile(
    rf"\b(?:{WORD}[-\s])?(?:{WORD}-)*[{UP}][{LO}'’-]*?(?i:{GLUED_TYPES})(?:\s+|\.\s*)(?:{NUM})\b(?:,?\s+{UNIT}\b)?"
    rf"|\b(?:Am|An der|Auf der|Im|In der|Zum|Zur|Alte|Alter|Neue|Neuer|Hoher|Große|Kleine)\s+{WORD}\s+{NUM}\b"
    rf"|\b(?:{WORD}\s+){{1,2}}(?:Allé|Alle|Vej|Gade|Straße|Strasse|Weg|Platz|Gasse|Straat|Laan|Plein|Väg|Gata)\s+{NUM}\b"
    rf"|\b{WORD}(?:\s{WORD})?\s(?:katu|tie|puistotie|kuja|polku|raitti|rinne|kaari|väylä|aukio|tori|ranta|piha)\s+{NUM}\b")
_LEAD = re.compile(
    rf"(?:\b(?P<pre>{NUM}),?\s+)?\b(?P<type>(?i:{LEAD_TYPES_STRONG}|{LEAD_TYPES_NEED_NUMBER}))(?:\s+|(?<=\.))"
    rf"(?:(?:{PARTICLE}\s+|d['’]|{_NOT_UNIT}{WORD}\s+)){{0,6}}{_NOT_UNIT}{WORD}(?:,?\s+(?:Nr\.?\s*)?(?P<post>{NUM}\b|S/N))?(?:\s*,?\s+{UNIT}\b)*")
_POBOX = re.compile(r"\b(?:P\.?\s?O\.?\s?Box|Post Office Box|PO Box|Postfach|Apartado(?: de Correos)?|Caixa Postal|"
                    r"Skrytka pocztowa|Boîte postale|BP|Box)\s*\d[\d ]{0,6}\d\b|\b(?:P\.?\s?O\.?\s?Box|Postfach)\s*\d\b")
_CUE_WORDS_NUMBER = re.compile(
    rf"(?i:\b(?:address is|address:|live at|lives at|living at|house|reach|deliver(?:ed)? to|ship(?:ped)? to|send (?:it )?to)\s)"
    rf"((?:{WORD}\s){{1,3}}{NUM})\b")
"""After an address cue: street words then the house number, the order of most of Europe ("Vlasákova 11", "U Větrníku 4")."""
_UNIT_ALONE = re.compile(rf"\b(?:Flat|Apt\.?|Apartment|Unit|Suite|Studio)\s+\d+[A-Za-z]?\b")

_STRONG = re.compile(rf"(?i:{LEAD_TYPES_STRONG})")
TOWN = rf"{WORD}(?:(?:[ -]|\s{PARTICLE}\s|-{PARTICLE}-){WORD}){{0,3}}"

UK_POSTCODE = r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b"
CA_POSTCODE = r"\b[ABCEGHJ-NPRSTVXY]\d[A-Z]\s?\d[A-Z]\d\b"
EIRCODE = r"\b(?:[AC-FHKNPRTV-Y]\d{2}|D6W)\s?(?=[0-9AC-FHKNPRTV-Y]{0,3}[AC-FHKNPRTV-Y])[0-9AC-FHKNPRTV-Y]{4}\b"
_POST_CUE = re.compile(r"(?i:\b(?:post\s?code|postal\s?code|zip(?:\s?code)?|plz|cep|pin\s?code|pin|eircode|"
                       r"code postal|c\.p\.|cap)\b\s*(?:is|:|-|=|\bno\.?)?\s*)"
                       r"([A-Z0-9]*\d[A-Z0-9]*(?:[ -](?=[A-Z0-9]*\d)[A-Z0-9]+)?)")
_NL = re.compile(r"\b[1-9]\d{3}\s?(?!AM\b|PM\b|SS\b|SA\b|SD\b)[A-Z]{2}\b")
_TOWN_AFTER = rf"(?=\s+{WORD})"
_BEFORE_TOWN = re.compile(
    rf"\b(?:\d{{5}}|\d{{2}}-\d{{3}}|\d{{5}}-\d{{3}}|\d{{3}} \d{{2}}|[1-9]\d{{3}}\s?[A-Z]{{2}}),?(?P<sep>\s+)(?P<town>{TOWN})")
_ZIP_AFTER_TOWN = re.compile(rf"(?P<town>{WORD}(?:[ -]{WORD}){{0,2}}),?\s(?P<zip>\d{{5}}(?:-\d{{4}})?)(?=\s*(?:[.,;)\n]|$))")
_STATE_ZIP = re.compile(rf"(?:(?<=, )|(?<=\n)|(?<=^))(?P<town>{TOWN}),?\s+(?P<state>[A-Z]{{2,3}}),?\s+"
                        r"(?P<zip>\d{5}(?:-\d{4})?|\d{4})\b", re.MULTILINE)
_AU = re.compile(r"\b(?:NSW|VIC|QLD|TAS|ACT|SA|WA|NT),?\s+(\d{4})\b")
_US_STATE_ZIP = re.compile(r"(?<=\b[A-Z]{2} )\d{5}(?:-\d{4})?\b")
_IN_PIN = re.compile(rf"(?<=[{LO}])\s?[-–]\s?([1-9]\d{{5}})\b")
_LINE_ZIP = re.compile(r"^\s*(\d{5}(?:-\d{4})?)\s*$", re.MULTILINE)
_UK_CA_IE = re.compile(f"{UK_POSTCODE}|{CA_POSTCODE}|{EIRCODE}")
PC = (rf"(?:{UK_POSTCODE}|{CA_POSTCODE}|{EIRCODE}|\b\d{{4,5}}(?:-\d{{3,4}})?\b|\b\d{{2}}-\d{{3}}\b|\b\d{{3}} \d{{2}}\b|"
      rf"\b\d{{6}}\b|\b\d{{8}}\b|\b[1-9]\d{{3}}\s?[A-Z]{{2}}\b)")
"""A postcode of any of the countries above, accepted where an address makes it one (after a street)."""
_AFTER_STREET = re.compile(
    rf"(?P<sep>,\s*|\s*\n\s*)(?:(?P<pc1>{PC}),?\s+)?(?P<town>{TOWN})(?:\s\([A-Z]{{2,3}}\))?"
    rf"(?:,?\s+(?:[A-Z]{{2,3}},?\s+)?(?P<pc2>{PC}))?(?=\s*(?:[,.;!?()\n/-]|$)|\s+[a-z])")
_TOWN_PREFIX = frozenset("north south east west new lake port mount fort saint st san santa sainte bad upper lower "
                         "great little high old".split())
_PC_AFTER_STREET = re.compile(rf",\s*({PC})(?=\s*(?:[.,;!?\n]|$))")
_NOT_TOWN_START = frozenset("thanks thank please regards cheers call and the but sent best many kind i we my our you "
                            "your it this that so ok okay hi hello dear".split())
_NOT_ZIP_BEFORE = ("order", "invoice", "account", "ticket", "case", "ref", "number", "no", "code", "pin", "id",
                   "room", "flight", "item", "sku", "version", "model", "to", "txt", "text", "send", "reply", "call",
                   "sms", "dial", "on", "win", "won", "for", "of", "is", "cash", "prize")


def _town_ok(town: str) -> bool:
    """A capitalised word sequence may be a town: not an everyday English word (one word) and not
    starting with one ("Thanks", "Please")."""
    words = town.split()
    first = words[0].lower()
    if first in lexicon.places() or town.lower() in lexicon.places():
        return True
    if first in _NOT_TOWN_START:
        return False
    if all(lexicon.common_word(w.lower()) for w in words) and not (len(words) > 1 and first in _TOWN_PREFIX):
        return False
    return True


def find(text: str) -> list[tuple[int, int, str]]:
    """(start, end, entity type) for every street, postcode and town found (see module doc)."""
    out: list[tuple[int, int, str]] = []
    streets: list[tuple[int, int]] = []
    for rx in (_EN, _GLUED, _POBOX):
        for m in rx.finditer(text):
            streets.append(m.span())
    for m in _LEAD.finditer(text):
        strong = _STRONG.fullmatch(m.group("type")) is not None
        if not (strong or m.group("pre") or m.group("post")):
            continue
        if m.group("type").islower() and not strong and not m.group("pre"):
            continue
        if not strong and m.group("type").lower() == "via" and not m.group("post"):
            continue
        streets.append(m.span())
    for m in _UNIT_ALONE.finditer(text):
        streets.append(m.span())
    for m in _CUE_WORDS_NUMBER.finditer(text):
        words = m.group(1).split()[:-1]
        if not any(lexicon.common_word(w.lower()) for w in words):
            streets.append(m.span(1))
    streets = _merge(streets)
    out += [(s, e, "STREET_ADDRESS") for s, e in streets]
    # after a street: [postcode] town [state] [postcode] (", 06812 Coburg", ", Lake Jerry, QLD, 2904")
    for _, e in streets:
        m = _AFTER_STREET.match(text, e)
        if not m:
            pc = _PC_AFTER_STREET.match(text, e)  # ", 3591." a postcode with no town after it
            if pc:
                out.append((pc.start(1), pc.end(1), "POSTCODE"))
            continue
        for g in ("pc1", "pc2"):
            if m.group(g):
                out.append((m.start(g), m.end(g), "POSTCODE"))
        if _town_ok(m.group("town")):
            out.append((m.start("town"), m.end("town"), "LOCATION"))
    # postcodes
    for m in _UK_CA_IE.finditer(text):
        out.append((m.start(), m.end(), "POSTCODE"))
    for m in _POST_CUE.finditer(text):
        out.append((m.start(1), m.end(1), "POSTCODE"))
    for m in _AU.finditer(text):
        out.append((m.start(1), m.end(1), "POSTCODE"))
    for m in _US_STATE_ZIP.finditer(text):
        out.append((m.start(), m.end(), "POSTCODE"))
    for m in _IN_PIN.finditer(text):
        out.append((m.start(1), m.end(1), "POSTCODE"))
    for m in _LINE_ZIP.finditer(text):
        out.append((m.start(1), m.end(1), "POSTCODE"))
    for m in _BEFORE_TOWN.finditer(text):
        before = text[max(0, m.start() - 12):m.start()].lower().split()
        if before and before[-1].strip("#:.") in _NOT_ZIP_BEFORE:
            continue
        if "\n" in m.group("sep") and not re.fullmatch(r"\d{4,5}(?:-\d{3})?|\d{4}\s?[A-Z]{2}", m.group(0).split()[0]):
            continue
        if len(m.group("town")) >= 3 and _town_ok(m.group("town")):
            code_end = m.start("sep") - (1 if text[m.start("sep") - 1] == "," else 0)
            out.append((m.start(), code_end, "POSTCODE"))
            out.append((m.start("town"), m.end("town"), "LOCATION"))
    for m in _NL.finditer(text):
        after = text[m.end():m.end() + 2]
        if not after or after[0] in ",\n" or re.match(rf"\s[{UP}]", after):
            out.append((m.start(), m.end(), "POSTCODE"))
    for m in _ZIP_AFTER_TOWN.finditer(text):
        if m.group("town").split()[-1].lower() in _NOT_ZIP_BEFORE or not _town_ok(m.group("town").split()[-1]):
            continue
        out.append((m.start("zip"), m.end("zip"), "POSTCODE"))
        if _town_ok(m.group("town")) and (m.group("town").split()[0].lower() in lexicon.places()
                                           or m.start() == 0 or text[m.start() - 1] in ",\n"
                                           or text[max(0, m.start() - 2):m.start()] == ", "):
            out.append((m.start("town"), m.end("town"), "LOCATION"))
    for m in _STATE_ZIP.finditer(text):
        if _town_ok(m.group("town")):
            out.append((m.start("town"), m.end("town"), "LOCATION"))
            out.append((m.start("zip"), m.end("zip"), "POSTCODE"))
    for m in _PIN_AFTER_PLACE.finditer(text):
        if m.group(1).lower() in lexicon.places():
            out.append((m.start(2), m.end(2), "POSTCODE"))
    # a house number is no postcode, a street no town
    return [x for x in out if x[2] == "STREET_ADDRESS" or not any(s <= x[0] and x[1] <= e for s, e in streets)]


_PIN_AFTER_PLACE = re.compile(rf"\b({WORD}),?\s([1-9]\d{{5}})\b")


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def address_recognizer(towns: bool = True):
    """presidio EntityRecognizer for STREET_ADDRESS, POSTCODE and (towns=True) the LOCATION of towns in addresses."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class TunelineAddressRecognizer(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return [RecognizerResult(t, s, e, 0.6, recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for s, e, t in dict.fromkeys(find(text)) if t in entities and e > s]

    return TunelineAddressRecognizer(supported_entities=["STREET_ADDRESS", "POSTCODE", *(["LOCATION"] if towns else [])],
                             name="TunelineAddressRecognizer")
