"""Where the inference time of a pipeline goes: a sampling profile of ``nlp.pipe``.

    pip install py-spy
    python scripts/profile_inference.py MODEL DATA.spacy [--repeats 4] [--threads 2]

Runs ``nlp.pipe`` over the texts of DATA (a ``.spacy`` file) ``--repeats`` times in a child
process under ``py-spy record`` (wall-clock samples of the main thread; time spent in torch or
BLAS is counted to the Python frame that called it), keeps the samples taken inside
``nlp.pipe`` (not the loading), sorts each into one part of the model by the frames on its
stack, and prints a Markdown table of the shares. A sampling profiler, not cProfile: cProfile's
cost per Python call inflates code that makes many small calls (it put a tenth of the time
into ``Doc.to_utf8_array``, which takes 0.5%).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

# (part, substrings of a frame on the stack); the first that matches takes the sample.
PARTS: List[Tuple[str, Tuple[str, ...]]] = [
    ("CRF: Viterbi and forward-backward (tags, confidences)", ("crf_decode",)),
    ("set_annotations (doc.ents, ent._.confidence)", ("set_annotations",)),
    ("encoder: Transformer layers", ("TransformerEncoder.forward",)),
    ("encoder: BiLSTM", ("run_lstm",)),
    (
        "encoder: windows, projections, output layer",
        ("spacy_hybridner/layers/encoder.py", "spacy_hybridner/modules/encoder.py"),
    ),
    ("tok2vec: character CNN", ("char_cnn",)),
    ("tok2vec: Maxout layers (thinc gemm)", ("thinc/layers/maxout.py",)),
    ("tok2vec: hash and character embeddings, features", ("hashembed", "featureextractor", "char_embed")),
    ("tok2vec: other (window concatenation, layer norm, residual)", ("thinc/layers/",)),
    ("tokenizer", ("tokenizer",)),
]

CHILD = """
import sys, time, spacy, torch
from spacy.tokens import DocBin
torch.set_num_threads(int(sys.argv[3]))
nlp = spacy.load(sys.argv[1])
docs = list(DocBin().from_disk(sys.argv[2]).get_docs(nlp.vocab))
texts = [d.text for d in docs]
words = sum(len(d) for d in docs)
list(nlp.pipe(texts[:20]))
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    list(nlp.pipe(texts))
    print(f"nlp.pipe: {words / (time.perf_counter() - start):,.0f} words/s", flush=True)
"""


def shares(raw_path: Path) -> Tuple[int, Dict[str, int]]:
    """Samples inside ``nlp.pipe`` and how many fell into each part (py-spy's raw format:
    one line per distinct stack, frames joined by ``;``, then a count)."""
    parts: Counter = Counter()
    total = 0
    for line in raw_path.read_text(encoding="utf8").splitlines():
        stack, _, count = line.rpartition(" ")
        if "Language.pipe" not in stack:
            continue
        total += int(count)
        lowered = stack.lower()
        part = next((name for name, keys in PARTS if any(k.lower() in lowered for k in keys)), "other")
        parts[part] += int(count)
    return total, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data", type=Path)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        command = [
            py_spy,
            "record",
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            sys.executable,
            "-c",
            CHILD,
            args.model,
            str(args.data),
            str(args.threads),
            str(args.repeats),
        ]
        subprocess.run(command, check=True)
        total, parts = shares(raw)
    if not total:
        sys.exit("no samples inside nlp.pipe: is py-spy allowed to trace child processes here?")
    print(f"\n{total} samples inside nlp.pipe ({args.rate}/s)\n")
    print("| part | share of nlp.pipe |\n| --- | ---: |")
    for name, count in parts.most_common():
        print(f"| {name} | {100 * count / total:.1f}% |")


if __name__ == "__main__":
    main()
