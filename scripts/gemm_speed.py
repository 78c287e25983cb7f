"""Words/s of spaCy's ``ner`` and of a ``hybrid_ner`` pipeline with numpy's BLAS gemm (the
default) and with thinc's blis gemm (the earlier default), loaded side by side in one
process, alternating, median of the rounds; and whether the two gemms give the same entities.

    python scripts/gemm_speed.py SPACY_NER_MODEL HYBRID_MODEL DATA.spacy BATCH_SIZE [ROUNDS]
"""
import statistics
import sys
import time

import spacy
from spacy.tokens import DocBin
from thinc.api import NumpyOps


def main() -> None:
    spacy_model, hybrid_model, data, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    baseline, numpy_gemm, blis_gemm = spacy.load(spacy_model), spacy.load(hybrid_model), spacy.load(hybrid_model)
    blis = NumpyOps()  # thinc's default: blis, one thread
    for node in blis_gemm.get_pipe("ner").model.walk():
        node.ops = blis
    docs = list(DocBin().from_disk(data).get_docs(baseline.vocab))
    texts, words = [d.text for d in docs], sum(len(d) for d in docs)
    pipelines = {"spaCy ner": baseline, "hybrid_ner, numpy gemm": numpy_gemm, "hybrid_ner, blis gemm": blis_gemm}
    for nlp in pipelines.values():
        list(nlp.pipe(texts[:50], batch_size=batch_size))
    speeds = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, nlp in pipelines.items():
            start = time.perf_counter()
            list(nlp.pipe(texts, batch_size=batch_size))
            speeds[name].append(words / (time.perf_counter() - start))
    base = statistics.median(speeds["spaCy ner"])
    print("| pipeline | words/s | × spaCy ner | rounds |\n| --- | ---: | ---: | --- |")
    for name, values in speeds.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} | {', '.join(f'{v:,.0f}' for v in values)} |")

    def ents(nlp):
        return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=batch_size)]

    differ = sum(a != b for a, b in zip(ents(numpy_gemm), ents(blis_gemm)))
    print(f"documents whose entities differ between the two gemms: {differ} of {len(texts)}")


if __name__ == "__main__":
    main()
