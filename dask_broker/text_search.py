"""Full-text search over start documents: one rule, decided alike on every store.

The rule
--------
A text's **words** are its longest runs of characters other than white space
and punctuation, lowercased: ``"Grid scan of Si-111 (2nd try)"`` has the words
``grid``, ``scan``, ``of``, ``si``, ``111``, ``2nd``, ``try``.  The underscore and
the apostrophe belong to words (``rel_scan``, ``o'brien``), as in MongoDB's
English text index.  A run matches a search when **every** word of the search is
a word of some string value of its start document -- at any depth, in nested
documents and in lists; keys, numbers and the values of fields named
``language`` (MongoDB reads those as the language of the document) are not
searched.  Matching is case-insensitive; accents count (``cafe`` does not find
``café``), and words are not stemmed (``scan`` does not find ``scans``).

Separators are the characters Unicode gives the properties ``White_Space`` or
``Pattern_Syntax`` (ASCII punctuation and symbols, general punctuation, arrows,
mathematical operators, box drawing, ...), but the apostrophe.

How stores decide
-----------------
Every store decides with :meth:`TextSearch.match`, in Python; an index only
narrows the candidates, and every run the rule matches passes it:

- SQLite: an FTS5 table holds the words of each start document
  (:func:`index_text`); :meth:`TextSearch.fts_query` asks it for documents
  holding every word.
- MongoDB: where ``run_start`` has the wildcard text index suitcase-mongo makes
  (``{"$**": "text"}``, English, text index version 3), ``$text`` with
  :meth:`TextSearch.mongo_search` narrows.  MongoDB separates words at every
  separator above (and more), stems them and ignores English stop words, so
  each run the rule matches holds the stemmed word the server looks for; when
  every word of a search is a stop word, the server would find nothing, so the
  store reads every start document instead.  Without that index (nx-27017,
  mongomock, an old database) it reads every start document too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .errors import QueryError

__all__ = ["TextSearch", "parse_text", "document_words", "index_text", "words",
           "MONGO_STOP_WORDS"]

#: Longest text a search takes (characters).
MAX_TEXT_LENGTH = 10_000

# White_Space and Pattern_Syntax (both fixed by Unicode's stability policy), but the
# apostrophe: what MongoDB's English text index separates words at, less the
# separators of its other properties (Dash, Quotation_Mark, Terminal_Punctuation).
_SEPARATORS = (
    "\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    "\u0021-\u0026\u0028-\u002f\u003a-\u0040\u005b-\u005e\u0060\u007b-\u007e"
    "\u00a1-\u00a7\u00a9\u00ab\u00ac\u00ae\u00b0\u00b1\u00b6\u00bb\u00bf\u00d7\u00f7"
    "\u2010-\u2027\u2030-\u203e\u2041-\u2053\u2055-\u205e\u2190-\u245f\u2500-\u2775"
    "\u2794-\u2bff\u2e00-\u2e7f\u3001-\u3003\u3008-\u3020\u3030\ufd3e\ufd3f\ufe45\ufe46"
)
_WORD = re.compile(f"[^{_SEPARATORS}]+")
#: ASCII control characters: separators of SQLite's FTS5 ``ascii`` tokenizer.
_ASCII_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]+")
_PLAIN_ASCII = re.compile(r"[a-z0-9_']+")

#: MongoDB's English stop words (``src/mongo/db/fts/stop_words_english.txt``): its
#: ``$text`` drops them from a search.
MONGO_STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been
before being below between both but by can't cannot could couldn't did didn't do does
doesn't doing don't down during each few for from further had hadn't has hasn't have
haven't having he he'd he'll he's her here here's hers herself him himself his how how's
i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
myself no nor not of off on once only or other ought our ours ourselves out over own
same shan't she she'd she'll she's should shouldn't so some such than that that's the
their theirs them themselves then there there's these they they'd they'll they're
they've this those through to too under until up very was wasn't we we'd we'll we're
we've were weren't what what's when when's where where's which while who who's whom why
why's with won't would wouldn't you you'd you'll you're you've your yours yourself
yourselves
""".split())


def words(text: str) -> list[str]:
    """The words of ``text``, lowercased, each once, in order of appearance.

    Examples
    --------
    >>> words("Grid scan of Si-111, rel_scan; O'Brien's GRID")
    ['grid', 'scan', 'of', 'si', '111', 'rel_scan', "o'brien's"]
    """
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "language":
                yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def document_words(doc: Mapping) -> set[str]:
    """The words of every string value of a start document (see the module's rule).

    Examples
    --------
    >>> sorted(document_words({"plan_name": "grid_scan", "sample": {"name": "Si wafer"},
    ...                        "tags": ["hot", "Dry"], "scan_id": 3, "language": "english"}))
    ['dry', 'grid_scan', 'hot', 'si', 'wafer']
    """
    found: set[str] = set()
    for text in _strings(doc):
        found.update(w.lower() for w in _WORD.findall(text))
    return found


def _fts_phrase(word: str) -> str:
    return _ASCII_CONTROL.sub(" ", word).strip()


def index_text(doc: Mapping) -> str:
    """What the SQLite store's FTS5 table holds for a start document: its words.

    Examples
    --------
    >>> index_text({"plan_name": "Grid scan", "sample": "Si"})
    'grid scan si'
    """
    return " ".join(p for p in map(_fts_phrase, sorted(document_words(doc))) if p)


@dataclass(frozen=True)
class TextSearch:
    """A checked full-text search: its text and words (make one with :func:`parse_text`).

    Examples
    --------
    >>> search = parse_text("Si wafer")
    >>> search.match({"sample": {"name": "Si"}, "note": "a new WAFER"})
    True
    >>> search.match({"sample": "Si"})
    False
    """

    text: str
    words: tuple[str, ...]

    def match(self, doc: Mapping) -> bool:
        """True if every word of the search is a word of the start document ``doc``."""
        found = document_words(doc)
        return all(w in found for w in self.words)

    def fts_query(self) -> str | None:
        """An FTS5 query (one quoted phrase per word, all of them required) that every
        match passes; None when no word is made of indexed characters."""
        phrases = [p for p in map(_fts_phrase, self.words) if p]
        return " ".join('"' + p.replace('"', '""') + '"' for p in phrases) or None

    def mongo_search(self) -> str | None:
        """A ``$text`` ``$search`` string that every match passes, or None.

        The longest word that is plain ASCII (letters, digits, ``_``, ``'``) and not a
        MongoDB stop word: the server finds it, stemmed, in every run that holds it.
        None when there is no such word (every word a stop word, or with characters the
        server may separate words at or fold differently).
        """
        plain = [w for w in self.words
                 if _PLAIN_ASCII.fullmatch(w) and w not in MONGO_STOP_WORDS]
        return max(plain, key=len) if plain else None


def parse_text(text: Any) -> TextSearch | None:
    """Check a full-text search; None for ``None`` (no text search).

    Raises
    ------
    QueryError
        ``text`` is not a string, is longer than :data:`MAX_TEXT_LENGTH`, or has no word.

    Examples
    --------
    >>> parse_text("Grid  SCAN").words
    ('grid', 'scan')
    >>> parse_text("--")
    Traceback (most recent call last):
    ...
    dask_broker.errors.QueryError: full-text search '--' has no word: give letters or digits, e.g. db('silicon wafer')
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise QueryError(f"full-text search {text!r}: give the words as a str, not "
                         f"{type(text).__name__}")
    if len(text) > MAX_TEXT_LENGTH:
        raise QueryError(f"full-text search of {len(text)} characters: at most "
                         f"{MAX_TEXT_LENGTH} are searched for")
    found = words(text)
    if not found:
        raise QueryError(f"full-text search {text!r} has no word: give letters or digits, "
                         "e.g. db('silicon wafer')")
    return TextSearch(text, tuple(found))
