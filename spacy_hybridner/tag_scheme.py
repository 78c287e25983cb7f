"""The BILUO tag scheme, as spaCy writes it, and the transitions it allows.

Tags are ``"O"`` followed by ``B-``, ``I-``, ``L-``, ``U-`` for each label, in label
order; the ids are positions in that list. The constraints make every path a CRF can
decode a valid sequence of non-overlapping spans.
"""
from typing import Dict, Iterable, List, Sequence

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
