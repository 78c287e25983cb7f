"""The tokenizer's cost bound (spacy_hybridner.tokenizer): the same tokens as spaCy's on
ordinary text, the same text always, and a cost, counted in characters that the
tokenizer's rules search, that is linear in the text's length. No entity is only
invisible characters."""

import pickle

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, Span

from spacy_hybridner.annotate.annotator import Annotator, doc_records
from spacy_hybridner.pipeline_component import Predictions
from spacy_hybridner.tag_scheme import biluo_tag_names
from spacy_hybridner.tokenizer import DEFAULT_MAX_RUN_CHARS, BoundedTokenizer, bound_tokenizer, is_invisible, long_runs

BOUNDED = {"nlp": {"tokenizer": {"@tokenizers": "spacy-hybridner.BoundedTokenizer.v1", "max_run_chars": 8}}}
# characters that exercise prefixes, suffixes, infixes, special cases, URLs and whitespace
ALPHABET = st.sampled_from(
    list("aZ0,.;:!?'\"()-/@#$%&*+=<>[]{}~_😀") + [" ", "  ", "\n", "\t", "n't", "U.S.", "http://x.org/"]
)


def bounded_nlp(max_run_chars=DEFAULT_MAX_RUN_CHARS):
    tokenizer = {"@tokenizers": "spacy-hybridner.BoundedTokenizer.v1", "max_run_chars": max_run_chars}
    return spacy.blank("en", config={"nlp": {"tokenizer": tokenizer}})


PLAIN = spacy.blank("en")
BOUNDED_DEFAULT = bounded_nlp()
BOUNDED_8 = bounded_nlp(8)
BOUNDED_64 = bounded_nlp(64)
SCANNED_64 = None  # the counter of BOUNDED_64's rules, installed by the test that uses it


def tokens(doc):
    return [(t.text, t.whitespace_, t.norm_) for t in doc]


def count_search(tokenizer):
    """Wrap every rule that spaCy's tokenizer runs over a string with a counter of the
    characters it is given; RETURNS the one-item list that holds the count."""
    scanned = [0]

    def counting(search):
        def counted(string):
            scanned[0] += len(string)
            return search(string)

        return counted

    for name in ("prefix_search", "suffix_search", "infix_finditer", "token_match", "url_match"):
        if getattr(tokenizer, name) is not None:
            setattr(tokenizer, name, counting(getattr(tokenizer, name)))
    scanned[0] = 0  # setting a rule re-tokenizes the special cases: not the text's cost
    return scanned


@settings(max_examples=150, deadline=None)
@given(st.lists(ALPHABET, max_size=60).map("".join))
def test_same_tokens_as_spacy_without_long_runs(text):
    """With no whitespace-free run over the bound, every token, its whitespace and its
    norm are spaCy's own (the bound is large enough that this is every ordinary text)."""
    assert not long_runs(text, DEFAULT_MAX_RUN_CHARS)
    assert tokens(BOUNDED_DEFAULT(text)) == tokens(PLAIN(text))


@settings(max_examples=150, deadline=None)
@given(st.lists(ALPHABET, max_size=80).map("".join))
def test_text_kept_and_runs_split(text):
    """Past the bound (8 here) the Doc's text is still exactly the input, no token is
    longer than a run piece, and text around the long runs is tokenized as spaCy does."""
    doc = BOUNDED_8(text)
    assert doc.text == text
    assert all(len(t.text) <= 8 or t.is_space for t in doc)
    if not long_runs(text, 8):
        assert tokens(doc) == tokens(PLAIN(text))


def test_long_run_between_words():
    nlp = spacy.blank("en", config=BOUNDED)
    text = "Paris ,,,,,,,,,,,,,,,,,,,,  Berlin"
    doc = nlp(text)
    assert doc.text == text
    assert [t.text for t in doc][:1] == ["Paris"] and [t.text for t in doc][-2:] == [" ", "Berlin"]
    assert tokens(doc)[1:-2] == [(",", "", ",")] * 19 + [(",", " ", ",")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(list(",😀('-.a $") + ["..."]), min_size=1, max_size=3000).map("".join))
def test_cost_is_linear_in_the_text(text):
    """Any text is tokenized with at most len(text) * (max_run_chars + 1) characters
    searched by the tokenizer's rules, a count, not a time."""
    global SCANNED_64
    if SCANNED_64 is None:
        SCANNED_64 = count_search(BOUNDED_64.tokenizer)
    SCANNED_64[0] = 0
    assert BOUNDED_64(text).text == text
    assert SCANNED_64[0] <= 4 * len(text) * (64 + 1)


def test_spacy_tokenizer_alone_is_quadratic_and_the_bound_is_not():
    """What the bound is for: spaCy's tokenizer searches about n * n / 2 characters for a
    run of n commas; with the bound, about n * max_run_chars."""
    n = 4000
    plain = spacy.blank("en")
    scanned_plain = count_search(plain.tokenizer)
    plain("," * n)
    bounded = bounded_nlp()
    scanned = count_search(bounded.tokenizer)
    assert len(bounded("," * n)) == n
    assert scanned_plain[0] > n * n / 4
    assert scanned[0] <= 4 * n * (DEFAULT_MAX_RUN_CHARS + 1)


def test_annotation_of_any_text_is_bounded(model_dir):
    """serve and annotate (the Annotator) bound a pipeline saved with spaCy's plain
    tokenizer: a 100,000-character run of commas (which spaCy alone never finishes) is
    searched in at most len * (bound + 1) * 4 characters and annotated as one Doc of one
    token per comma."""
    nlp = spacy.load(model_dir)
    assert type(nlp.tokenizer) is spacy.tokenizer.Tokenizer
    scanned = count_search(nlp.tokenizer)
    bound_tokenizer(nlp)
    text = "Angela Merkel " + "," * 100_000 + " visited Paris ."
    (doc,) = list(nlp.pipe([text]))
    assert doc.text == text
    assert len(doc) <= len(text)
    assert scanned[0] <= 4 * len(text) * (DEFAULT_MAX_RUN_CHARS + 1)
    annotator = Annotator(str(model_dir))
    assert annotator.nlp.tokenizer.max_run_chars == DEFAULT_MAX_RUN_CHARS
    [records] = annotator.annotate(["," * 20_000])
    assert all(not is_invisible(r["text"]) for r in records)


def test_bound_tokenizer_keeps_a_bound_of_its_own():
    nlp = spacy.blank("en", config=BOUNDED)
    tokenizer = nlp.tokenizer
    assert bound_tokenizer(nlp).tokenizer is tokenizer
    plain = spacy.blank("en")
    bound_tokenizer(plain, 5)
    assert plain.tokenizer.max_run_chars == 5
    assert [t.text for t in plain("aaaaaaaaaaaa b")] == ["aaaaa", "aaaaa", "aa", "b"]
    assert plain.tokenizer.explain("a,")  # the wrapped tokenizer's other methods stay


def test_saved_and_pickled(tmp_path):
    nlp = spacy.blank("en", config=BOUNDED)
    nlp.tokenizer.add_special_case("hybridner", [{"ORTH": "hybrid"}, {"ORTH": "ner"}])
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert isinstance(loaded.tokenizer, BoundedTokenizer) and loaded.tokenizer.max_run_chars == 8
    text = "hybridner ,,,,,,,,,,,,,,,,,,,,,,,, done"
    assert tokens(loaded(text)) == tokens(nlp(text))
    unpickled = pickle.loads(pickle.dumps(nlp.tokenizer))
    assert isinstance(unpickled, BoundedTokenizer) and unpickled.max_run_chars == 8
    assert tokens(unpickled(text)) == tokens(nlp(text))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_bound_is_refused(bad):
    with pytest.raises(ValueError, match="max_run_chars"):  # ours, or the config check naming it
        bounded_nlp(bad)


def test_is_invisible():
    for text in ["\u200b" * 20, "\u200d", " \n\t", "\ufeff", "\u2060\u00a0", ""]:
        assert is_invisible(text), repr(text)
    for text in ["Paris", "\u200bParis", "😀", "-", "\u0301a"]:
        assert not is_invisible(text), repr(text)


def test_no_entity_of_invisible_characters(trained_nlp):
    """hybrid_ner never sets an entity made only of invisible characters, whatever its
    model tags (here: told to tag every token U-PER), and no pipeline's such entity
    becomes a record."""
    ner = trained_nlp.get_pipe("ner")
    doc = trained_nlp.make_doc("\u200b\u200b\u200b Paris \u200d")
    u_per = biluo_tag_names(ner.labels).index("U-PER")
    tags, probs = [numpy.full(len(doc), u_per, dtype="int32")], [numpy.ones(len(doc), dtype="float32")]
    ner.set_annotations([doc], Predictions(tags, probs, None))
    assert [e.text for e in doc.ents] == ["Paris"]
    other = Doc(trained_nlp.vocab, words=["\u200b", "Paris"], spaces=[True, False])
    other.ents = [Span(other, 0, 1, "PER"), Span(other, 1, 2, "LOC")]
    assert [r["text"] for r in doc_records(other)] == ["Paris"]
