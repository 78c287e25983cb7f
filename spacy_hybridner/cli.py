"""Command line: ``python -m spacy_hybridner COMMAND`` (also the ``spacy-hybridner`` script)."""
import json
from enum import Enum
from pathlib import Path
from typing import Dict, List, Optional

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
    from .tools.display import entity_lines

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
    from .tools.corpora import convert_corpus

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


@app.command("texts")
def texts(
    corpora: List[Path] = typer.Argument(..., help="The .spacy files whose text to write (train splits)"),
    output: Path = typer.Option(..., "--output", "-o", help="JSON Lines file to write (id, text)"),
    allow_held_out: bool = typer.Option(False, "--allow-held-out",
        help="Accept a dev.spacy or test.spacy (e.g. another corpus's held-out splits)"),
) -> None:
    """Write the documents' text of .spacy corpora as JSON Lines, without their
    annotations: unlabeled text for a teacher (`annotate TEACHER TEXT.jsonl SILVER
    --output-format docbin`). Refuses dev and test splits unless --allow-held-out."""
    from .tools.corpora import write_texts

    try:
        counts = write_texts(corpora, output, allow_held_out=allow_held_out)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"{counts['docs']} documents, {counts['words']} words -> {output}")


@app.command("showcase")
def showcase(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help="Held-out .spacy file"),
    output_path: Path = typer.Argument(..., help="displaCy HTML file to write"),
    n_docs: int = typer.Option(20, "--n-docs", help="How many documents to show"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Annotate held-out documents, print their entities and write displaCy HTML."""
    from .tools.display import showcase as run_showcase

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
    from .tools.report import write_report

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
    doc_path: Optional[Path] = typer.Option(
        None, help="Markdown document to write the section into (its section of that title is replaced); "
                   "default: print only",
    ),
    results_path: Optional[Path] = typer.Option(
        None, help="Also write every run's row as JSON to this file (e.g. docs/results/<section>.json)",
    ),
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
    calibrate: bool = typer.Option(True, help=(
        "Calibrate each hybrid_ner pipeline on the dev split before the cross-check, which gives its test ECE"
    )),
    append: bool = typer.Option(False, "--append", help=(
        "Keep the runs of earlier benchmark commands in OUTPUT_DIR/CORPUS/benchmark.json (runs split over "
        "several sittings) and add these; a run of the same config and seed replaces the earlier one"
    )),
) -> None:
    """Train each config on the same data with the same wall-time budget, one after the
    other (--seeds N: N times each), evaluate on the test split, measure speed with
    `spacy benchmark speed`, cross-check the scores with seqeval, break recall down by type
    and unseen names, and write the comparison to the benchmark document."""
    import sys

    from .tools.benchmark import benchmark_command, run_benchmark

    try:
        result = run_benchmark(
            train, dev, test, configs, corpus=corpus, budget_s=budget_minutes * 60, output_dir=output_dir,
            doc_path=doc_path, baseline=baseline, command=benchmark_command(sys.argv[2:]), echo=typer.echo,
            speed_batches=speed_batches, speed_repeats=speed_repeats, speed_batch_size=speed_batch_size,
            gpu_id=gpu_id, seeds=seeds, seed_start=seed_start, crosscheck=crosscheck, calibrate=calibrate,
            append=append,
        )
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(result["section"])
    if doc_path is not None:
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        _write_results(results_path, corpus, benchmark_command(sys.argv[2:]), result["rows"])


def _write_results(path: Path, section: str, command: str, runs: List[Dict]) -> None:
    """A benchmark section's rows as JSON (docs/results/<section>.json): the section's title,
    the command(s) that made them and one dict per run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"section": section, "command": command, "runs": runs}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf8")
    typer.echo(f"Rows written to {path}")


@app.command("benchmark-section")
def benchmark_section_command(
    rows_path: Path = typer.Argument(..., help="The benchmark.json of a benchmark's OUTPUT_DIR/CORPUS"),
    corpus: str = typer.Option(..., help="Section title in the document"),
    baseline: str = typer.Option("spacy_ner", help="Config name that speed ratios refer to"),
    doc_path: Optional[Path] = typer.Option(None, help="Markdown document to write the section into"),
    results_path: Optional[Path] = typer.Option(None, help="Also write the rows as JSON to this file"),
) -> None:
    """Write the benchmark section of the runs stored in a benchmark.json, without
    training: for runs of record made over several sittings (benchmark --append)."""
    from .tools.benchmark import section_from_rows, update_benchmark_doc

    try:
        result = section_from_rows(rows_path, corpus=corpus, baseline=baseline)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(result["section"])
    if doc_path is not None:
        update_benchmark_doc(doc_path, corpus, result["section"])
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        _write_results(results_path, corpus, result["command"], result["rows"])


@app.command("speed")
def speed_command(
    models: List[str] = typer.Argument(..., help=(
        "Trained pipelines as NAME=PATH (e.g. spacy_ner=training/benchmark/conll03/spacy_ner/seed0/model-best)"
    )),
    data: Path = typer.Option(..., "--data", help="The .spacy file to annotate (e.g. the test split)"),
    batch_size: Optional[int] = typer.Option(
        None, help="--batch-size of spacy benchmark speed (default: the pipeline's)"),
    batches: int = typer.Option(30, min=30, help="--batches of spacy benchmark speed"),
    rounds: int = typer.Option(3, min=1, help="Rounds; each runs every pipeline once, in turn"),
    baseline: Optional[str] = typer.Option(None, help="The NAME that ratios refer to (default: the first)"),
    title: str = typer.Option("speed", help="Section title in the document"),
    doc_path: Optional[Path] = typer.Option(None, help="Markdown document to write the section into"),
    results_path: Optional[Path] = typer.Option(None, help="Also write the rows as JSON to this file"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Words/s of trained pipelines side by side in one run: `spacy benchmark speed` on
    each in turn, for several rounds, the median per pipeline and its ratio to a baseline."""
    import shlex
    import sys

    from .tools.benchmark import compare_speed, parse_named_models, speed_markdown, update_benchmark_doc

    try:
        named = parse_named_models(models)
        if baseline is not None and baseline not in [n for n, _ in named]:
            raise ValueError(f"--baseline {baseline} is none of the pipelines' names: {[n for n, _ in named]}")
        rows = compare_speed(named, data, echo=typer.echo, batch_size=batch_size, batches=batches, rounds=rounds,
                             gpu_id=gpu_id)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    command = "python -m spacy_hybridner speed " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    section = speed_markdown(rows, title=title, command=command, baseline=baseline or named[0][0], gpu_id=gpu_id)
    typer.echo(section)
    if doc_path is not None:
        update_benchmark_doc(doc_path, title, section)
        typer.echo(f"Written to {doc_path}")
    if results_path is not None:
        _write_results(results_path, title, command, rows)


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

    from .tools.display import write_displacy

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


@app.command("serve")
def serve_command(
    model: str = typer.Argument(..., help="Pipeline package name or path, loaded once at start-up"),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(8080, help="TCP port"),
    api_key: Optional[str] = typer.Option(
        None, envvar="SPACY_HYBRIDNER_API_KEY", show_default=False,
        help="Require this key (X-API-Key or Authorization: Bearer) for everything but /health and the page",
    ),
    max_body_bytes: int = typer.Option(1_048_576, min=1, help="Largest request body in bytes (413 beyond)"),
    max_text_chars: int = typer.Option(100_000, min=1, help="Most characters per text (422 beyond)"),
    max_texts: int = typer.Option(128, min=1, help="Most texts per request (422 beyond)"),
    max_header_bytes: int = typer.Option(
        65_536, min=1024, help="Most bytes of a request's line and headers (431 and the connection closed beyond)",
    ),
    receive_timeout: float = typer.Option(
        30.0, min=0.001,
        help="Seconds to receive a whole request, headers and body, from its first byte (408 beyond)",
    ),
    shutdown_timeout: float = typer.Option(
        10.0, min=0.0,
        help="Seconds the requests in flight (and their answers) have after SIGTERM or SIGINT before the server "
             "exits anyway; a second signal exits at once",
    ),
    queue_size: int = typer.Option(64, min=1, help="Requests that may wait for the model (503 + Retry-After beyond)"),
    max_batch_texts: int = typer.Option(64, min=1, help="Most texts gathered into one nlp.pipe call"),
    batch_wait_ms: float = typer.Option(2.0, min=0.0, help="How long to wait for more requests to batch, in ms"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="nlp.pipe batch size (default: the pipeline's)"),
    torch_threads: Optional[int] = typer.Option(
        None, min=1, show_default=False,
        help="torch intra-op threads of each model process (default: one less than the cores, shared among them)",
    ),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
    model_process: bool = typer.Option(
        True, "--model-process/--model-thread",
        help="Run the pipeline in a child process (its own GIL) or in the server's worker thread",
    ),
    model_workers: Optional[int] = typer.Option(
        None, min=1, show_default=False,
        help="Model processes (copies of the pipeline) that take batches in turn (default: 2; 1 with --model-thread)",
    ),
    access_log: bool = typer.Option(True, help="Log every request (uvicorn's access log)"),
    log_level: str = typer.Option("info", help="Log level: debug, info, warning, error"),
) -> None:
    """Serve a pipeline over HTTP: JSON API under /v1 (ents, render, model), /health,
    /ready and a page at / with displaCy and the entities' confidences."""
    from .serve import ServeSettings

    try:
        from .serve.app import serve
    except ImportError as error:
        raise SystemExit(f"serve needs FastAPI and uvicorn ({error}): pip install 'spacy-hybridner[serve]'") from error
    try:
        settings = ServeSettings(
            host=host, port=port, api_key=api_key, max_body_bytes=max_body_bytes, max_text_chars=max_text_chars,
            max_texts=max_texts, queue_size=queue_size, max_batch_texts=max_batch_texts, batch_wait_ms=batch_wait_ms,
            max_header_bytes=max_header_bytes, receive_timeout_s=receive_timeout,
            shutdown_timeout_s=shutdown_timeout, access_log=access_log, log_level=log_level,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    serve(
        model, settings, batch_size=batch_size, torch_threads=torch_threads, gpu_id=gpu_id,
        model_process=model_process, model_workers=model_workers,
    )


@app.command("serve-benchmark")
def serve_benchmark_command(
    model: str = typer.Argument(..., help="Pipeline package name or path"),
    data_path: Path = typer.Argument(..., help=".spacy file whose texts are sent (e.g. the test split)"),
    clients: int = typer.Option(16, min=1, help="Concurrent client connections"),
    repeats: int = typer.Option(3, min=1, help="Alternating rounds of nlp.pipe and the server (medians reported)"),
    limit: int = typer.Option(0, min=0, help="Use only the first N docs (0: all)"),
    latency_requests: int = typer.Option(200, min=1, help="Sequential requests of one short text for p50/p99"),
    torch_threads: Optional[int] = typer.Option(
        None, min=1, show_default=False,
        help="torch threads of each model process (default: serve's); nlp.pipe is timed with "
             "these and with torch's default, and compared with the faster",
    ),
    model_workers: Optional[List[int]] = typer.Option(
        None, min=1, show_default=False,
        help="Model processes of the server; repeat to time several servers in the same rounds, the first "
             "giving the latency (default: serve's)",
    ),
    title: Optional[str] = typer.Option(
        None, help="Section title in the document (default: 'serve (<folder> <file>)')",
    ),
    doc_path: Optional[Path] = typer.Option(
        None, help="Markdown document to write the section into (its section of that title is replaced); "
                   "default: print only",
    ),
    model_thread: bool = typer.Option(
        False, "--model-thread", help="Serve with the model in the server's worker thread (serve --model-thread)",
    ),
) -> None:
    """Throughput of `serve` under concurrent clients as a ratio to plain nlp.pipe on the
    same texts in the same run, and the latency of one short text; written to the
    benchmark document."""
    import shlex
    import sys

    from .tools.benchmark import update_benchmark_doc
    from .tools.serve_benchmark import serve_benchmark, serve_benchmark_markdown

    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist")
    result = serve_benchmark(
        model, data_path, clients=clients, repeats=repeats, limit=limit, latency_requests=latency_requests,
        torch_threads=torch_threads, model_workers=model_workers or [],
        server_args=["--model-thread"] if model_thread else [], echo=typer.echo,
    )
    command = "python -m spacy_hybridner serve-benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    where = ", model thread" if model_thread else ""
    section_title = title or f"serve ({data_path.parent.name} {data_path.stem}{where})"
    section = serve_benchmark_markdown(result, title=section_title, command=command)
    typer.echo(section)
    if doc_path is not None:
        update_benchmark_doc(doc_path, section_title, section)
        typer.echo(f"Written to {doc_path}")
class AnnotateEngine(str, Enum):
    local = "local"
    ray = "ray"


@app.command("annotate")
def annotate_command(
    model: str = typer.Argument(...,
        help="Pipeline name or path (on a cluster: installed on, or visible to, every node)"),
    input_path: str = typer.Argument(..., help="Input: a file, a folder (searched recursively) or a quoted glob"),
    output: Path = typer.Argument(...,
        help="local: a .jsonl / .parquet file, or a folder of .spacy shards; ray: a folder of shards"),
    engine: AnnotateEngine = typer.Option(AnnotateEngine.local, help="local: nlp.pipe in this process; ray: Ray Data"),
    address: Optional[str] = typer.Option(None,
        help="ray: join this cluster ('auto', 'ray://HEAD:10001'); default: start Ray here"),
    workers: int = typer.Option(1, min=1,
        help="local: nlp.pipe n_process; ray: actors, one CPU and one torch thread each"),
    batch_size: int = typer.Option(256, min=1, help="Records per batch (ray: map_batches batch_size)"),
    pipe_batch_size: Optional[int] = typer.Option(None, min=1, help="nlp.pipe batch_size (default: the pipeline's)"),
    input_format: Optional[str] = typer.Option(None, help="jsonl, txt or parquet (default: from the file extensions)"),
    output_format: Optional[str] = typer.Option(None,
        help="jsonl, parquet or docbin (default: from OUTPUT's extension; ray: jsonl)"),
    id_field: str = typer.Option("id", help="JSON Lines field / Parquet column of the ids"),
    text_field: str = typer.Option("text", help="JSON Lines field / Parquet column of the texts"),
    max_chars: int = typer.Option(1_000_000, min=0,
        help="Reject longer texts (spaCy's default max_length; 0: no limit)"),
    include_text: bool = typer.Option(False, "--include-text", help="Copy each text into its output record"),
    rejects: Optional[Path] = typer.Option(None,
        help="Rejects file (JSON Lines; default: OUTPUT.rejects.jsonl next to OUTPUT, e.g. out.jsonl.rejects.jsonl)"),
    num_cpus: Optional[int] = typer.Option(None, min=1,
        help="ray, without --address: CPUs of the local Ray instance (default: --workers)"),
    max_restarts: int = typer.Option(8, min=-1, help="ray: restarts of each actor whose process died (-1: no limit)"),
    max_task_retries: int = typer.Option(4, min=-1, help="ray: retries of a batch whose actor died (-1: no limit)"),
    shard_size: int = typer.Option(10_000, min=1, help="local, docbin output: documents per .spacy shard"),
    overwrite: bool = typer.Option(False, "--overwrite",
        help="Replace an existing OUTPUT, rejects file and manifest when the run completes, and remove the "
             "temporaries of a killed run"),
    marginals: bool = typer.Option(False, "--marginals",
        help="docbin: also store each hybrid_ner component's tag marginals in the Docs (soft targets for "
             "distillation, GoldSilverCorpus soft_weight)"),
) -> None:
    """Annotate a corpus: JSON Lines, plain text (one document per line) or Parquet in;
    JSON Lines, Parquet or DocBin shards out, one record per document (id, entities with
    confidences). Records without a usable text or id go to the rejects file and the run goes
    on. OUTPUT, its rejects file and OUTPUT.manifest.json appear only when the run completes.
    Exit status: 0 all annotated, 3 some rejected, 2 unreadable or missing input or an existing
    OUTPUT, 1 the run failed, 130 / 143 interrupted (SIGINT / SIGTERM): nothing was written."""
    import signal

    from .annotate import AnnotateInputError, AnnotateRunError, annotate

    try:
        summary = annotate(
            model, input_path, output, engine=engine.value, address=address, workers=workers,
            batch_size=batch_size, pipe_batch_size=pipe_batch_size, input_format=input_format,
            output_format=output_format, id_field=id_field, text_field=text_field,
            max_chars=max_chars or None, include_text=include_text, rejects_path=rejects,
            num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=max_task_retries,
            shard_size=shard_size, overwrite=overwrite, marginals=marginals, echo=typer.echo,
        )
    except AnnotateInputError as e:
        raise typer.BadParameter(str(e)) from e
    except AnnotateRunError as e:
        typer.echo(f"annotate failed: {e}", err=True)
        raise typer.Exit(1) from e
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        typer.echo(f"annotate interrupted ({signal.Signals(signum).name}): nothing was written to {output}; "
                   f"its temporaries were removed. Run the command again to start over.", err=True)
        raise typer.Exit(128 + signum) from e
    raise typer.Exit(summary.exit_code)


@app.command("annotate-benchmark")
def annotate_benchmark_command(
    model: str = typer.Argument(..., help="Pipeline name or path"),
    data_path: Path = typer.Argument(..., help=".spacy file whose texts are annotated (e.g. the test split)"),
    repeat: int = typer.Option(3, min=1, help="Runs of each configuration (medians reported)"),
    synthetic_factor: int = typer.Option(5, min=0,
        help="Also a corpus of the texts repeated K times, shuffled (0: none)"),
    limit: int = typer.Option(0, min=0, help="Use only the first N texts (0: all)"),
    batch_size: int = typer.Option(256, min=1, help="annotate --batch-size"),
    doc_path: Optional[Path] = typer.Option(
        None, help="Markdown document to write the section into (its section of that title is replaced); "
                   "default: print only",
    ),
) -> None:
    """Docs/s and words/s of plain nlp.pipe, the local engine with 1 and 2 processes and
    Ray Data with 1 and 2 actors in the same run, Ray's start-up, 1 -> 2 actor scaling,
    and the cluster size a 100-million-document corpus needs for a one-day run."""
    import shlex
    import sys

    from .tools.annotate_benchmark import benchmark_markdown, run_annotate_benchmark, write_benchmark
    from .tools.benchmark import machine_description

    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist: give a .spacy file, e.g. corpus/gmb/test.spacy.")
    results = run_annotate_benchmark(model, data_path, repeat=repeat, synthetic_factor=synthetic_factor, limit=limit,
                                     batch_size=batch_size, echo=typer.echo)
    command = "python -m spacy_hybridner annotate-benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if doc_path is not None:
        section = write_benchmark(results, doc_path, command)
        typer.echo(section)
        typer.echo(f"Written to {doc_path}")
    else:
        typer.echo(benchmark_markdown(results, command=command, machine=machine_description(),
                                      title="annotate: local engine and Ray Data"))
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

    from .tools.scoring import analyse, breakdown_markdown, crosscheck_line

    try:
        result = analyse(_load(model, gpu_id), data_path, train_data)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    check = result["crosscheck"]
    for name in ("spacy", "seqeval"):
        s = check[name]
        typer.echo(f"{name:>8}: P {100 * s['ents_p']:.4f}  R {100 * s['ents_r']:.4f}  F {100 * s['ents_f']:.4f}")
    typer.echo(crosscheck_line(check))
    if result["calibration"]["ece"] is not None:
        typer.echo(f"Expected calibration error of ent._.confidence: {result['calibration']['ece']:.4f} "
                   f"({result['calibration']['n_entities']} entities)")
    if "breakdown" in result:
        typer.echo(breakdown_markdown(result["breakdown"]))
    if output is not None:
        output.write_text(json.dumps(result, indent=2), encoding="utf8")  # full precision (srsly rounds)
        typer.echo(f"Written to {output}")
    if not check["agree"]:
        raise typer.Exit(1)
