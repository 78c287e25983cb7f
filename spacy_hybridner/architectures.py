"""Registered model architectures: thin builders that chain the layers."""

from typing import List, Optional

from spacy.attrs import intify_attr
from spacy.ml.featureextractor import FeatureExtractor
from spacy.ml.staticvectors import StaticVectors
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import HashEmbed, Maxout, Model, chain, concatenate, list2ragged, ragged2list, with_array
from thinc.types import Floats2d

from .layers import char_cnn, char_embed, crf_layer, hybrid_encoder, word_dropout
from .modules import CRF_BATCH_TOKENS, ENCODER_BATCH_TOKENS, EncoderSettings
from .threads import numpy_gemm


# One piece past 60 lines: 17 registered settings, one per line, and their documentation;
# the body is a dozen lines.
@registry.architectures("spacy-hybridner.HybridNER.v2")
def build_hybrid_ner_v2(
    tok2vec: Model[List[Doc], List[Floats2d]],
    width: int,
    depth: int,
    n_heads: int,
    ffn_width: int,
    lstm_depth: int,
    uni_lstm_depth: int,
    dropout: float,
    token_dropout: float,
    attention_dropout: Optional[float],
    window: int,
    stride: int,
    mixed_precision: bool,
    grad_scaler_config: dict,
    encoder_batch_tokens: int,
    crf_batch_tokens: int,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """HybridNER: token vectors → projection to ``width`` → positions → ``depth``
    Transformer encoder layers → ``lstm_depth`` BiLSTM layers (→ ``uni_lstm_depth``
    left-to-right LSTM layers) → per-tag emission scores, scored and decoded by a
    linear-chain CRF over BILUO tags. No defaults here: they live in the ``hybrid_ner``
    factory's default config (the block of ``configs/hybrid_cpu.cfg``).

    tok2vec (Model[List[Doc], List[Floats2d]]): Any spaCy token-to-vector layer.
    width, depth, n_heads, ffn_width, lstm_depth, uni_lstm_depth, dropout,
        token_dropout, attention_dropout: The encoder's settings, documented and
        checked by ``modules.encoder.EncoderSettings``.
    window (int): Longest span of tokens encoded at once; longer documents are
        processed in overlapping windows.
    stride (int): Tokens between the starts of consecutive windows (``<= window``).
    mixed_precision (bool): Run the encoder under autocast (GPU only).
    grad_scaler_config (dict): Arguments for thinc's ``PyTorchGradScaler``.
    encoder_batch_tokens (int): The encoder runs windows in chunks of at most this many
        padded positions (bounds the memory of attention).
    crf_batch_tokens (int): The CRF runs sequences in buckets of at most this many
        padded positions.
    nO (Optional[int]): Number of tags; the component sets it from its labels.
    RETURNS (Model[List[Doc], List[Floats2d]]): Emission scores per document. The CRF
        is the sublayer ``model.get_ref("crf")``.
    """
    settings = EncoderSettings(
        width=width,
        depth=depth,
        n_heads=n_heads,
        ffn_width=ffn_width,
        lstm_depth=lstm_depth,
        uni_lstm_depth=uni_lstm_depth,
        dropout=dropout,
        token_dropout=token_dropout,
        attention_dropout=attention_dropout,
    )
    _check_windows_and_bounds(window, stride, encoder_batch_tokens, crf_batch_tokens)
    encoder = hybrid_encoder(
        settings,
        window=window,
        stride=stride,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
        nO=nO,
        max_batch_tokens=encoder_batch_tokens,
    )
    crf = crf_layer(nO=nO, max_batch_tokens=crf_batch_tokens)
    model = Model(
        "hybrid_ner",
        _forward,
        init=_init,
        layers=[chain(tok2vec, encoder), crf],
        refs={"tok2vec": tok2vec, "encoder": encoder, "crf": crf},
        dims={"nO": nO},
    )
    numpy_gemm(model)  # the BLAS policy of its thinc layers: threads.numpy_gemm
    return model


@registry.architectures("spacy-hybridner.HybridNER.v1")
def build_hybrid_ner(
    tok2vec: Model[List[Doc], List[Floats2d]],
    width: int = 128,
    depth: int = 2,
    n_heads: int = 4,
    ffn_width: int = 256,
    lstm_depth: int = 1,
    uni_lstm_depth: int = 0,
    dropout: float = 0.1,
    token_dropout: float = 0.0,
    window: int = 256,
    stride: int = 192,
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},  # noqa: B006 (a config default, never mutated)
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """The first released HybridNER: ``HybridNER.v2`` with the signature and defaults it
    was released with (kept so that v1 configs mean what they meant; tests/test_defaults.py
    pins them), attention dropout equal to ``dropout`` and the batch bounds of that time.
    New configs use v2 (which adds ``attention_dropout`` and the batch bounds)."""
    return build_hybrid_ner_v2(
        tok2vec,
        width=width,
        depth=depth,
        n_heads=n_heads,
        ffn_width=ffn_width,
        lstm_depth=lstm_depth,
        uni_lstm_depth=uni_lstm_depth,
        dropout=dropout,
        token_dropout=token_dropout,
        attention_dropout=None,
        window=window,
        stride=stride,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
        encoder_batch_tokens=ENCODER_BATCH_TOKENS,
        crf_batch_tokens=CRF_BATCH_TOKENS,
        nO=nO,
    )


def _check_windows_and_bounds(window: int, stride: int, encoder_batch_tokens: int, crf_batch_tokens: int) -> None:
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(
            f"window ({window}) must be at least 1 and stride ({stride}) between 1 and "
            f"window, so that consecutive windows overlap or touch and cover every token. "
            f"For example window = 256, stride = 192."
        )
    for name, value in (("encoder_batch_tokens", encoder_batch_tokens), ("crf_batch_tokens", crf_batch_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be a positive number of padded positions, got {value}.")


def _forward(model: Model, docs: List[Doc], is_train: bool):
    return model.layers[0](docs, is_train)


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    nO = model.get_dim("nO")
    model.get_ref("encoder").set_dim("nO", nO, force=True)
    model.get_ref("crf").set_dim("nO", nO, force=True)
    model.layers[0].initialize(X=X)
    model.layers[1].initialize()


@registry.architectures("spacy-hybridner.CharMultiHashEmbed.v1")
def build_char_multi_hash_embed(
    width: int,
    attrs: List[str],
    rows: List[int],
    include_static_vectors: bool,
    nM: int = 16,
    nC: int = 8,
    char_feature: str = "LOWER",
    char_rows: int = 5000,
) -> Model[List[Doc], List[Floats2d]]:
    """spaCy's ``MultiHashEmbed`` and ``CharacterEmbed`` side by side, mixed down to
    ``width`` by a Maxout layer. The hash embeddings see the attributes in ``attrs``;
    the character embedding sees the first and last ``nC // 2`` UTF-8 bytes of each
    word (case kept), which helps with words never seen in training.

    width (int): Output width (and width of each of the two embeddings).
    attrs (List[str]): Token attributes for ``MultiHashEmbed``, e.g. NORM, PREFIX,
        SUFFIX, SHAPE.
    rows (List[int]): Hash table rows per attribute in ``attrs``.
    include_static_vectors (bool): Also use the vocab's static vectors.
    nM (int): Width of each character embedding.
    nC (int): Characters per word (half from the start, half from the end).
    char_feature (str): Attribute that ``CharacterEmbed`` hashes next to the characters.
    char_rows (int): Rows of that attribute's hash table.
    """
    multi_hash = registry.get("architectures", "spacy.MultiHashEmbed.v2")(
        width=width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors
    )
    chars = registry.get("architectures", "spacy.CharacterEmbed.v2")(
        width=width, rows=char_rows, nM=nM, nC=nC, include_static_vectors=False, feature=char_feature
    )
    return chain(
        concatenate(multi_hash, chars), with_array(Maxout(width, 2 * width, nP=3, normalize=True, dropout=0.0))
    )


# Attributes that name the word itself; word_dropout applies to their tables.
WORD_ATTRS = frozenset(intify_attr(name) for name in ("NORM", "LOWER", "ORTH"))


@registry.architectures("spacy-hybridner.CharMultiHashEmbed.v2")
def build_char_multi_hash_embed_v2(
    width: int,
    attrs: List[str],
    rows: List[int],
    include_static_vectors: bool,
    nM: int = 16,
    nC: int = 8,
    word_dropout_rate: float = 0.0,
    char_cnn_width: int = 0,
) -> Model[List[Doc], List[Floats2d]]:
    """``CharMultiHashEmbed.v3``, as released in version 0.2.0: its signature is frozen
    (tests/test_defaults.py pins it). ``char_cnn_width`` came after the first release of
    v2 and belongs to v3, but every pipeline that 0.2.0 saved names v2 with it (the shipped
    ``hybrid_cpu`` has ``char_cnn_width = 64``), so v2 keeps it: such pipelines load and
    give the same entities. New configs name v3."""
    return build_char_multi_hash_embed_v3(
        width,
        attrs,
        rows,
        include_static_vectors,
        nM=nM,
        nC=nC,
        word_dropout_rate=word_dropout_rate,
        char_cnn_width=char_cnn_width,
    )


@registry.architectures("spacy-hybridner.CharMultiHashEmbed.v3")
def build_char_multi_hash_embed_v3(
    width: int,
    attrs: List[str],
    rows: List[int],
    include_static_vectors: bool,
    nM: int = 16,
    nC: int = 8,
    word_dropout_rate: float = 0.0,
    char_cnn_width: int = 0,
) -> Model[List[Doc], List[Floats2d]]:
    """Hash embeddings of ``attrs``, character embeddings and (optionally) a character
    CNN, concatenated and mixed down to ``width`` by one Maxout layer. Unlike v1
    (spaCy's ``MultiHashEmbed`` and ``CharacterEmbed`` each with its own Maxout, then a
    third), there is one mixing layer and no second hash table of the word, which makes
    it cheaper; and the word-identity tables (NORM, LOWER, ORTH) can be dropped out by
    whole rows.

    width (int): Output width, and width of each hash table.
    attrs (List[str]): Token attributes to hash-embed, e.g. NORM, PREFIX, SUFFIX, SHAPE.
    rows (List[int]): Hash table rows per attribute in ``attrs``.
    include_static_vectors (bool): Also use the vocab's static vectors.
    nM (int): Width of each character embedding.
    nC (int): Characters per word (half from the start, half from the end, as UTF-8
        bytes, case kept).
    word_dropout_rate (float): In training, the probability of zeroing a token's row
        of a word-identity table, so that words never seen in training are tagged
        from their characters, shape and context.
    char_cnn_width (int): Width of a character CNN over every character of each
        word (``char_cnn``), mixed in next to the rest; 0 leaves it out.
    """
    if len(rows) != len(attrs):
        raise ValueError(
            f"CharMultiHashEmbed got {len(attrs)} attrs but {len(rows)} rows: give one number of rows per attribute."
        )
    if not 0.0 <= word_dropout_rate < 1.0:
        raise ValueError(f"word_dropout_rate must be in [0, 1), got {word_dropout_rate}.")
    if char_cnn_width < 0:
        raise ValueError(f"char_cnn_width must be 0 (no character CNN) or more, got {char_cnn_width}.")
    tables = []
    for i, (attr, n_rows) in enumerate(zip(attrs, rows)):
        table = HashEmbed(width, n_rows, column=i, seed=8 + i, dropout=0.0)
        if word_dropout_rate > 0.0 and intify_attr(attr) in WORD_ATTRS:
            table = chain(table, word_dropout(word_dropout_rate))
        tables.append(table)
    parts = [
        chain(FeatureExtractor(attrs), list2ragged(), with_array(concatenate(*tables))),
        chain(char_embed(nM=nM, nC=nC), list2ragged()),
    ]
    if char_cnn_width > 0:
        parts.append(char_cnn(char_cnn_width))
    if include_static_vectors:
        parts.append(StaticVectors(width, dropout=0.0))
    n_inputs = width * (len(attrs) + include_static_vectors) + nM * nC + char_cnn_width
    return chain(
        concatenate(*parts), with_array(Maxout(width, n_inputs, nP=3, normalize=True, dropout=0.0)), ragged2list()
    )
