"""The ``hybrid_ner`` pipeline component: HybridNER as spaCy's ``ner``."""

from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import srsly
from spacy import util
from spacy.errors import Errors as SpacyErrors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, Optimizer, set_dropout_rate
from thinc.types import Floats1d, Floats2d, Ints1d

from .about import __version__
from .calibration import fit_annotation_temperature
from .defaults import DEFAULT_HYBRID_NER_MODEL, DEFAULT_MODEL  # noqa: F401 (the factory's default)
from .distill import store_marginals, weighted_loss
from .errors import Errors
from .extensions import install_extensions
from .layers import crf_decode, crf_marginals, module_is_built
from .modules import consecutive_parts
from .tag_scheme import biluo_constraints, biluo_tag_names, entities_from_tags, gold_tag_ids, tag_mask
from .threads import one_blas_thread, track_for_fork


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
        self,
        vocab: Vocab,
        model: Model,
        name: str = "hybrid_ner",
        *,
        scorer: Optional[Callable] = None,
        max_predict_words: int = 8192,
    ) -> None:
        if max_predict_words < 1:
            raise ValueError(Errors.E001.format(value=max_predict_words))
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
            raise ValueError(SpacyErrors.E187)
        if label in self.labels:
            return 0
        if self.is_initialized:
            raise ValueError(Errors.E002.format(label=label, name=self.name))
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
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
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
            raise ValueError(SpacyErrors.E187)
        self.cfg["labels"] = list(dict.fromkeys(found))
        for label in self.labels:
            self.vocab.strings.add(label)
        self.cfg["temperature"] = 1.0  # a new model is not calibrated yet
        self.cfg["saved_by"] = f"spacy-hybridner {__version__}"
        self._require_labels()
        doc_sample = [eg.predicted for eg in islice(get_examples(), 10)]
        if not doc_sample:
            raise ValueError(SpacyErrors.E923.format(name=self.name))
        self._set_up_model()
        self.model.initialize(X=doc_sample)

    def _gold_tags(self, example: Example) -> Ints1d:
        """Tag ids of the reference entities aligned to the predicted tokens (-1: unknown)."""
        index, _ = self._tags()
        return self.model.ops.asarray1i(gold_tag_ids(example, index, self.labels, self.name))

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
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
            raise ValueError(SpacyErrors.E109.format(name=self.name))

    def _tag_mask(self, doc: Doc):
        """Allowed tags per token, or None where every tag is (``tag_scheme.tag_mask``)."""
        index, names = self._tags()
        mask = tag_mask(doc, index, names, self.labels)
        return None if mask is None else self.model.ops.asarray(mask)

    def _scores(self, docs: List[Doc]) -> List[Floats2d]:
        """The model's tag scores of each doc, computed in parts of at most
        ``max_predict_words`` words whatever the number of docs (bounded memory)."""
        scores: List[Floats2d] = []
        for part in consecutive_parts(docs, self.max_predict_words):
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
        for part, part_scores in self._parts(docs, scores):
            part_tags, part_probs = crf_decode(crf, part_scores, [self._tag_mask(doc) for doc in part], temperature)
            tags.extend(part_tags)
            probs.extend(part_probs)
        return tags, probs

    def _parts(self, docs: List[Doc], scores: List[Floats2d]) -> Iterator[Tuple[List[Doc], List[Floats2d]]]:
        """The docs and their scores in parts of at most ``max_predict_words`` words."""
        start = 0
        for part in consecutive_parts(docs, self.max_predict_words):
            yield part, scores[start : start + len(part)]
            start += len(part)

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
            marginals = [m for _, part_scores in self._parts(docs, scores) for m in crf_marginals(crf, part_scores)]
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
            doc.ents = entities_from_tags(doc, [names[i] for i in ops.to_numpy(tag_ids)], ops.to_numpy(probs))

    def calibrate(
        self, examples: Iterable[Example], temperatures: Optional[Sequence[float]] = None, n_bins: int = 10
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
            doc.ents = []  # no preset constraint: the model's own entities
        with one_blas_thread(self.model.ops):
            scores = self._scores(docs)

        annotated = [doc.copy() for doc in docs]  # the entities, once: temperature never changes them
        self.set_annotations(annotated, Predictions(*self._decode(docs, scores, temperature=1.0), None))

        def probs_at(temperature: float) -> List:
            return [self.model.ops.to_numpy(p) for p in self._decode(docs, scores, temperature)[1]]

        current = float(self.cfg.get("temperature", 1.0))
        result = fit_annotation_temperature(annotated, probs_at, examples, temperatures, current=current, n_bins=n_bins)
        self.cfg["temperature"] = result["temperature"]
        return result

    # --- serialization ----------------------------------------------------------------
    def _load_cfg(self, cfg: Dict, source: str) -> None:
        """Take the saved settings; pipelines saved before the saved format of 0.2.0
        (whose model the component rebuilt itself) are refused with what to do."""
        if "saved_by" not in cfg:
            raise ValueError(Errors.E004.format(name=self.name, source=source, version=__version__))
        self.cfg.update(cfg)

    def _load_model_bytes(self, data: bytes, source: str) -> None:
        try:
            self.model.from_bytes(data)
        except Exception as err:
            raise ValueError(
                Errors.E005.format(name=self.name, source=source, error=f"{type(err).__name__}: {err}")
            ) from err
        if self.labels and not self.is_initialized:
            raise ValueError(Errors.E006.format(name=self.name, source=source, labels=list(self.labels)))

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
                raise ValueError(Errors.E007.format(name=self.name, path=p))
            self._load_model_bytes(p.read_bytes(), str(p))

        deserialize = {
            "cfg": lambda p: self._load_cfg(srsly.read_json(p), str(path)),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        return self
