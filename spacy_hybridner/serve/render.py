"""displaCy's entity markup of annotated texts, with each entity's confidence on its mark.

The markup is ``spacy.displacy.render(style="ent", manual=True)`` of the records (so a
``min_confidence`` filter shows in it), with an entity template of displaCy's look plus
``data-doc``, ``data-ent`` and ``data-confidence`` attributes and the confidence after the
label: the page's slider hides marks by those attributes.
"""

from typing import Any, Dict, List, Sequence

from spacy import displacy
from spacy.displacy.render import DEFAULT_LABEL_COLORS

# The entity template handed to displaCy (its documented ``template`` option): displaCy's
# look (the same styles as its default), plus data-doc, data-ent, data-label and
# data-confidence attributes and the confidence after the label. The fields in braces are
# displaCy's (bg, text, label, kb_link) and each span's "params" (doc, ent, confidence,
# confidence_html).
ENT_TEMPLATE = """
<mark class="entity" data-doc="{doc}" data-ent="{ent}" data-label="{label}" data-confidence="{confidence}" \
style="background: {bg}; padding: 0.45em 0.6em; margin: 0 0.25em; line-height: 1; border-radius: 0.35em;">
    {text}
    <span style="font-size: 0.8em; font-weight: bold; line-height: 1; border-radius: 0.35em; \
vertical-align: middle; margin-left: 0.5rem">{label}{kb_link}{confidence_html}</span>
</mark>
"""

# Colours for labels displaCy has none for (GMB's geo, per, org, ...), in label order.
PALETTE = [
    "#aa9cfc",
    "#7aecec",
    "#feca74",
    "#ff9561",
    "#bfeeb7",
    "#c887fb",
    "#9cc9cc",
    "#ffeb80",
    "#ff8197",
    "#f0d0ff",
    "#bfe1d9",
    "#e4e7d2",
    "#f4b6c2",
    "#b5d99c",
    "#ffd8a8",
    "#a0c4ff",
]


def label_colors(labels: Sequence[str]) -> Dict[str, str]:
    """displaCy's colour for each label it knows, for the others a palette colour that no
    other label of the pipeline has (GMB's ``gpe`` keeps displaCy's GPE colour, ``geo`` gets another)."""
    taken = {DEFAULT_LABEL_COLORS[label.upper()] for label in labels if label.upper() in DEFAULT_LABEL_COLORS}
    spare = [c for c in PALETTE if c not in taken] or PALETTE
    colors: Dict[str, str] = {}
    for label in sorted(labels):
        if label.upper() not in DEFAULT_LABEL_COLORS:
            colors[label] = spare[len(colors) % len(spare)]
    return colors


def render_html(docs: List[Dict[str, Any]], labels: Sequence[str] = ()) -> str:
    """displaCy ent markup of annotated texts, one ``<div class="entities">`` per text.

    docs: ``[{"text": str, "ents": [records]}]``, records as from ``Annotator.annotate``.
    labels: the pipeline's labels (for stable colours across requests).
    RETURNS (str): the HTML fragment (displaCy escapes the texts).
    """
    manual = []
    for j, doc in enumerate(docs):
        spans = []
        for i, ent in enumerate(doc["ents"]):
            confidence = ent["confidence"]
            spans.append(
                {
                    "start": ent["start_char"],
                    "end": ent["end_char"],
                    "label": ent["label"],
                    "params": {
                        "doc": j,
                        "ent": i,
                        "confidence": "" if confidence is None else f"{confidence:.6f}",
                        "confidence_html": (
                            "" if confidence is None else f' <span class="confidence">{confidence:.2f}</span>'
                        ),
                    },
                }
            )
        manual.append({"text": doc["text"], "ents": spans, "title": None})
    options = {"template": ENT_TEMPLATE, "colors": label_colors(labels)}
    return displacy.render(manual, style="ent", manual=True, options=options, jupyter=False, page=False)
