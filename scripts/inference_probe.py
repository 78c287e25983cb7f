"""Probe the inference settings of a transformer pipeline on the dev split: for each
variant, dev F (spaCy's scorer), the share of documents whose entities equal float32's,
words/s of nlp.pipe at batch 32 (one process, variants in turn, `--rounds` rounds, the
median), and the share of encoded wordpiece positions that were padding or window overlap.
Chooses defaults on dev data (never the test split); writes its rows as JSON.

    python scripts/inference_probe.py PIPELINE corpus/conll03/dev.spacy docs/results/inference_probe_dev.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_hybridner.inference import apply_inference, load_float32
from spacy_hybridner.inference.onnx_encoder import export_encoder
from spacy_hybridner.tools.benchmark.runner import machine_description

VARIANTS = {
    # name: (precision, runtime, by_length, window, stride)
    "fp32": ("fp32", "torch", False, None, None),
    "fp32+by_length": ("fp32", "torch", True, None, None),
    "int8": ("int8", "torch", True, None, None),
    "onnx-fp32": ("fp32", "onnxruntime", True, None, None),
    "onnx-int8": ("int8", "onnxruntime", True, None, None),
}


def set_windows(nlp, window, stride):
    for name, proc in nlp.components:
        getter = proc.model.attrs.get("get_spans") if hasattr(proc, "model") and name == "transformer" else None
        if getter is not None and window is not None:
            from spacy_transformers.span_getters import configure_strided_spans

            proc.model.attrs["get_spans"] = configure_strided_spans(window, stride)


def positions(nlp, texts):
    """Wordpiece positions the transformer computed (padded), real ones, and distinct
    ones (each document's wordpieces once: no window overlap; special tokens per doc)."""
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    counts = {"padded": 0, "real": 0}
    module = shim._model
    stand_in = hasattr(module, "encode")
    inner = module.encode if stand_in else None
    original_forward = module.forward

    def count(input_ids, attention_mask):
        counts["padded"] += int(input_ids.numel())
        counts["real"] += int(attention_mask.sum())

    def counting_encode(input_ids, attention_mask, *rest):
        count(input_ids, attention_mask)
        return inner(input_ids, attention_mask, *rest)

    def counting_forward(input_ids=None, attention_mask=None, *rest, **kwargs):
        count(input_ids, attention_mask)
        return original_forward(input_ids, attention_mask, *rest, **kwargs)

    if stand_in:
        module.encode = counting_encode
    else:
        module.forward = counting_forward
    try:
        docs = list(nlp.pipe(texts, batch_size=32))
    finally:
        if stand_in:
            module.encode = inner
        else:
            del module.forward
    tokenizer = nlp.get_pipe("transformer").model.tokenizer
    distinct = sum(len(tokenizer(d.text, verbose=False)["input_ids"]) for d in docs)
    return {**counts, "distinct": distinct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("dev")
    parser.add_argument("output")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--windows", default="", help="extra variants: PRECISION:RUNTIME:WINDOW:STRIDE,...")
    parser.add_argument(
        "--keep-float",
        default="",
        help="extra ONNX int8 variants with some operators float32: NAME=PATTERN+PATTERN;NAME=...",
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",") if name}
    for item in filter(None, args.windows.split(",")):
        precision, runtime, window, stride = item.split(":")
        variants[f"{'onnx-' if runtime == 'onnxruntime' else ''}{precision} w{window}/s{stride}"] = (
            precision,
            runtime,
            True,
            int(window),
            int(stride),
        )
    keep = dict(item.split("=", 1) for item in filter(None, args.keep_float.split(";")))
    for name in keep:
        variants[name] = ("int8", "onnxruntime", True, None, None)
    base = spacy.blank("en")
    gold = list(DocBin().from_disk(args.dev).get_docs(base.vocab))
    texts = [doc.text for doc in gold]
    words = sum(len(doc) for doc in gold)
    pipelines = {}
    for name, (precision, runtime, by_length, window, stride) in variants.items():
        nlp = load_float32(args.model)
        if name in keep:
            settings = nlp.add_pipe("hybrid_inference", config={"precision": "int8", "runtime": "onnxruntime"})
            model = nlp.get_pipe("transformer").model.layers[0].shims[0]._hfmodel.transformer
            graph = export_encoder(model, int8=True, keep_float=keep[name].split("+"))
            settings.graphs, settings.graph_precision = {"transformer": graph}, "int8"
            settings.apply()
        elif name != "fp32":
            apply_inference(nlp, precision=precision, runtime=runtime, by_length=by_length)
        set_windows(nlp, window, stride)
        pipelines[name] = nlp
    speeds = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, nlp in pipelines.items():
            list(nlp.pipe(texts[:8], batch_size=32))
            start = time.perf_counter()
            list(nlp.pipe(texts, batch_size=32))
            speeds[name].append(words / (time.perf_counter() - start))
    rows, reference = [], None
    for name, nlp in pipelines.items():
        docs = list(nlp.pipe(texts, batch_size=32))
        ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
        reference = reference or ents
        examples = [Example(p, g) for p, g in zip(docs, gold)]
        scores = nlp.get_pipe("ner").scorer(examples)
        pos = positions(nlp, texts)
        rows.append(
            {
                "variant": name,
                "settings": dict(zip(("precision", "runtime", "by_length", "window", "stride"), variants[name])),
                "keep_float": keep.get(name, "").split("+") if name in keep else [],
                "dev_f": scores["ents_f"],
                "identical_docs": sum(a == b for a, b in zip(ents, reference)) / len(ents),
                "words_per_s": statistics.median(speeds[name]),
                "words_per_s_rounds": speeds[name],
                "padding_share": 1 - pos["real"] / pos["padded"],
                "overlap_share": 1 - pos["distinct"] / pos["real"],
            }
        )
        print(
            f"{name:24s} dev F {100 * rows[-1]['dev_f']:.2f}  identical {100 * rows[-1]['identical_docs']:.1f}%  "
            f"{rows[-1]['words_per_s']:8.0f} words/s ({rows[-1]['words_per_s'] / rows[0]['words_per_s']:.2f}x)  "
            f"padding {100 * rows[-1]['padding_share']:.1f}%  overlap {100 * rows[-1]['overlap_share']:.1f}%",
            flush=True,
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"machine": machine_description(), "model": args.model, "dev": args.dev, "rows": rows}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
