"""A bound on what one text can cost spaCy's tokenizer, and what no entity may be.

spaCy's rule-based tokenizer strips prefixes and suffixes from a whitespace-free run one
at a time, copying and searching the rest of the run each time: its cost grows with the
square of the run's length (16,000 commas take about 16 s, 100,000 never finish). Ordinary
text has no such runs (a word, a URL, a number are far shorter), so the bound changes
nothing there: a run longer than ``max_run_chars`` characters is tokenized in pieces of at
most that many characters, each piece on its own, and the text of the Doc stays exactly the
input. The cost of any text is then linear in its length (at most about
``len(text) * max_run_chars`` characters searched).

- :class:`BoundedTokenizer`, registered as ``spacy-hybridner.BoundedTokenizer.v1``, is
  spaCy's own tokenizer with that bound: the shipped configs use it, so ``nlp(text)`` after
  ``spacy.load`` is bounded; it saves and loads as spaCy's tokenizer does.
- :func:`bound_tokenizer` puts the same bound on a pipeline that was built without it (any
  tokenizer that turns a text into a Doc): ``serve`` and ``annotate`` call it on the
  pipeline they load.
- :func:`is_invisible`: a text made only of characters that show nothing (spaces, format
  characters such as U+200B ZERO WIDTH SPACE or U+200D ZERO WIDTH JOINER, controls), which
  no entity may consist of.
"""

import re
import unicodedata
from typing import Callable, Iterator, List, Tuple

from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc
from spacy.util import registry

DEFAULT_MAX_RUN_CHARS = 256
_RUN = re.compile(r"\S+")
# Unicode categories of characters that draw nothing: separators (spaces, line and
# paragraph separators), controls, format characters (ZWSP, ZWJ, BOM, ...), unassigned.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Cs", "Co"})


def is_invisible(text: str) -> bool:
    """Whether ``text`` shows nothing: every character a space, a control or a format
    character (``"\\u200b" * 20``, a lone ``"\\u200d"``), or the text is empty."""
    return all(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)


def long_runs(text: str, max_run_chars: int) -> List[Tuple[int, int]]:
    """The ``(start, end)`` offsets of the whitespace-free runs of ``text`` longer than
    ``max_run_chars`` characters, in order (linear in the length of ``text``)."""
    if len(text) <= max_run_chars or max(map(len, text.split()), default=0) <= max_run_chars:
        return []
    return [m.span() for m in _RUN.finditer(text) if m.end() - m.start() > max_run_chars]


def _pieces(text: str, max_run_chars: int) -> Iterator[str]:
    """``text`` cut into consecutive pieces, each holding at most ``max_run_chars``
    characters of any whitespace-free run: the text between long runs whole, each long run
    in pieces of ``max_run_chars``. A single space after a run stays with its last piece,
    where spaCy's tokenizer makes it the token's trailing whitespace."""
    position = 0
    for start, end in long_runs(text, max_run_chars):
        if start > position:
            yield text[position:start]
        cuts = list(range(start, end, max_run_chars)) + [end]
        if end < len(text) and text[end] == " ":
            cuts[-1] = end = end + 1
        for left, right in zip(cuts, cuts[1:]):
            yield text[left:right]
        position = end
    if position < len(text):
        yield text[position:]


def tokenize_bounded(tokenize: Callable[[str], Doc], text: str, max_run_chars: int) -> Doc:
    """``tokenize(text)``, where every whitespace-free run longer than ``max_run_chars``
    is tokenized in pieces of at most that many characters (see the module's docstring).

    tokenize (Callable[[str], Doc]): a tokenizer (spaCy's, or any that keeps the text).
    text (str): the text.
    max_run_chars (int): the longest run tokenized in one piece (at least 1).
    RETURNS (Doc): the tokens, ``doc.text == text``; the same Doc as ``tokenize(text)``
        when no run is longer than ``max_run_chars``.
    """
    if not long_runs(text, max_run_chars):
        return tokenize(text)
    docs = [tokenize(piece) for piece in _pieces(text, max_run_chars)]
    return Doc.from_docs(docs, ensure_whitespace=False)


def _check_max_run_chars(max_run_chars: int) -> int:
    if isinstance(max_run_chars, bool) or not isinstance(max_run_chars, int) or max_run_chars < 1:
        raise ValueError(
            f"max_run_chars must be a positive integer (the longest whitespace-free run "
            f"tokenized in one piece), got {max_run_chars!r}; the default is {DEFAULT_MAX_RUN_CHARS}."
        )
    return max_run_chars


class BoundedTokenizer(Tokenizer):
    """spaCy's tokenizer, with every whitespace-free run longer than ``max_run_chars``
    tokenized in pieces (see :func:`tokenize_bounded`). It is a ``spacy.tokenizer.Tokenizer``
    in every other respect: the same rules, special cases and serialization."""

    def __init__(self, vocab, *args, max_run_chars: int = DEFAULT_MAX_RUN_CHARS, **kwargs) -> None:
        super().__init__(vocab, *args, **kwargs)
        self.max_run_chars = _check_max_run_chars(max_run_chars)

    def __call__(self, text: str) -> Doc:
        return tokenize_bounded(super().__call__, text, self.max_run_chars)

    def pipe(self, texts, batch_size: int = 1000):
        for text in texts:
            yield self(text)

    def __reduce__(self):
        return (_rebuild, (self.vocab, self.to_bytes(exclude=["vocab"]), self.max_run_chars))


def _rebuild(vocab, data: bytes, max_run_chars: int) -> BoundedTokenizer:
    tokenizer = BoundedTokenizer(vocab, max_run_chars=max_run_chars)
    return tokenizer.from_bytes(data, exclude=["vocab"])


@registry.tokenizers("spacy-hybridner.BoundedTokenizer.v1")
def create_bounded_tokenizer(max_run_chars: int = DEFAULT_MAX_RUN_CHARS) -> Callable[[Language], Tokenizer]:
    """The language's default tokenizer (``spacy.Tokenizer.v1``) with a bound on the cost
    of whitespace-free runs: a run longer than ``max_run_chars`` characters is tokenized
    in pieces of that many characters.

    max_run_chars (int): the longest whitespace-free run tokenized in one piece.
    RETURNS (Callable[[Language], Tokenizer]): what ``[nlp.tokenizer]`` expects.
    """
    _check_max_run_chars(max_run_chars)
    make_default = registry.tokenizers.get("spacy.Tokenizer.v1")()

    def make(nlp: Language) -> BoundedTokenizer:
        default = make_default(nlp)
        tokenizer = BoundedTokenizer(nlp.vocab, max_run_chars=max_run_chars)
        return tokenizer.from_bytes(default.to_bytes(exclude=["vocab"]), exclude=["vocab"])

    return make


class _BoundedCall:
    """Any tokenizer, with the bound of :func:`tokenize_bounded` on its calls; every other
    attribute is the wrapped tokenizer's."""

    def __init__(self, tokenizer: Callable[[str], Doc], max_run_chars: int) -> None:
        self.tokenizer = tokenizer
        self.max_run_chars = max_run_chars

    def __call__(self, text: str) -> Doc:
        return tokenize_bounded(self.tokenizer, text, self.max_run_chars)

    def pipe(self, texts, batch_size: int = 1000):
        for text in texts:
            yield self(text)

    def __getattr__(self, name: str):
        if name == "tokenizer":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def bound_tokenizer(nlp: Language, max_run_chars: int = DEFAULT_MAX_RUN_CHARS) -> Language:
    """Give ``nlp`` a tokenizer whose cost is linear in the text's length: a pipeline whose
    tokenizer already has a bound (:class:`BoundedTokenizer`) keeps it; any other tokenizer
    is wrapped so that whitespace-free runs longer than ``max_run_chars`` are tokenized in
    pieces. For applications that serve pipelines they did not build (``serve``, ``annotate``).

    RETURNS (Language): ``nlp``, changed in place.
    """
    _check_max_run_chars(max_run_chars)
    if getattr(nlp.tokenizer, "max_run_chars", None) is None:
        nlp.tokenizer = _BoundedCall(nlp.tokenizer, max_run_chars)
    return nlp
