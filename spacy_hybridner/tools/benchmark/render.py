"""The benchmark document: the Markdown of a benchmark's section (its tables of results,
recall, training curves) and the editing of the document's sections."""

import datetime
import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .runner import machine_description
from .stats import mean_sd, summarize_runs


def _pct(value: Optional[float]) -> str:
    return f"{100 * value:.2f}" if value is not None else "-"


def _with_sd(stat: Dict[str, Optional[float]], scale: float = 100.0, digits: int = 2, comma: bool = False) -> str:
    if stat["mean"] is None:
        return "-"
    fmt = f"{{:,.{digits}f}}" if comma else f"{{:.{digits}f}}"
    text = fmt.format(scale * stat["mean"])
    return text + (f" ± {fmt.format(scale * stat['sd'])}" if stat["sd"] is not None else "")


def _table(head: List[str], rows: List[List[str]]) -> List[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _results_table(
    items: List[Dict], first_columns: List[str], baseline: str, cells_of: Callable[[Dict, List[str]], List[str]]
) -> List[str]:
    """A Markdown table with one row per config: ``first_columns`` then F per entity type,
    words/s and the ratio to the baseline, dev F and time to it, memory and model size (and
    peak GPU memory when a run has one). ``cells_of(item, labels)`` gives a row's cells but
    the GPU one."""
    labels = sorted({label for item in items for label in item["per_type_f"]})
    gpu_memory = any(item.get("peak_gpu_mb") is not None for item in items)
    head = (
        first_columns
        + [f"F {label}" for label in labels]
        + [
            "words/s",
            f"× {baseline}",
            "best dev F",
            "min to best dev F",
            "steps to best",
            "peak RSS (MB)",
            "model (MB)",
        ]
        + (["peak GPU memory (MiB)"] if gpu_memory else [])
    )
    rows = []
    for item in items:
        cells = cells_of(item, labels)
        if gpu_memory:
            cells.append(f"{item['peak_gpu_mb']:,.0f}" if item.get("peak_gpu_mb") is not None else "-")
        rows.append(cells)
    return _table(head, rows)


def _single_run_table(rows: List[Dict], baseline: str) -> List[str]:
    """The table of one run per config (the layout of every run of record before seeds)."""
    base = next((r for r in rows if r["name"] == baseline), None)

    def cells(r: Dict, labels: List[str]) -> List[str]:
        return [
            r["name"],
            f"{100 * r['p']:.2f}",
            f"{100 * r['r']:.2f}",
            f"**{100 * r['f']:.2f}**",
            *[f"{100 * r['per_type_f'][label]:.2f}" if label in r["per_type_f"] else "-" for label in labels],
            f"{r['words_per_second']:,.0f}",
            f"{r['words_per_second'] / base['words_per_second']:.2f}" if base else "-",
            f"{100 * r['best_dev_f']:.2f}" if r["best_dev_f"] is not None else "-",
            f"{r['seconds_to_best'] / 60:.1f}" if r["seconds_to_best"] is not None else "-",
            str(r["steps_to_best"]) if r["steps_to_best"] is not None else "-",
            f"{r['peak_rss_mb']:,.0f}" if r["peak_rss_mb"] else "-",
            f"{r['model_mb']:.1f}",
        ]

    return _results_table(rows, ["model", "test P", "test R", "test F"], baseline, cells)


def _each_run_table(summaries: List[Dict]) -> List[str]:
    """Every run of every config, one line each (beneath the mean ± sd table)."""
    lines = [
        "| model | seed | test F | best dev F | words/s | steps to best | min to best dev F "
        "| last evaluation (step, epoch) | finished |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for r in s["runs"]:
            last = f"{r['last_step']}, {r['last_epoch']}" if r.get("last_step") is not None else "-"
            lines.append(
                f"| {r['name']} | {r.get('seed', '-')} | {_pct(r['f'])} | {_pct(r['best_dev_f'])} | "
                f"{r['words_per_second']:,.0f} | {r['steps_to_best'] if r['steps_to_best'] is not None else '-'} | "
                + (f"{r['seconds_to_best'] / 60:.1f} | " if r["seconds_to_best"] is not None else "- | ")
                + f"{last} | {r.get('finished', '-')} |"
            )
    return lines


def _multi_seed_tables(summaries: List[Dict], baseline: str) -> List[str]:
    """Mean ± sd per config, then every run beneath."""
    base = next((s for s in summaries if s["name"] == baseline), None)

    def cells(s: Dict, labels: List[str]) -> List[str]:
        wps = s["words_per_second"]
        return [
            s["name"],
            str(len(s["runs"])),
            f"**{_with_sd(s['f'])}**",
            _pct(s["p"]),
            _pct(s["r"]),
            *[_pct(s["per_type_f"].get(label)) for label in labels],
            _with_sd(wps, scale=1.0, digits=0, comma=True),
            f"{wps['mean'] / base['words_per_second']['mean']:.2f}" if base else "-",
            _with_sd(s["best_dev_f"]),
            f"{s['seconds_to_best'] / 60:.1f}" if s["seconds_to_best"] is not None else "-",
            f"{s['steps_to_best']:.0f}" if s["steps_to_best"] is not None else "-",
            f"{s['peak_rss_mb']:,.0f}" if s["peak_rss_mb"] else "-",
            f"{s['model_mb']:.1f}",
        ]

    lines = _results_table(summaries, ["model", "runs", "test F", "test P", "test R"], baseline, cells)
    return [*lines, "", "Each run:", "", *_each_run_table(summaries)]


BREAKDOWN_NOTE = (
    "Recall on the test split by type and by whether an entity has a word never seen in training "
    "({n_unseen:.0f} entities with such a word, {n_seen:.0f} with all words seen; words "
    "compared by token text, case-sensitively, against every token of the training split; a gold entity is "
    "found when a predicted one has its exact characters and type), and the test F recomputed with seqeval "
    "(IOB2 tags, conlleval's rules) from the same predictions{multi}. Scorers agree: runs in which every P, R and "
    "F (overall and per type) of spaCy's scorer and of seqeval differ by at most 1e-9. Test ECE: expected "
    "calibration error of `ent._.confidence` on the test split (10 equal bins), after `calibrate` on the dev "
    'split; "-" for a pipeline without confidences.'
)


def _breakdown_cells(s: Dict, labels: List[str]) -> List[str]:
    """A config's recall, seqeval F, agreement and test ECE."""
    ece = mean_sd([r.get("test_ece") for r in s["runs"]])
    calibrated = any(r.get("calibrated") for r in s["runs"])
    return [
        s["name"],
        *[_with_sd(mean_sd([r.get(key) for r in s["runs"]])) for key in ("recall_unseen", "recall_seen")],
        *[_pct(s["recall_per_type"].get(label)) for label in labels],
        _pct(s["seqeval_f"]),
        f"{s['scorers_agree']} of {len(s['runs'])}",
        "-"
        if ece["mean"] is None
        else _with_sd(ece, scale=1.0, digits=4) + ("" if calibrated else " (not calibrated)"),
    ]


def _breakdown_table(summaries: List[Dict]) -> List[str]:
    """Recall per type and on names with unseen words, and the seqeval cross-check."""
    if not any(s.get("recall_unseen") is not None or s.get("recall_seen") is not None for s in summaries):
        return []
    labels = sorted({label for s in summaries for label in s["recall_per_type"]})
    head = (
        ["model", "recall: a word unseen in training", "recall: all words seen"]
        + [f"recall {label}" for label in labels]
        + ["seqeval F", "scorers agree", "test ECE"]
    )
    multi = any(len(s["runs"]) > 1 for s in summaries)
    note = BREAKDOWN_NOTE.format(
        n_unseen=summaries[0]["n_unseen"],
        n_seen=summaries[0]["n_seen"],
        multi=" (mean ± sd, or the mean, over the runs)" if multi else "",
    )
    return [note, "", *_table(head, [_breakdown_cells(s, labels) for s in summaries])]


def curve_table(summaries: List[Dict], step_minutes: float = 5.0) -> List[str]:
    """Best dev F so far at every ``step_minutes`` of training, per config (mean over its
    runs; a run that had stopped counts with its best): the training curves as a table.
    Empty when no run has a curve; a run whose evaluations all came within its first
    second (spaCy logs whole seconds) has one, in the first column."""
    curves = {s["name"]: [r.get("curve") or [] for r in s["runs"]] for s in summaries}
    if not any(c for runs in curves.values() for c in runs):
        return []
    longest = max(p["minutes"] for runs in curves.values() for c in runs for p in c)
    marks = [step_minutes * (i + 1) for i in range(int(longest // step_minutes) + 1)]
    rows = []
    for name, runs in curves.items():
        cells = [name]
        for m in marks:
            best = [max((p["dev_f"] for p in c if p["minutes"] <= m), default=None) for c in runs if c]
            cells.append(_pct(mean_sd(best)["mean"]))
        rows.append(cells)
    return [
        "Training curves: the best dev F reached by each minute mark (mean over the runs; evaluations "
        "every config's `eval_frequency` steps; every point is in the rows' `curve`).",
        "",
        *_table(["model"] + [f"{m:g} min" for m in marks], rows),
    ]


def _method_note(rows: List[Dict], summaries: List[Dict], budget_s: float, gpu_id: int) -> str:
    """The section's first lines: when and where the runs ran, and how they were measured."""
    multi = any(len(s["runs"]) > 1 for s in summaries)
    gpu_memory = any(r.get("peak_gpu_mb") is not None for r in rows)
    seeds = sorted({str(r["seed"]) for r in rows if r.get("seed") is not None})
    seeds_note = (
        f" Each config was trained {max(len(s['runs']) for s in summaries)} times, with `[system] seed` "
        f"{', '.join(seeds)} (`--system.seed`; `[training] seed` follows it); the table gives the mean ± the "
        f"sample standard deviation (n − 1) over the runs, other columns the mean (peak RSS: the largest), "
        f"and the ratio of words/s is that of the means."
        if multi
        else ""
    )
    finished = sorted(r["finished"] for r in rows if r.get("finished"))
    machines = list(dict.fromkeys(r["machine"] for r in rows if r.get("machine"))) or [machine_description(gpu_id)]
    when = (
        f"Runs finished {finished[0]}" + (f" to {finished[-1]}" if finished[-1] != finished[0] else "")
        if finished
        else f"Run on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )
    return (
        f"{when} on {' / '.join(machines)}, {'GPU ' + str(gpu_id) if gpu_id >= 0 else 'CPU'}.\n"
        f"Each model trained for at most {budget_s / 60:.1f} minutes of wall time (or until its "
        f"config's patience / max_steps / max_epochs), one after the other, then evaluated on the test split "
        f"(`spacy evaluate`, model-best by dev F). Words/s: median of repeated "
        f"`spacy benchmark speed` runs on the test split."
        + (
            " Peak GPU memory: the most that PyTorch's allocator had handed out during training "
            "(`torch.cuda.max_memory_allocated`, read at each evaluation)."
            if gpu_memory
            else ""
        )
        + seeds_note
    )


def benchmark_markdown(
    rows: List[Dict], *, corpus: str, command: str, budget_s: float, baseline: str, gpu_id: int
) -> str:
    """The ``## corpus`` section of the benchmark document: with one run per config, one
    row per config; with several (seeds), mean ± sample standard deviation per config and
    every run beneath; then recall by type and on unseen names, and the seqeval check.

    rows (List[Dict]): One row per run. RETURNS (str): Markdown.
    """
    summaries = summarize_runs(rows)
    multi = any(len(s["runs"]) > 1 for s in summaries)
    lines = _multi_seed_tables(summaries, baseline) if multi else _single_run_table(rows, baseline)
    notes = [
        f"## {corpus}",
        "",
        _method_note(rows, summaries, budget_s, gpu_id),
        "",
        *command_block("\n".join(dict.fromkeys(r.get("benchmark_command") or command for r in rows))),
        *lines,
        "",
    ]
    for table in (_breakdown_table(summaries), curve_table(summaries)):
        if table:
            notes += [*table, ""]
    notes += ["Training commands:", "", *[f"- `{r['name']}`: `{r['train_command']}`" for r in rows], ""]
    return "\n".join(notes)


def command_block(command: str) -> List[str]:
    """Markdown lines that show the command a benchmark section was measured with."""
    return ["Command:", "", "```bash", command, "```", ""]


def write_results(path: Path, section: str, command: str, runs: List[Dict]) -> None:
    """Write a section's rows as JSON (``docs/results/<section>.json``): the section's title,
    the command(s) that made them and one dict per run (``benchmark``, ``benchmark-section``
    and ``speed --results-path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"section": section, "command": command, "runs": runs}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf8")


def update_benchmark_doc(path: Path, corpus: str, section: str) -> None:
    """Replace the ``## corpus`` section of the benchmark document (or add it)."""
    header = "# Benchmarks\n\nProduced by `python -m spacy_hybridner benchmark`; each section names its command.\n\n"
    text = path.read_text(encoding="utf8") if path.exists() else header
    pattern = re.compile(rf"^## {re.escape(corpus)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf8")
