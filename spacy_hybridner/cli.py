"""Command line: ``python -m spacy_hybridner COMMAND`` (also the ``spacy-hybridner`` script)."""
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="spacy-hybridner",
    help="Corpora, showcases and reports for spacy-hybridner pipelines.",
    no_args_is_help=True,
    add_completion=False,
)


class CorpusName(str, Enum):
    gmb = "gmb"
    conll03 = "conll03"
    wnut17 = "wnut17"


# --- shared by the commands: each command parses its arguments and calls a plain
# function (corpora, display, calibration, report, benchmark) that tests and the
# project workflow can call too.
def _load(model: str, gpu_id: int = -1):
    """Set up the GPU when ``gpu_id >= 0``, then load the pipeline ``model`` (a name or
    a path). RETURNS (Language): The pipeline."""
    import spacy

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    return spacy.load(model)


def _echo_entities(docs, indent: str = "", with_text: bool = False) -> None:
    """Print each doc's entities, one line each (``display.entity_lines``), after the
    doc's text when ``with_text``."""
    from .display import entity_lines

    for doc in docs:
        if with_text:
            typer.echo(doc.text)
        for line in entity_lines(doc, indent):
            typer.echo(line)


@app.command("convert")
def convert(
    corpus: CorpusName = typer.Argument(..., help="Which corpus INPUT holds"),
    input_path: Path = typer.Argument(..., help=(
        "gmb: ner_dataset.csv(.zip); conll03: the folder with eng.train, eng.testa, eng.testb; "
        "wnut17: the folder with wnut17train.conll, emerging.dev.conll"
    )),
    output_dir: Path = typer.Argument(..., help="Where train.spacy, dev.spacy and test.spacy are written"),
    limit: int = typer.Option(0, help=(
        "gmb: read only the first N sentences (0: all); conll03/wnut17: keep the first N docs of each split"
    )),
    dev: float = typer.Option(0.1, help="gmb: fraction of sentences for dev"),
    test: float = typer.Option(0.1, help="gmb: fraction of sentences for test"),
    seed: int = typer.Option(0, help="gmb: seed of the sentence shuffle before splitting"),
) -> None:
    """Convert a corpus to spaCy's binary format, one file per split.

    gmb is split by sentence into train/dev/test (shuffled with --seed; 80/10/10 by
    default). conll03 keeps its documents whole (train, dev = testa, test = testb).
    wnut17 has train and dev; dev is also written as test, the split to evaluate on.
    """
    from .corpora import convert_corpus

    try:
        stats = convert_corpus(
            corpus.value, input_path, output_dir, limit=limit, dev=dev, test=test, seed=seed,
        )
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    for name, split in stats.items():
        typer.echo(
            f"{name}: {split['docs']} docs, {split['tokens']} tokens, entities {split['entities']} -> {split['path']}"
        )


@app.command("showcase")
def showcase(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out .spacy file"),
    output_path: Path = typer.Argument(..., help="displaCy HTML file to write"),
    n_docs: int = typer.Option(20, "--n-docs", help="How many documents to show"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Annotate held-out documents, print their entities and write displaCy HTML."""
    from .display import showcase as run_showcase

    docs = run_showcase(_load(model, gpu_id), data_path, output_path, n_docs=n_docs)
    _echo_entities(docs, indent="    ", with_text=True)
    typer.echo(f"displaCy HTML of {len(docs)} documents: {output_path}")


def main() -> None:
    app()


@app.command("calibrate")
def calibrate(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out gold .spacy file (the dev split, not the test split)"),
    output_dir: Path = typer.Argument(..., help="Where to save the calibrated pipeline"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Fit the temperature of ent._.confidence of each hybrid_ner component on held-out
    data, and save the pipeline. Entities do not change, only their confidences. A
    pipeline without hybrid_ner is saved unchanged."""
    from spacy.training import Corpus

    from .calibration import calibrate_pipeline, describe_calibration

    nlp = _load(model, gpu_id)
    results = calibrate_pipeline(nlp, Corpus(data_path)(nlp))
    for name, result in results.items():
        typer.echo(describe_calibration(name, result, str(data_path)))
    if not results:
        typer.echo("No hybrid_ner component: nothing to calibrate; saving the pipeline unchanged.")
    nlp.to_disk(output_dir)
    typer.echo(f"Saved to {output_dir}")


@app.command("report")
def report(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Gold .spacy file to analyse (e.g. the test split)"),
    output_dir: Path = typer.Argument(..., help="Folder for scores.md, report.json, PNGs and worst.html"),
    training_dir: Optional[Path] = typer.Option(
        None, "--training-dir", "-t", help="Training output folder holding log.jsonl, for training curves",
    ),
    n_worst: int = typer.Option(10, help="How many of the worst-scored documents to show in displaCy"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    train_data: Optional[Path] = typer.Option(
        None, "--train-data", exists=True, dir_okay=False,
        help="Training .spacy file: adds recall per type and on names with unseen words",
    ),
) -> None:
    """Per-type P/R/F (markdown and JSON) cross-checked with seqeval, confusion matrix
    with missed and spurious entities, reliability diagram of ent._.confidence with its
    ECE, displaCy HTML of the worst documents, given --training-dir training curves and,
    given --train-data, recall on entities with words never seen in training."""
    from .report import write_report

    result = write_report(
        _load(model, gpu_id), data_path, output_dir, training_dir, n_worst=n_worst, train_path=train_data,
    )
    typer.echo((output_dir / "scores.md").read_text(encoding="utf8"))
    typer.echo(f"Report written to {output_dir} ({len(result['worst_documents'])} worst documents in worst.html)")


@app.command("benchmark")
def benchmark(
    train: Path = typer.Argument(..., help="Training .spacy file"),
    dev: Path = typer.Argument(..., help="Dev .spacy file (model selection)"),
    test: Path = typer.Argument(..., help="Test .spacy file (scores and speed)"),
    configs: List[Path] = typer.Option(
        [Path("configs/spacy_ner.cfg"), Path("configs/hybrid_cpu.cfg")], "--config", "-c",
        help="Configs to compare, in order; repeat the option for several",
    ),
    corpus: str = typer.Option(..., help="Name of the corpus, the section title in the document"),
    budget_minutes: float = typer.Option(15.0, help="Wall-time budget of each training"),
    output_dir: Path = typer.Option(Path("training/benchmark"), help="Where the trained models go"),
    doc_path: Path = typer.Option(Path("docs/benchmarks.md"), help="Benchmark document to update"),
    baseline: str = typer.Option("spacy_ner", help="Config name that speed ratios refer to"),
    speed_batches: int = typer.Option(30, min=30, help=(
        "--batches for spacy benchmark speed (spaCy needs at least 30; use --speed-batch-size for shorter runs)"
    )),
    speed_repeats: int = typer.Option(3, min=1, help="Runs of spacy benchmark speed per model (median reported)"),
    speed_batch_size: Optional[int] = typer.Option(
        None, help="--batch-size for spacy benchmark speed (default: the pipeline's)",
    ),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    seeds: int = typer.Option(1, min=1, help=(
        "Train every config this many times, with [system] seed = seed-start, seed-start + 1, ...; "
        "the table reports mean and standard deviation with each run beneath"
    )),
    seed_start: Optional[int] = typer.Option(
        None, help="First seed (default 0); without it and with --seeds 1, the config's own seed",
    ),
    crosscheck: bool = typer.Option(True, help=(
        "Cross-check every run's test F with seqeval and break recall down by type and unseen names (needs seqeval)"
    )),
) -> None:
    """Train each config on the same data with the same wall-time budget, one after the
    other (--seeds N: N times each), evaluate on the test split, measure speed with
    `spacy benchmark speed`, cross-check the scores with seqeval, break recall down by type
    and unseen names, and write the comparison to the benchmark document."""
    import sys

    from .benchmark import benchmark_command, run_benchmark

    try:
        result = run_benchmark(
            train, dev, test, configs, corpus=corpus, budget_s=budget_minutes * 60, output_dir=output_dir,
            doc_path=doc_path, baseline=baseline, command=benchmark_command(sys.argv[2:]), echo=typer.echo,
            speed_batches=speed_batches, speed_repeats=speed_repeats, speed_batch_size=speed_batch_size,
            gpu_id=gpu_id, seeds=seeds, seed_start=seed_start, crosscheck=crosscheck,
        )
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(result["section"])
    typer.echo(f"Written to {doc_path}")


@app.command("visualize")
def visualize(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    text: Optional[str] = typer.Argument(None, help="Text to annotate (default: read from standard input)"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write displaCy HTML here instead of serving it",
    ),
    port: int = typer.Option(5000, help="Port of the displaCy server"),
    host: str = typer.Option("127.0.0.1", help="Host of the displaCy server"),
) -> None:
    """Show the model's entities with displaCy: a local server, or an HTML file."""
    import sys

    from spacy import displacy

    from .display import write_displacy

    nlp = _load(model)
    texts = [text] if text is not None else [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise typer.BadParameter("no text given: pass TEXT or pipe lines to standard input.")
    docs = list(nlp.pipe(texts))
    _echo_entities(docs)
    if output is not None:
        typer.echo(f"displaCy HTML: {write_displacy(docs, output)}")
    else:
        displacy.serve(docs, style="ent", port=port, host=host)


@app.command("crosscheck")
def crosscheck(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Gold .spacy file (e.g. the test split)"),
    train_data: Optional[Path] = typer.Option(
        None, "--train-data", exists=True, dir_okay=False,
        help="Training .spacy file: adds recall per type and on names with unseen words",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results to this JSON file"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Entity P/R/F of the pipeline on DATA by spaCy's scorer and by seqeval on IOB2 tags,
    side by side; exits with status 1 when they disagree. With --train-data, also recall
    per type and on entities with a word never seen in training."""
    import json

    from .scoring import analyse, breakdown_markdown, crosscheck_line

    try:
        result = analyse(_load(model, gpu_id), data_path, train_data)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    check = result["crosscheck"]
    for name in ("spacy", "seqeval"):
        s = check[name]
        typer.echo(f"{name:>8}: P {100 * s['ents_p']:.4f}  R {100 * s['ents_r']:.4f}  F {100 * s['ents_f']:.4f}")
    typer.echo(crosscheck_line(check))
    if "breakdown" in result:
        typer.echo(breakdown_markdown(result["breakdown"]))
    if output is not None:
        output.write_text(json.dumps(result, indent=2), encoding="utf8")  # full precision (srsly rounds)
        typer.echo(f"Written to {output}")
    if not check["agree"]:
        raise typer.Exit(1)
