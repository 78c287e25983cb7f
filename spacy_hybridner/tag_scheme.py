"""The BILUO tag scheme, as spaCy writes it, and the transitions it allows.

Tags are ``"O"`` followed by ``B-``, ``I-``, ``L-``, ``U-`` for each label, in label
order; the ids are positions in that list. The constraints make every path a CRF can
decode a valid sequence of non-overlapping spans.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy
from spacy.attrs import IS_SPACE
from spacy.tokens import Doc, Span
from spacy.training import Example, biluo_tags_to_spans

from .errors import Errors
from .tokenizer import is_invisible

BILUO_PREFIXES = ("B", "I", "L", "U")


def biluo_tag_names(labels: Iterable[str]) -> List[str]:
    """RETURNS (List[str]): ``["O", "B-L1", "I-L1", "L-L1", "U-L1", "B-L2", ...]``."""
    return ["O"] + [f"{prefix}-{label}" for label in labels for prefix in BILUO_PREFIXES]


def _split(tag: str):
    if tag == "O":
        return "O", None
    prefix, _, label = tag.partition("-")
    if prefix not in BILUO_PREFIXES or not label:
        raise ValueError(f"'{tag}' is not a BILUO tag: expected 'O' or B-, I-, L-, U- and a label.")
    return prefix, label


def biluo_constraints(tags: Sequence[str]) -> Dict[str, list]:
    """The starts, transitions and ends that BILUO allows, for ``CRF``.

    A sequence starts with O, B-X or U-X and ends with O, L-X or U-X. After B-X or I-X
    only I-X or L-X may follow; after O, L-X or U-X only O, B-Y or U-Y. A segment (an
    entity, or a single O) opens at O, B-X and U-X.

    tags (Sequence[str]): Tag names, e.g. from ``biluo_tag_names``.
    RETURNS (Dict[str, list]): ``allowed_start``, ``allowed_transitions``,
        ``allowed_end`` and ``segment_starts``, as lists of bools.
    """
    parts = [_split(tag) for tag in tags]
    start = [prefix in ("O", "B", "U") for prefix, _ in parts]
    end = [prefix in ("O", "L", "U") for prefix, _ in parts]
    transitions = []
    for prefix_i, label_i in parts:
        row = []
        for j, (prefix_j, label_j) in enumerate(parts):
            if prefix_i in ("B", "I"):
                row.append(prefix_j in ("I", "L") and label_j == label_i)
            else:
                row.append(start[j])
        transitions.append(row)
    return {
        "allowed_start": start,
        "allowed_transitions": transitions,
        "allowed_end": end,
        "segment_starts": list(start),
    }


def gold_tag_ids(example: Example, index: Dict[str, int], labels: Sequence[str], name: str) -> numpy.ndarray:
    """Tag ids of the reference entities aligned to the predicted tokens; -1 where the tag
    is missing or could not be aligned (spaCy warns about those).

    index (Dict[str, int]): tag name → id. labels, name: the component's, for the error
        raised on a label it was not initialized with.
    RETURNS (numpy.ndarray): int32, one per predicted token.
    """
    tags = example.get_aligned_ner()
    ids = numpy.full((len(tags),), -1, dtype="int32")
    for i, tag in enumerate(tags):
        if tag is None or tag == "-" or tag == "":
            continue
        tag_id = index.get(tag)
        if tag_id is None:
            raise ValueError(Errors.E003.format(label=tag.split("-", 1)[-1], name=name, labels=list(labels)))
        ids[i] = tag_id
    return ids


def tag_mask(doc: Doc, index: Dict[str, int], names: Sequence[str], labels: Sequence[str]) -> Optional[numpy.ndarray]:
    """Allowed tags per token ``(len(doc), len(names))``, or None where every tag is: an
    entity never begins or ends on a whitespace token (as in spaCy's own ``ner``;
    whitespace may only be inside an entity or outside), and tokens of entities already on
    the doc keep exactly those entities (a label outside ``labels``: tagged O)."""
    space = doc.to_array(IS_SPACE).astype("bool")
    if not doc.ents and not space.any():
        return None
    mask = numpy.ones((len(doc), len(names)), dtype="bool")
    mask[numpy.ix_(space, [i for i, tag in enumerate(names) if tag[:2] in ("B-", "L-", "U-")])] = False
    for ent in doc.ents:
        label = ent.label_
        if label in labels:
            inside = [f"I-{label}"] * (len(ent) - 2)
            tags = [f"U-{label}"] if len(ent) == 1 else [f"B-{label}", *inside, f"L-{label}"]
        else:
            tags = ["O"] * len(ent)
        for i, tag in zip(range(ent.start, ent.end), tags):
            mask[i] = False
            mask[i, index[tag]] = True
    return mask


def entities_from_tags(doc: Doc, tags: Sequence[str], probs: numpy.ndarray) -> List[Span]:
    """The doc's entities after decoding: those already on it, kept, and the spans of
    ``tags`` (BILUO) that overlap none of them, each with ``span._.confidence`` = the
    probability of its segment (``probs`` at its last token). No entity is made only of
    invisible characters (``"\u200b" * 20``, a lone ``"\u200d"``: ``tokenizer.is_invisible``)."""
    preset = list(doc.ents)
    spans = [span for span in biluo_tags_to_spans(doc, list(tags)) if not is_invisible(span.text)]
    if preset:
        taken = numpy.zeros((len(doc),), dtype="bool")
        for ent in preset:
            taken[ent.start : ent.end] = True
        spans = [span for span in spans if not taken[span.start : span.end].any()]
    for span in spans:
        span._.confidence = float(probs[span.end - 1])
    return sorted(preset + spans, key=lambda span: span.start)
