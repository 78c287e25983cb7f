"""CPU inference of a ``hybrid_ner`` pipeline beside spaCy's ``ner``, step by step through
issue 17's changes: words/s of ``nlp.pipe`` with the pipelines loaded side by side in one
process, alternating, median of the rounds (texts through the tokenizer, as in use); the F
of each on the same data (spaCy's scorer, on the gold tokens as ``spacy evaluate``);
documents whose entities differ from the current settings; and the latency of ``nlp(text)``
for one short sentence.

    python scripts/inference_speed.py SPACY_NER_MODEL HYBRID_MODEL DATA.spacy BATCH_SIZE [ROUNDS]

The earlier settings are switched back on loaded copies of the same pipeline:
- "blis gemm": thinc's default ops (blis, one thread) instead of numpy's BLAS;
- "chunks filled in turn": the encoder runs windows in chunks filled up to its padded
  size, longest first, so short windows are padded to the longest of the chunk;
- "windows every stride": prediction cuts long documents as training does (a window of
  ``window`` tokens every ``stride`` tokens) instead of the fewest even windows;
- "CRF loops in PyTorch": Viterbi and forward-backward step through time in PyTorch
  operations instead of NumPy's.
"""

import statistics
import sys
import time

import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from thinc.api import NumpyOps

from spacy_hybridner.layers import torch_module

SENTENCE = "The European Commission said on Thursday it disagreed with German advice to consumers."


def set_earlier(
    nlp, blis: bool = False, greedy_chunks: bool = False, stride_windows: bool = False, torch_crf: bool = False
):
    """Switch a loaded hybrid pipeline's ``ner`` back to earlier settings."""
    model = nlp.get_pipe("ner").model
    encoder = model.get_ref("encoder")
    if blis:
        ops = NumpyOps()
        for node in model.walk():
            node.ops = ops
    if greedy_chunks:
        torch_module(encoder).cost_per_bucket = None
    if stride_windows:
        # Prediction cuts windows as training does: a window every stride (this copy only).
        attrs = encoder.attrs
        convert_inputs, convert_outputs = attrs["convert_inputs"], attrs["convert_outputs"]
        attrs["convert_inputs"] = lambda model, X, is_train: convert_inputs(model, X, True)
        attrs["convert_outputs"] = lambda model, XY, is_train: convert_outputs(model, XY, True)
    if torch_crf:
        # NumPy declines every bucket, so CRF.decode runs the PyTorch loops, as on a GPU.
        crf = torch_module(model.get_ref("crf"))
        crf.numpy_decode_buckets = lambda emissions, tag_mask, temperature, buckets: [None] * len(buckets)
    return nlp


def main() -> None:
    spacy_model, hybrid_model, data, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    baseline = spacy.load(spacy_model)
    pipelines = {
        "spaCy ner": baseline,
        "hybrid_ner before issue 17 (blis gemm, chunks filled in turn, windows every stride, CRF loops in "
        "PyTorch)": set_earlier(
            spacy.load(hybrid_model), blis=True, greedy_chunks=True, stride_windows=True, torch_crf=True
        ),
        "+ numpy gemm": set_earlier(spacy.load(hybrid_model), greedy_chunks=True, stride_windows=True, torch_crf=True),
        "+ chunks of similar length": set_earlier(spacy.load(hybrid_model), stride_windows=True, torch_crf=True),
        "+ even windows in prediction": set_earlier(spacy.load(hybrid_model), torch_crf=True),
        "+ CRF loops in NumPy (now)": spacy.load(hybrid_model),
    }
    now = list(pipelines)[-1]
    gold = list(DocBin().from_disk(data).get_docs(baseline.vocab))
    texts, words = [d.text for d in gold], sum(len(d) for d in gold)
    for nlp in pipelines.values():
        list(nlp.pipe(texts[:50], batch_size=batch_size))
    speeds = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, nlp in pipelines.items():
            start = time.perf_counter()
            list(nlp.pipe(texts, batch_size=batch_size))
            speeds[name].append(words / (time.perf_counter() - start))

    def ents(nlp):
        return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=batch_size)]

    current = ents(pipelines[now])
    base = statistics.median(speeds["spaCy ner"])
    print(f"{len(texts)} documents, {words:,} words, batch size {batch_size}, {rounds} rounds\n")
    print("| pipeline | words/s | × spaCy ner | ents F | docs differing from now | rounds (words/s) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, nlp in pipelines.items():
        rate = statistics.median(speeds[name])
        # On the gold tokens, as `spacy evaluate` reads these corpora (spaces unknown)
        examples = [
            Example(Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]), d) for d in gold
        ]
        f = nlp.evaluate(examples, batch_size=batch_size)["ents_f"]
        differ = "" if name == "spaCy ner" else str(sum(a != b for a, b in zip(ents(nlp), current)))
        print(
            f"| {name} | {rate:,.0f} | {rate / base:.2f} | {100 * f:.2f} | {differ} | "
            f"{', '.join(f'{v:,.0f}' for v in speeds[name])} |"
        )
    before_now = list(pipelines)[-2]
    latency = {"spaCy ner": [], before_now: [], now: []}
    for _ in range(200):
        for name in latency:
            start = time.perf_counter()
            pipelines[name](SENTENCE)
            latency[name].append(1000 * (time.perf_counter() - start))
    print(f"\nLatency of nlp(text), one sentence of {len(baseline.make_doc(SENTENCE))} tokens, median of 200 calls:")
    for name, values in latency.items():
        print(f"- {name}: {statistics.median(values):.2f} ms")


if __name__ == "__main__":
    main()
