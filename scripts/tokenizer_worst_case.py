"""What one text can cost spaCy's English tokenizer, with and without the bound of
``spacy-hybridner.BoundedTokenizer.v1`` (issue 37): seconds to tokenize whitespace-free
runs (commas, random punctuation, random emoji, alternating letters and commas) and ordinary
text of the same length,
the median of a few repeats, each with a new tokenizer (spaCy's caches what it saw).

    python scripts/tokenizer_worst_case.py docs/results/tokenizer_bound.json

spaCy's tokenizer alone is quadratic on such runs: it is timed only up to --plain-max
characters (16,000 commas take about 16 s on 2 busy cores, 100,000 did not finish in 10
minutes).
"""

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import spacy
import typer

from spacy_hybridner.tokenizer import DEFAULT_MAX_RUN_CHARS

ORDINARY = "Angela Merkel visited Paris on Monday, and met officials of the European Union. "
PUNCTUATION = ",.;:!?()[]{}'\"-*&%$#@/"
EMOJI = "".join(chr(0x1F600 + i) for i in range(64))


def make_text(kind: str, n: int) -> str:
    """``n`` characters of one kind of input; the random kinds make every piece of a long
    run differ, so that no piece is answered from the tokenizer's cache (the worst case)."""
    rng = random.Random(0)
    if kind == "commas":
        return "," * n
    if kind == "random punctuation":
        return "".join(rng.choice(PUNCTUATION) for _ in range(n))
    if kind == "random emoji":
        return "".join(rng.choice(EMOJI) for _ in range(n))
    if kind == "letter-comma":
        return ("a," * n)[:n]
    return (ORDINARY * (n // len(ORDINARY) + 1))[:n]


KINDS = ["commas", "random punctuation", "random emoji", "letter-comma", "ordinary text"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def median_seconds(make_nlp, text: str, repeats: int) -> float:
    """The median time of ``repeats`` tokenizations of ``text``, each by a new pipeline's
    tokenizer (spaCy's tokenizer caches what it has seen)."""
    times = []
    for _ in range(repeats):
        tokenizer = make_nlp().tokenizer
        start = time.perf_counter()
        tokenizer(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(
    output: Path = typer.Argument(..., help="JSON file for the rows"),
    lengths: str = typer.Option("2000,4000,8000,16000,100000,1000000", help="text lengths in characters"),
    plain_max: int = typer.Option(16000, help="longest run timed with spaCy's tokenizer alone"),
    repeats: int = typer.Option(3),
) -> None:
    def plain():
        return spacy.blank("en")

    def bounded():
        return spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": "spacy-hybridner.BoundedTokenizer.v1"}}})

    rows = []
    for kind in KINDS:
        for n in (int(x) for x in lengths.split(",")):
            text = make_text(kind, n)
            row = {
                "input": kind,
                "chars": n,
                "tokens": len(bounded().tokenizer(text)),
                "bounded_s": median_seconds(bounded, text, repeats),
                "spacy_s": (
                    median_seconds(plain, text, repeats) if kind == "ordinary text" or n <= plain_max else None
                ),
            }
            row["bounded_us_per_char"] = row["bounded_s"] / n * 1e6
            rows.append(row)
            spacy_s = "-" if row["spacy_s"] is None else f"{row['spacy_s']:.3f}"
            print(
                f"{kind:>14} {n:>8} chars: spaCy {spacy_s:>8} s, bounded {row['bounded_s']:.3f} s "
                f"({row['bounded_us_per_char']:.2f} us/char)",
                file=sys.stderr,
            )
    result = {
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "spacy": spacy.__version__,
        "max_run_chars": DEFAULT_MAX_RUN_CHARS,
        "repeats": repeats,
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")


if __name__ == "__main__":
    typer.run(main)
