"""The ``hybrid_ner`` pipeline component: HybridNER as spaCy's ``ner``."""
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy
import srsly
from spacy import util
from spacy.attrs import IS_SPACE
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, biluo_tags_to_spans, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats1d, Floats2d, Ints1d

from .about import __version__
from .calibration import entity_offsets, fit_temperature, is_correct
from .distill import store_marginals, weighted_loss
from .extensions import install_extensions
from .layers import crf_decode, crf_marginals, module_is_built
from .modules import CRF_BATCH_TOKENS, ENCODER_BATCH_TOKENS
from .tag_scheme import biluo_constraints, biluo_tag_names
from .threads import one_blas_thread, track_for_fork
from .tokenizer import is_invisible

# The tuned CPU default: the [components.ner.model] block of configs/hybrid_cpu.cfg
# (tests/test_defaults.py checks that the two agree); the batch bounds named in modules.
DEFAULT_HYBRID_NER_MODEL = f"""
[model]
@architectures = "spacy-hybridner.HybridNER.v2"
width = 128
depth = 2
n_heads = 4
ffn_width = 256
lstm_depth = 1
uni_lstm_depth = 0
dropout = 0.2
token_dropout = 0.1
attention_dropout = 0.0
window = 256
stride = 192
mixed_precision = false
grad_scaler_config = {{}}
encoder_batch_tokens = {ENCODER_BATCH_TOKENS}
crf_batch_tokens = {CRF_BATCH_TOKENS}
nO = null

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "spacy-hybridner.CharMultiHashEmbed.v3"
width = 96
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [20000, 5000, 10000, 5000]
include_static_vectors = false
nM = 16
nC = 8
word_dropout_rate = 0.5
char_cnn_width = 64

[model.tok2vec.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = 96
depth = 2
window_size = 1
maxout_pieces = 3
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_HYBRID_NER_MODEL)["model"]


class Predictions(NamedTuple):
    """What ``HybridEntityRecognizer.predict`` gives ``set_annotations``, per doc."""

    tag_ids: List[Ints1d]
    probs: List[Floats1d]
    marginals: Optional[List[Floats2d]]


@Language.factory(
    "hybrid_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
        # Chosen by measurement: docs/benchmarks.md, "CPU inference, second round".
        "max_predict_words": 8192,
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_hybrid_ner(
    nlp: Language, name: str, model: Model, scorer: Optional[Callable], max_predict_words: int
) -> "HybridEntityRecognizer":
    """Create a ``hybrid_ner`` component: a named entity recognizer whose model scores
    BILUO tags (e.g. ``spacy-hybridner.HybridNER.v2``) and decodes them with a CRF.

    model (Model[List[Doc], List[Floats2d]]): The emission model; its CRF is the
        sublayer ``model.get_ref("crf")`` (see ``HybridEntityRecognizer``).
    scorer (Optional[Callable]): Defaults to spaCy's NER scorer.
    max_predict_words (int): ``predict`` runs the model on at most about this many words
        at once, whatever the batch size of ``nlp.pipe`` or ``nlp.evaluate``: it bounds
        the memory of prediction and of the evaluations during training.
    """
    return HybridEntityRecognizer(nlp.vocab, model, name, scorer=scorer, max_predict_words=max_predict_words)


def _parts_by_words(docs: List[Doc], max_words: int) -> List[List[Doc]]:
    """Consecutive runs of ``docs`` of at most ``max_words`` words each (a longer doc
    alone), in order."""
    parts: List[List[Doc]] = [[]]
    words = 0
    for doc in docs:
        if parts[-1] and words + len(doc) > max_words:
            parts.append([])
            words = 0
        parts[-1].append(doc)
        words += len(doc)
    return parts


class HybridEntityRecognizer(TrainablePipe):
    """Named entity recognition with a CRF over BILUO tags.

    Predicted entities go to ``doc.ents`` (and so to ``token.ent_iob_`` and
    ``token.ent_type_``); each carries ``span._.confidence``, the probability under the
    CRF that exactly this span has exactly this label.

    Entities already on a Doc (from an ``entity_ruler`` placed before, say) are kept:
    decoding is constrained to agree with them, so predicted entities fill the rest of
    the text and never overlap or cut through them. Their ``_.confidence`` is left as
    it was.

    The model is any ``Model[List[Doc], List[Floats2d]]`` that gives each token a score
    per BILUO tag (``tag_names``: ``nO`` of them, set on the model before
    ``initialize``) and has a ref ``"crf"``: a ``layers.crf_layer`` (``(scores, gold) ->
    negative log-likelihood``, decoded with ``layers.crf_decode``) whose
    ``attrs["constraints"]`` the component sets from the tag scheme. That is all the
    component knows of the model: the model builds its PyTorch modules in
    ``initialize`` and rebuilds them itself when loaded.
    """

    def __init__(
        self, vocab: Vocab, model: Model, name: str = "hybrid_ner", *,
        scorer: Optional[Callable] = None, max_predict_words: int = 8192,
    ) -> None:
        if max_predict_words < 1:
            raise ValueError(f"[hybrid_ner] max_predict_words must be at least 1, got {max_predict_words}.")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.max_predict_words = max_predict_words
        self.cfg: Dict = {"labels": [], "temperature": 1.0, "saved_by": f"spacy-hybridner {__version__}"}
        self._tag_cache: Optional[Tuple] = None
        # Set by `annotate --marginals`: also store each doc's tag marginals in its
        # user_data (readers.MARGINALS_KEY), soft targets for a student. Not saved.
        self.store_marginals = False
        install_extensions()
        track_for_fork(self)  # nlp.pipe(n_process > 1): see threads.py

    # --- labels and tags ------------------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity labels, in tag order."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tag_names(self) -> List[str]:
        """The BILUO tags the model scores: ``O`` then B-, I-, L-, U- per label."""
        return biluo_tag_names(self.labels)

    def _tags(self) -> Tuple[Dict[str, int], List[str]]:
        if self._tag_cache is None or self._tag_cache[0] != self.labels:
            names = self.tag_names
            index = {tag: i for i, tag in enumerate(names)}
            self._tag_cache = (self.labels, index, names)
        return self._tag_cache[1], self._tag_cache[2]

    def add_label(self, label: str) -> int:
        """Add an entity label before ``initialize``. RETURNS (int): 1 if it is new."""
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if label in self.labels:
            return 0
        if self.is_initialized:
            raise ValueError(
                f"[hybrid_ner] Cannot add the label '{label}' to '{self.name}' after it was "
                f"initialized: its CRF has one set of tags per label. Add every label before "
                f"nlp.initialize() (ner.add_label, or labels in [initialize.components."
                f"{self.name}]), or initialize again to retrain with the new label."
            )
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    @property
    def is_initialized(self) -> bool:
        """Whether the model is built (after ``initialize`` or loading)."""
        return module_is_built(self.model.get_ref("crf"))

    def _set_up_model(self) -> None:
        """Give the model its tag count and BILUO constraints."""
        tags = self.tag_names
        self.model.set_dim("nO", len(tags), force=True)
        self.model.get_ref("crf").attrs["constraints"] = biluo_constraints(tags)

    # --- training ---------------------------------------------------------------------
    def initialize(
        self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None,
        labels: Optional[Iterable[str]] = None,
    ) -> None:
        """Gather labels (sorted) from the examples unless ``labels`` are given, then build
        and initialise the model on a sample of the examples.

        get_examples (Callable[[], Iterable[Example]]): Training examples.
        nlp (Language): The pipeline (unused).
        labels (Optional[Iterable[str]]): The entity labels, e.g. from ``spacy init labels``.
        """
        validate_get_examples(get_examples, "HybridEntityRecognizer.initialize")
        if labels is not None:
            found = list(labels)
        else:
            found = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
            for label in self.labels:  # added with add_label
                if label not in found:
                    found.append(label)
        if not all(isinstance(label, str) for label in found):
            raise ValueError(Errors.E187)
        self.cfg["labels"] = list(dict.fromkeys(found))
        for label in self.labels:
            self.vocab.strings.add(label)
        self.cfg["temperature"] = 1.0  # a new model is not calibrated yet
        self.cfg["saved_by"] = f"spacy-hybridner {__version__}"
        self._require_labels()
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        if not doc_sample:
            raise ValueError(Errors.E923.format(name=self.name))
        self._set_up_model()
        self.model.initialize(X=doc_sample)

    def _gold_tags(self, example: Example) -> Ints1d:
        """Tag ids of the reference entities aligned to the predicted tokens; -1 where
        the tag is missing, or could not be aligned (spaCy warns about those)."""
        index, _ = self._tags()
        tags = example.get_aligned_ner()
        ids = numpy.full((len(tags),), -1, dtype="int32")
        for i, tag in enumerate(tags):
            if tag is None or tag == "-" or tag == "":
                continue
            tag_id = index.get(tag)
            if tag_id is None:
                label = tag.split("-", 1)[-1]
                raise ValueError(
                    f"[hybrid_ner] The training data has an entity with the label '{label}', "
                    f"which the component '{self.name}' was not initialized with (its labels: "
                    f"{list(self.labels)}). Initialize it with that label: leave labels out of "
                    f"[initialize.components.{self.name}] so they are read from the training "
                    f"data, or add it with add_label before nlp.initialize()."
                )
            ids[i] = tag_id
        return self.model.ops.asarray1i(ids)

    def update(
        self, examples: Iterable[Example], *, drop: float = 0.0,
        sgd: Optional[Optimizer] = None, losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch of examples: CRF negative log-likelihood, summed, each
        example's weighted by ``distill.example_weight`` (1.0 unless a corpus reader such
        as ``GoldSilverCorpus`` set one) and, for silver examples with a teacher's
        marginals, partly against those (``distill.weighted_loss``)."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "HybridEntityRecognizer.update")
        self._require_initialized()
        # Check the gold labels before touching the weights.
        gold = [self._gold_tags(eg) for eg in examples]
        if not any(len(eg.predicted) for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        scores, backprop_scores = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self._loss(examples, scores, gold)
        backprop_scores(d_scores)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """The CRF loss of ``scores`` against the examples (weighted as in ``update``) and
        its gradient. As a side effect the CRF's own transition scores receive their
        gradient."""
        examples = list(examples)
        validate_examples(examples, "HybridEntityRecognizer.get_loss")
        return self._loss(examples, scores, [self._gold_tags(eg) for eg in examples])

    def _loss(
        self, examples: List[Example], scores: List[Floats2d], gold: List[Ints1d]
    ) -> Tuple[float, List[Floats2d]]:
        """Each example's weighted CRF loss, partly against a teacher's marginals where it
        has them: ``distill.weighted_loss``."""
        _, names = self._tags()
        return weighted_loss(self.model.get_ref("crf"), scores, gold, examples, names)

    # --- prediction -------------------------------------------------------------------
    def _require_initialized(self) -> None:
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))

    def _tag_mask(self, doc: Doc):
        """Allowed tags per token, or None where every tag is: an entity never begins or
        ends on a whitespace token (as in spaCy's own ``ner``; whitespace may only be
        inside an entity or outside), and tokens of entities already on the doc keep
        exactly those entities."""
        space = doc.to_array(IS_SPACE).astype("bool")
        if not doc.ents and not space.any():
            return None
        index, names = self._tags()
        mask = numpy.ones((len(doc), len(names)), dtype="bool")
        mask[numpy.ix_(space, [i for i, name in enumerate(names) if name[:2] in ("B-", "L-", "U-")])] = False
        for ent in doc.ents:
            label = ent.label_
            if label in self.labels:
                if len(ent) == 1:
                    tags = [f"U-{label}"]
                else:
                    tags = [f"B-{label}"] + [f"I-{label}"] * (len(ent) - 2) + [f"L-{label}"]
            else:  # a label the model cannot produce: leave those tokens outside
                tags = ["O"] * len(ent)
            for i, tag in zip(range(ent.start, ent.end), tags):
                mask[i] = False
                mask[i, index[tag]] = True
        return self.model.ops.asarray(mask)

    def _scores(self, docs: List[Doc]) -> List[Floats2d]:
        """The model's tag scores of each doc, computed in parts of at most
        ``max_predict_words`` words whatever the number of docs (bounded memory)."""
        scores: List[Floats2d] = []
        for part in _parts_by_words(docs, self.max_predict_words):
            scores.extend(self.model.predict(part))
        return scores

    def _decode(
        self, docs: List[Doc], scores: List[Floats2d], temperature: Optional[float] = None
    ) -> Tuple[List[Ints1d], List[Floats1d]]:
        """Constrained CRF decoding (see ``_tag_mask``) of the scores of ``docs``: tag ids
        and segment probabilities at ``temperature`` (default: the calibrated one)."""
        if temperature is None:
            temperature = self.cfg.get("temperature", 1.0)
        tags: List[Ints1d] = []
        probs: List[Floats1d] = []
        crf = self.model.get_ref("crf")
        start = 0
        for part in _parts_by_words(docs, self.max_predict_words):
            part_scores = scores[start : start + len(part)]
            start += len(part)
            masks = [self._tag_mask(doc) for doc in part]
            part_tags, part_probs = crf_decode(crf, part_scores, masks, temperature)
            tags.extend(part_tags)
            probs.extend(part_probs)
        return tags, probs

    def predict(self, docs: Iterable[Doc]) -> "Predictions":
        """Decode the best tags of each doc. RETURNS (Predictions): tag ids
        (``List[Ints1d]``), at each token the probability of the segment ending there
        (``List[Floats1d]``), and with ``store_marginals`` the tag marginals of each doc
        (``List[Floats2d]``, the CRF's forward-backward at temperature 1; else None)."""
        docs = list(docs)
        self._require_initialized()
        ops = self.model.ops
        if not any(len(doc) for doc in docs):
            marginals = [ops.alloc2f(len(d), len(self.tag_names)) for d in docs] if self.store_marginals else None
            return Predictions([ops.alloc1i(len(d)) for d in docs], [ops.alloc1f(len(d)) for d in docs], marginals)
        with one_blas_thread(ops):
            scores = self._scores(docs)
            tags, probs = self._decode(docs, scores)
            if not self.store_marginals:
                return Predictions(tags, probs, None)
            crf = self.model.get_ref("crf")
            marginals = []
            start = 0
            for part in _parts_by_words(docs, self.max_predict_words):
                marginals.extend(crf_marginals(crf, scores[start : start + len(part)]))
                start += len(part)
            return Predictions(tags, probs, marginals)

    def set_annotations(self, docs: Iterable[Doc], predictions: "Predictions") -> None:
        """Write the entities to ``doc.ents``, with ``span._.confidence``, and the tag
        marginals to ``doc.user_data`` when ``predict`` gave them (``store_marginals``;
        ``distill.store_marginals``)."""
        _, names = self._tags()
        ops = self.model.ops
        docs = list(docs)
        if predictions.marginals is not None:
            for doc, marginals in zip(docs, predictions.marginals):
                store_marginals(doc, ops.to_numpy(marginals), names)
        for doc, tag_ids, probs in zip(docs, predictions.tag_ids, predictions.probs):
            tag_ids = ops.to_numpy(tag_ids)
            probs = ops.to_numpy(probs)
            preset = list(doc.ents)
            spans = biluo_tags_to_spans(doc, [names[i] for i in tag_ids])
            # No entity of only invisible characters ("\u200b" * 20, a lone "\u200d").
            spans = [span for span in spans if not is_invisible(span.text)]
            if preset:
                taken = numpy.zeros((len(doc),), dtype="bool")
                for ent in preset:
                    taken[ent.start : ent.end] = True
                spans = [span for span in spans if not taken[span.start : span.end].any()]
            for span in spans:
                span._.confidence = float(probs[span.end - 1])
            doc.ents = sorted(preset + spans, key=lambda span: span.start)

    def calibrate(
        self, examples: Iterable[Example], temperatures: Optional[Sequence[float]] = None,
        n_bins: int = 10,
    ) -> Dict[str, float]:
        """Fit the temperature of ``ent._.confidence`` on held-out examples (the dev
        set, say) and keep it in ``cfg``. The CRF's potentials are divided by the
        temperature for the probabilities only, so the entities stay the same and only
        their confidences change. The search is ``calibration.fit_temperature``; for a
        whole pipeline (upstream components first) use ``calibration.calibrate_pipeline``.

        examples (Iterable[Example]): Gold examples; their predicted docs are not changed.
        temperatures (Optional[Sequence[float]]): Candidates (default: 0.5 to 8).
        n_bins (int): Bins of the calibration error.
        RETURNS (Dict[str, float]): temperature, nll_before / ece_before (at the
            temperature in use before), nll_after / ece_after, n_entities.
        """
        self._require_initialized()
        examples = list(examples)
        docs = [eg.predicted.copy() for eg in examples]
        for doc in docs:
            doc.ents = []
        with one_blas_thread(self.model.ops):
            scores = self._scores(docs)
        annotated = [doc.copy() for doc in docs]  # docs stay without entities: no preset constraint
        self.set_annotations(annotated, Predictions(*self._decode(docs, scores, temperature=1.0), None))
        ends = [(i, ent.end - 1) for i, doc in enumerate(annotated) for ent in doc.ents]
        correct = [
            is_correct(ent, entity_offsets(eg.reference))
            for doc, eg in zip(annotated, examples)
            for ent in doc.ents
        ]

        def confidences_at(temperature: float) -> List[float]:
            probs = [self.model.ops.to_numpy(p) for p in self._decode(docs, scores, temperature)[1]]
            return [float(probs[i][j]) for i, j in ends]

        current = float(self.cfg.get("temperature", 1.0))
        result = fit_temperature(confidences_at, correct, temperatures, current=current, n_bins=n_bins)
        self.cfg["temperature"] = result["temperature"]
        return result

    # --- serialization ----------------------------------------------------------------
    def _load_cfg(self, cfg: Dict, source: str) -> None:
        """Take the saved settings; pipelines saved before the saved format of 0.2.0
        (whose model the component rebuilt itself) are refused with what to do."""
        if "saved_by" not in cfg:
            raise ValueError(
                f"[hybrid_ner] The component '{self.name}' in {source} was saved by spacy-hybridner "
                f"0.1.x, whose saved format this version ({__version__}) no longer reads: from 0.2.0 "
                f"the model saves the settings it was built with beside its weights and rebuilds "
                f"itself. Retrain the pipeline with this version (the same config works once its "
                f"architecture names spacy-hybridner.HybridNER.v2 or v1), or load it with "
                f"spacy-hybridner 0.1.x."
            )
        self.cfg.update(cfg)

    def _load_model_bytes(self, data: bytes, source: str) -> None:
        try:
            self.model.from_bytes(data)
        except Exception as err:
            raise ValueError(
                f"[hybrid_ner] Could not load the weights of '{self.name}' from {source}: "
                f"{type(err).__name__}: {err}. The file is damaged or was written for a "
                f"different model config. Save the pipeline again with nlp.to_disk, or "
                f"retrain it."
            ) from err
        if self.labels and not self.is_initialized:
            raise ValueError(
                f"[hybrid_ner] The weights of '{self.name}' in {source} hold no CRF although the "
                f"component has labels {list(self.labels)}: the file was saved before the model "
                f"was initialized. Save the pipeline again after nlp.initialize or training."
            )

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "HybridEntityRecognizer":
        """Load from a bytestring written by ``to_bytes``."""
        deserialize = {
            "cfg": lambda b: self._load_cfg(srsly.json_loads(b), "bytes"),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self._load_model_bytes(b, "bytes"),
        }
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

    def from_disk(self, path, *, exclude=tuple()) -> "HybridEntityRecognizer":
        """Load from a directory written by ``to_disk``."""
        path = util.ensure_path(path)

        def load_model(p: Path) -> None:
            if not p.exists():
                raise ValueError(
                    f"[hybrid_ner] The weights file of '{self.name}' is missing: {p}. The "
                    f"pipeline folder is incomplete; copy it again in full, save it again "
                    f"with nlp.to_disk, or retrain it."
                )
            self._load_model_bytes(p.read_bytes(), str(p))

        deserialize = {
            "cfg": lambda p: self._load_cfg(srsly.read_json(p), str(path)),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        return self
