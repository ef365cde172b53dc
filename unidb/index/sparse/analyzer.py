"""Text analysis: Unicode word tokens -> lowercase -> stopwords out -> Snowball stems.

The default ("english") matches Lucene's EnglishAnalyzer minus its possessive filter: tokens
are maximal runs of Unicode word characters (`\\w+`, so letters, digits and underscore of any
script), lowercased, Lucene's 33 English stopwords removed (the same list bm25s and
Elasticsearch's `_english_` use), then stemmed with the Snowball English ("Porter2") stemmer
of PyStemmer (C). Tokens shorter than `min_length` characters are dropped (default 1 keeps
all; bm25s's default pattern drops 1-character tokens, i.e. min_length=2).
"""
from __future__ import annotations

import json
import re

import Stemmer

from unidb.errors import ValidationError

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (also bm25s "en", Elasticsearch `_english_`).
ENGLISH_STOPWORDS = frozenset("""
a an and are as at be but by for if in into is it no not of on or such that the their then
there these they this to was will with
""".split())

_STOPWORD_LISTS = {"english": ENGLISH_STOPWORDS, "en": ENGLISH_STOPWORDS}
_TOKEN = re.compile(r"\w+", re.UNICODE)


class Analyzer:
    """Turns a text into index terms; the same analyzer must serve documents and queries."""

    def __init__(self, language: str = "english", stopwords: str | set | frozenset | None = "english",
                 stemmer: str | None = "snowball", lowercase: bool = True,
                 min_length: int = 1) -> None:
        self.language = language
        self.lowercase = bool(lowercase)
        self.min_length = int(min_length)
        if isinstance(stopwords, str):
            if stopwords not in _STOPWORD_LISTS:
                raise ValidationError(
                    f"unknown stopword list {stopwords!r}; use one of {sorted(_STOPWORD_LISTS)},"
                    " a set of words, or None")
            self._stop_name: str | None = stopwords
            self._stop = _STOPWORD_LISTS[stopwords]
        elif stopwords is None:
            self._stop_name, self._stop = None, frozenset()
        else:
            self._stop_name, self._stop = None, frozenset(stopwords)
            self._stop_given = sorted(self._stop)
        if stemmer not in ("snowball", None):
            raise ValidationError(f"unknown stemmer {stemmer!r}; use 'snowball' or None")
        self.stemmer = stemmer
        if stemmer is not None:
            if language not in Stemmer.algorithms():
                raise ValidationError(
                    f"no Snowball stemmer for language {language!r}; "
                    f"available: {', '.join(Stemmer.algorithms())}")
            self._stem = Stemmer.Stemmer(language).stemWords
        else:
            self._stem = None

    @classmethod
    def named(cls, name: str) -> "Analyzer":
        """A named analyzer (`unidb.Text(analyzer=...)`): "english" (the default above),
        "standard" (lowercased Unicode words only: no stopwords, no stemming), or any other
        Snowball language ("french", "german", ...: its stemmer, no stopwords)."""
        if name in ("english", "en"):
            return cls()
        if name == "standard":
            return cls(stopwords=None, stemmer=None)
        if name in Stemmer.algorithms():
            return cls(language=name, stopwords=None)
        raise ValidationError(
            f"unknown analyzer {name!r}; use 'english', 'standard' or a Snowball language: "
            f"{', '.join(Stemmer.algorithms())}")

    def analyze(self, text: str) -> list[str]:
        """The terms of `text`, in order (repeats kept)."""
        if self.lowercase:
            text = text.lower()
        toks = _TOKEN.findall(text)
        stop, m = self._stop, self.min_length
        if stop or m > 1:
            toks = [t for t in toks if t not in stop and len(t) >= m]
        if self._stem is not None:
            toks = self._stem(toks)
        return toks

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict:
        stop = self._stop_name if self._stop_name is not None else (
            sorted(self._stop) if self._stop else None)
        return {"language": self.language, "stopwords": stop, "stemmer": self.stemmer,
                "lowercase": self.lowercase, "min_length": self.min_length}

    @classmethod
    def from_json(cls, s: str | dict) -> "Analyzer":
        d = json.loads(s) if isinstance(s, str) else dict(s)
        if isinstance(d.get("stopwords"), list):
            d["stopwords"] = set(d["stopwords"])
        return cls(**d)

    def __repr__(self) -> str:
        return f"Analyzer({self.to_dict()})"
