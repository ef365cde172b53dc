"""The text analyzer: tokens, lowercasing, stopwords, stemming, round trip."""
import pytest

from unidb.errors import ValidationError
from unidb.index.sparse import ENGLISH_STOPWORDS, Analyzer


def test_default_english_pipeline():
    a = Analyzer()
    assert a.analyze("The Running dogs, and THE cats!") == ["run", "dog", "cat"]


def test_unicode_words_and_digits():
    a = Analyzer(stemmer=None, stopwords=None)
    assert a.analyze("Café naïve 42x α-β_γ") == ["café", "naïve", "42x", "α", "β_γ"]


def test_options():
    assert Analyzer(stopwords=None, stemmer=None).analyze("The cats") == ["the", "cats"]
    assert Analyzer(stopwords={"cats"}, stemmer=None).analyze("The cats") == ["the"]
    assert Analyzer(lowercase=False, stemmer=None, stopwords=None).analyze("The") == ["The"]
    assert Analyzer(min_length=2, stemmer=None).analyze("a b cd") == ["cd"]


def test_lucene_stopword_list():
    assert len(ENGLISH_STOPWORDS) == 33 and "the" in ENGLISH_STOPWORDS


def test_json_round_trip():
    for a in (Analyzer(), Analyzer(stopwords={"x", "y"}, stemmer=None, min_length=2)):
        b = Analyzer.from_json(a.to_json())
        assert b.to_dict() == a.to_dict()
        assert b.analyze("Running x y zz") == a.analyze("Running x y zz")


def test_bad_options_say_what_to_do():
    with pytest.raises(ValidationError, match="stopword"):
        Analyzer(stopwords="klingon")
    with pytest.raises(ValidationError, match="Snowball"):
        Analyzer(language="klingon")


def test_named_analyzers():
    assert Analyzer.named("english").to_dict() == Analyzer().to_dict()
    assert Analyzer.named("standard").analyze("The Running") == ["the", "running"]
    assert Analyzer.named("french").analyze("Les chats") == ["le", "chat"]
    with pytest.raises(ValidationError, match="unknown analyzer"):
        Analyzer.named("klingon")
