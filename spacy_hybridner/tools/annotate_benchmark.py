"""Throughput of ``annotate``: plain ``nlp.pipe``, the local engine with 1 and 2
processes, and Ray Data with 1 and 2 actors, in the same run on the same texts.

The texts of a ``.spacy`` file are written to JSON Lines (plus a larger synthetic corpus:
the same texts repeated K times, shuffled, with fresh ids). Every configuration runs
``repeat`` times on each corpus; the tables give medians. Ray's start-up is measured on
its own (``ray.init``, and a one-document run: actor start, pipeline load, first batch)
and subtracted to give the steady rate from which the cluster estimate is computed.
"""

import datetime
import json
import random
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median
from typing import Callable, Dict, List, Optional

from ..annotate import annotate
from ..annotate.annotator import Annotator
from ..threads import use_threads
from .benchmark import command_block

DOCS_PER_DAY_TARGET = 100_000_000
DAY_S = 86_400
ARTICLE_WORDS = 500  # words of a typical news article, for the second estimate
TITLE = "annotate: local engine and Ray Data"  # of the section in the benchmark document


def _texts_of(data_path: Path, limit: int) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    texts = [doc.text for doc in DocBin().from_disk(data_path).get_docs(spacy.blank("xx").vocab)]
    return texts[:limit] if limit else texts


def _write_jsonl(path: Path, texts: List[str]) -> Path:
    with open(path, "w", encoding="utf8") as f:
        f.writelines(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts))
    return path


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _corpora(texts: List[str], synthetic_factor: int) -> Dict[str, List[str]]:
    """The base corpus and, with a ``synthetic_factor`` over 1, its texts that many times, shuffled."""
    corpora = {"base": texts}
    if synthetic_factor > 1:
        synthetic = texts * synthetic_factor
        random.Random(0).shuffle(synthetic)
        corpora[f"synthetic ×{synthetic_factor}"] = synthetic
    return corpora


def _time_corpus(
    name: str,
    corpus: List[str],
    model: str,
    annotator: Annotator,
    tmp: Path,
    repeat: int,
    batch_size: int,
    echo: Callable[[str], None],
) -> Dict:
    """Every configuration ``repeat`` times on one corpus. RETURNS: docs, words, seconds per configuration."""
    path = _write_jsonl(tmp / "corpus.jsonl", corpus)
    words = sum(len(doc) for doc in annotator.nlp.tokenizer.pipe(corpus))
    rows: Dict[str, List[float]] = {}
    configs = {
        "nlp.pipe (this process)": partial(annotator.annotate, corpus),
        "local, 1 process": partial(_annotate, model, path, tmp, "local", 1, batch_size),
        "local, 2 processes": partial(_annotate, model, path, tmp, "local", 2, batch_size),
        "ray, 1 actor": partial(_annotate, model, path, tmp, "ray", 1, batch_size),
        "ray, 2 actors": partial(_annotate, model, path, tmp, "ray", 2, batch_size),
    }
    for _ in range(repeat):  # interleaved, so a noisy minute hits every config alike
        for config, fn in configs.items():
            rows.setdefault(config, []).append(_timed(fn))
            echo(f"{name}: {config}: {rows[config][-1]:.1f} s")
    return {"docs": len(corpus), "words": words, "seconds": rows}


def run_annotate_benchmark(
    model: str,
    data_path: Path,
    *,
    repeat: int = 3,
    synthetic_factor: int = 5,
    limit: int = 0,
    batch_size: int = 256,
    echo: Callable[[str], None] = print,
) -> Dict:
    """Measure every configuration on the base and the synthetic corpus.

    model (str): pipeline name or path. data_path (Path): a .spacy file (its texts only).
    repeat (int): runs per configuration (medians reported). synthetic_factor (int): the
    synthetic corpus is the texts repeated this many times (0 or 1: no synthetic corpus).
    limit (int): use only the first N texts (0: all). batch_size (int): records per batch.
    RETURNS (Dict): corpora (name -> docs, words, rows of config -> seconds list),
    ray_init_s, ray_first_batch_s.
    """
    import ray

    # one core per worker everywhere, the baseline included: torch and BLAS (Ray's actors
    # get OMP_NUM_THREADS=1 from Ray)
    use_threads(1)
    texts = _texts_of(data_path, limit)
    corpora = _corpora(texts, synthetic_factor)
    annotator = Annotator(model, batch_size=None).load()
    results: Dict = {"corpora": {}, "model": model, "data": str(data_path), "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False)
        results["ray_init_s"] = time.perf_counter() - start
        try:
            one = _write_jsonl(tmp / "one.jsonl", texts[:1])
            first = [_timed(partial(_annotate, model, one, tmp, "ray", 1, batch_size)) for _ in range(repeat)]
            results["ray_first_batch_s"] = median(first)
            echo(f"ray.init {results['ray_init_s']:.1f} s; a one-document run {results['ray_first_batch_s']:.1f} s")
            for name, corpus in corpora.items():
                results["corpora"][name] = _time_corpus(name, corpus, model, annotator, tmp, repeat, batch_size, echo)
        finally:
            ray.shutdown()
    return results


def _annotate(model: str, path: Path, tmp: Path, engine: str, workers: int, batch_size: int) -> None:
    output = tmp / ("out.jsonl" if engine == "local" else "out")
    annotate(
        model,
        str(path),
        output,
        engine=engine,
        workers=workers,
        batch_size=batch_size,
        overwrite=True,
        progress=False,
        echo=lambda _: None,
    )


def cluster_estimate(
    per_actor_docs_s: float, efficiency: float, docs: int = DOCS_PER_DAY_TARGET, seconds: float = DAY_S
) -> Dict[str, float]:
    """Cores (one actor each) needed to annotate ``docs`` in ``seconds`` at
    ``per_actor_docs_s`` per actor, scaled by the measured parallel ``efficiency``."""
    cores = docs / seconds / (per_actor_docs_s * max(efficiency, 1e-9))
    return {"cores": cores, **{f"nodes_{n}": cores / n for n in (16, 32, 64)}}


def benchmark_markdown(results: Dict, *, command: str, machine: str, title: str) -> str:
    """The benchmark document's section: the command, a table per corpus, start-up,
    scaling and the cluster estimate."""
    lines = [
        f"## {title}",
        "",
        (
            f"Run on {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine}; Ray in local mode with 2 CPUs. "
            f"Model `{results['model']}`, texts of `{results['data']}`. Each configuration ran "
            f"{len(next(iter(results['corpora'].values()))['seconds']['ray, 1 actor'])} times (interleaved); "
            "medians of the wall time of a whole run (reading, annotating, writing; for the engines also "
            "loading the pipeline, and for Ray starting the actors). Words are spaCy tokens. nlp.pipe and "
            "every worker run torch and BLAS on one thread, so each configuration uses as many cores as it has "
            "workers."
        ),
        "",
        *command_block(command),
    ]
    return "\n".join(lines + _corpus_tables(results) + _scaling_paragraphs(results)) + "\n"


def _corpus_tables(results: Dict) -> List[str]:
    """The lines of a table per corpus: each configuration's median seconds, docs/s, words/s
    and its ratio to ``nlp.pipe``."""
    lines: List[str] = []
    for name, corpus in results["corpora"].items():
        base = median(corpus["seconds"]["nlp.pipe (this process)"])
        lines += [
            f"**{name}**: {corpus['docs']:,} documents, {corpus['words']:,} words.",
            "",
            "| configuration | seconds | docs/s | words/s | × nlp.pipe |",
            "|---|---:|---:|---:|---:|",
        ]
        for config, seconds in corpus["seconds"].items():
            s = median(seconds)
            lines.append(
                f"| {config} | {s:.1f} | {corpus['docs'] / s:,.1f} | {corpus['words'] / s:,.0f} | {base / s:.2f} |"
            )
        lines.append("")
    return lines


def _scaling_paragraphs(results: Dict) -> List[str]:
    """Ray's start-up, the scaling from 1 to 2 actors on the last corpus and the cluster
    estimate from it."""
    first = results["ray_first_batch_s"]
    name, corpus = list(results["corpora"].items())[-1]
    one, two = (median(corpus["seconds"][c]) for c in ("ray, 1 actor", "ray, 2 actors"))
    steady = one > 2 * first and two > 2 * first  # else start-up dominates: use wall times as they are
    steady_one, steady_two = (one - first, two - first) if steady else (one, two)
    per_actor = corpus["docs"] / steady_one
    efficiency = (steady_one / steady_two) / 2
    estimate = cluster_estimate(per_actor, efficiency)
    long_cores = estimate["cores"] * ARTICLE_WORDS / (corpus["words"] / corpus["docs"])
    return [
        (
            f"Ray start-up: `ray.init` {results['ray_init_s']:.1f} s, once per run of the command; a one-document "
            f"run (actor start, pipeline load, first batch, write) {first:.1f} s, paid by every run."
        ),
        "",
        (
            f"Scaling 1 → 2 actors on the {name} corpus: {one / two:.2f}× in wall time, "
            + (
                f"{steady_one / steady_two:.2f}× after subtracting the one-document run"
                if steady
                else "(too short a corpus to subtract the one-document run: start-up dominates)"
            )
            + " (the aim is ≥ 1.7× on 2 cores)."
        ),
        "",
        (
            f"Estimate for 100 million documents in one day (1,157 docs/s), from the steady rate of one actor here "
            f"({per_actor:,.1f} docs/s of these texts, {corpus['words'] / corpus['docs']:.0f} words each) and the "
            f"measured 2-actor efficiency ({100 * efficiency:.0f}%): about {estimate['cores']:,.0f} cores, i.e. "
            f"{estimate['nodes_16']:,.1f} nodes of 16 cores, {estimate['nodes_32']:,.1f} of 32 or "
            f"{estimate['nodes_64']:,.1f} of 64. Throughput scales with words, not documents: for documents of "
            f"{ARTICLE_WORDS} words (a news article) instead, about {long_cores:,.0f} cores "
            f"({long_cores / 32:,.1f} nodes of 32). Not measured: more than one node (network, object "
            f"store spilling, reading from shared storage), which the estimate assumes costs nothing."
        ),
    ]


def write_benchmark(
    results: Dict, doc_path: Path, command: str, title: str = TITLE, machine: Optional[str] = None
) -> str:
    """Write (or replace) the section in the benchmark document; returns it."""
    from .benchmark import machine_description, update_benchmark_doc

    section = benchmark_markdown(results, command=command, machine=machine or machine_description(), title=title)
    update_benchmark_doc(doc_path, title, section)
    return section
