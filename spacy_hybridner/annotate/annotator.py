"""One engine-neutral annotator: texts in, plain entity records out.

The server, the local ``annotate`` engine and the Ray Data actors all call
:class:`Annotator`, so every path gives the same answer. It uses only the public face
of a spaCy pipeline (``spacy.load``, ``nlp.pipe``, ``doc.ents``, ``ent._.confidence``,
``nlp.meta``): it serves any pipeline, and a ``hybrid_ner`` one adds confidences.
"""

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..about import __version__
from ..distill import enable_marginals
from ..gpu import setup_gpu
from ..threads import use_threads
from ..tokenizer import DEFAULT_MAX_RUN_CHARS, bound_tokenizer, is_invisible

EntityRecord = Dict[str, Any]
# A UTF-16 surrogate code point on its own: valid in a Python str (and a JSON escape), not in UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


class Annotator:
    """Load a spaCy pipeline once and turn batches of texts into entity records.

    model (str): an installed pipeline package name or the path of a saved pipeline.
    batch_size (Optional[int]): ``nlp.pipe``'s batch size (None: the pipeline's own).
    torch_threads (Optional[int]): if given, torch's and numpy's BLAS thread count for this
        process, set before loading (:func:`spacy_hybridner.threads.use_threads`): 1 for one
        worker per core (Ray actors, worker processes, serve's model processes).
    gpu_id (int): -1 for the CPU, else the GPU to run on (:func:`spacy_hybridner.gpu.setup_gpu`).
    marginals (bool): make every ``hybrid_ner`` component store its tag marginals in the
        Docs it annotates (``distill.enable_marginals``); a pipeline without one is
        refused when loaded.
    max_run_chars (int): the tokenizer's cost bound (:func:`spacy_hybridner.tokenizer.bound_tokenizer`):
        a whitespace-free run longer than this is tokenized in pieces of this many
        characters, so no text costs more than linear time. A pipeline whose tokenizer has
        a bound of its own (``spacy-hybridner.BoundedTokenizer.v1``) keeps it.
    precision (Optional[str]), runtime (Optional[str]): if either is given, the
        pipeline's transformers run with these inference settings
        (:func:`spacy_hybridner.inference.apply_inference`: "fp32" or "int8"; "torch" or
        "onnxruntime", the latter exported when loading), whatever settings it was saved
        with; None for both: as saved.

    The pipeline is loaded on first use (or by :meth:`load`). A pickled Annotator
    carries only these settings, never the pipeline, so it can be shipped to worker
    processes, each of which loads its own copy once.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: Optional[int] = None,
        torch_threads: Optional[int] = None,
        gpu_id: int = -1,
        marginals: bool = False,
        max_run_chars: int = DEFAULT_MAX_RUN_CHARS,
        precision: Optional[str] = None,
        runtime: Optional[str] = None,
    ) -> None:
        self.model = str(model)
        self.marginals = marginals
        self.batch_size = batch_size
        self.torch_threads = torch_threads
        self.gpu_id = gpu_id
        self.max_run_chars = max_run_chars
        self.precision, self.runtime = precision, runtime
        self._nlp = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_nlp"] = None
        return state

    def load(self) -> "Annotator":
        """Load the pipeline now (it is loaded once; later calls do nothing)."""
        if self._nlp is None:
            import spacy

            if self.torch_threads is not None:
                use_threads(self.torch_threads)
            setup_gpu(self.gpu_id)
            if self.precision is None and self.runtime is None:
                nlp = spacy.load(self.model)
            else:
                from ..inference import apply_inference, load_float32

                nlp = load_float32(self.model)
                apply_inference(nlp, precision=self.precision or "fp32", runtime=self.runtime or "torch")
            nlp = bound_tokenizer(nlp, self.max_run_chars)
            if self.marginals:
                enable_marginals(nlp, self.model)
            self._nlp = nlp
        return self

    @property
    def nlp(self):
        """The loaded ``Language`` object."""
        return self.load()._nlp

    def annotate(self, texts: Iterable[str]) -> List[List[EntityRecord]]:
        """The entities of each text, in order: one list of records per text, each
        record ``{"start_char", "end_char", "label", "text", "confidence"}``
        (``confidence`` None where the component that set the entity gives none)."""
        kwargs = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return [doc_records(doc) for doc in self.nlp.pipe(texts, **kwargs)]

    __call__ = annotate

    def info(self) -> Dict[str, Any]:
        """What is loaded: name, version, language, pipes, entity labels, the scores
        in its meta.json and the versions of spaCy and spacy-hybridner."""
        import spacy

        nlp = self.nlp
        meta = nlp.meta
        labels = set()
        for name, pipe in nlp.pipeline:
            if "doc.ents" in nlp.get_pipe_meta(name).assigns and hasattr(pipe, "labels"):
                labels.update(pipe.labels)
        return {
            "name": f"{meta.get('lang', nlp.lang)}_{meta.get('name', 'pipeline')}",
            "version": meta.get("version"),
            "lang": nlp.lang,
            "pipeline": list(nlp.pipe_names),
            "labels": sorted(labels),
            "performance": meta.get("performance", {}),
            "spacy_version": spacy.__version__,
            "spacy_hybridner_version": __version__,
        }


def doc_records(doc) -> List[EntityRecord]:
    """The entities of a processed Doc as plain records (JSON- and Arrow-ready); an
    entity made only of invisible characters (any pipeline's) is left out."""
    from spacy.tokens import Span

    has_confidence = Span.has_extension("confidence")
    records = []
    for ent in doc.ents:
        if is_invisible(ent.text):
            continue
        confidence = ent._.confidence if has_confidence else None
        records.append(
            {
                "start_char": ent.start_char,
                "end_char": ent.end_char,
                "label": ent.label_,
                "text": ent.text,
                "confidence": None if confidence is None else float(confidence),
            }
        )
    return records


def surrogate_problem(value: str, what: str = "text") -> Optional[str]:
    """Why the string ``value`` cannot be stored as UTF-8, or None if it can: JSON allows
    an escaped lone surrogate (``"\\ud800"``, half of a UTF-16 pair), which Python decodes
    to a string that no UTF-8 file, Arrow column or spaCy string store can hold."""
    match = _SURROGATE.search(value)
    if match is None:
        return None
    return (
        f"{what} holds a lone surrogate U+{ord(match.group()):04X} at character {match.start()} "
        f"(a \\u{ord(match.group()):04x} escape without its pair), which UTF-8 cannot encode: "
        f"fix the encoding of this record"
    )


def text_problem(value: Any, max_chars: Optional[int] = None) -> Optional[str]:
    """Why ``value`` cannot be annotated as a text, or None if it can: not a string,
    longer than ``max_chars`` characters, or holding a lone surrogate (see
    :func:`surrogate_problem`). Used by every engine's input checks."""
    if not isinstance(value, str):
        return f"text must be a string, got {type(value).__name__}"
    if max_chars is not None and len(value) > max_chars:
        return f"text has {len(value)} characters, more than the limit of {max_chars}"
    return surrogate_problem(value, "text")


def filter_records(records: Sequence[EntityRecord], min_confidence: Optional[float]) -> List[EntityRecord]:
    """The records whose confidence is at least ``min_confidence`` (all records if it
    is None; records without a confidence are kept only when there is no threshold)."""
    if min_confidence is None:
        return list(records)
    return [r for r in records if r["confidence"] is not None and r["confidence"] >= min_confidence]
