"""Where a pipeline's time goes in nlp.pipe: cProfile over one pass of a .spacy file's
texts (after a warm-up), the time of each component's pipe and of the functions that take
the most, as shares of the whole. Run alone on the machine.

    python scripts/profile_pipeline.py PIPELINE corpus/conll03/test.spacy --batch-size 32
"""

import argparse
import cProfile
import pstats
import time

import spacy
from spacy.tokens import DocBin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    texts = [doc.text for doc in DocBin().from_disk(args.data).get_docs(nlp.vocab)]
    list(nlp.pipe(texts[:32], batch_size=args.batch_size))
    timings = {name: 0.0 for name in ["tokenizer", *nlp.pipe_names]}
    start = time.perf_counter()
    docs = [nlp.make_doc(t) for t in texts]
    timings["tokenizer"] = time.perf_counter() - start
    profile = cProfile.Profile()
    profile.enable()
    for name, proc in nlp.pipeline:
        start = time.perf_counter()
        docs = list(proc.pipe(docs, batch_size=args.batch_size))
        timings[name] = time.perf_counter() - start
    profile.disable()
    total = sum(timings.values())
    words = sum(len(d) for d in docs)
    print(f"{args.model}: {words} words, {total:.2f} s, {words / total:,.0f} words/s (under the profiler)")
    for name, seconds in timings.items():
        print(f"  {name:12s} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]  # type: ignore[attr-defined]
    print("  the functions that take the most time of their own:")
    for (path, line, func), (_, _, own, _, _) in rows:
        print(f"    {100 * own / total:5.1f}%  {func} ({path.rsplit('/', 1)[-1]}:{line})")


if __name__ == "__main__":
    main()
