"""Train several configs on one corpus with the same wall-time budget, one after the
other, and compare them on the test split: P/R/F per type, words per second from
``spacy benchmark speed``, time to best dev F, peak memory and model size.

Everything runs through spaCy's own command line (``train``, ``evaluate``,
``benchmark speed``) in child processes, so each model is measured the same way.

- ``runner``: the child processes (output echoed, wall-time budget, peak memory), the
  machine and the recorded commands;
- ``runs``: one run of one config (``BenchmarkSettings``, ``benchmark_config``);
- ``suite``: the benchmark of several configs and seeds (``run_benchmark``) and its rows;
- ``stats``: the runs summarised per config (mean ± sd);
- ``render``: the Markdown section, the editing of the benchmark document and the rows' JSON;
- ``speed``: ``spacy benchmark speed`` and the side-by-side speed comparison.
"""

from .render import benchmark_markdown, command_block, curve_table, update_benchmark_doc, write_results
from .runner import STOP_GRACE_S, benchmark_command, machine_description, run_streaming, with_config_overrides
from .runs import BenchmarkSettings, benchmark_config, has_hybrid_ner, training_curve
from .speed import SPEED_LINE, benchmark_speed, compare_speed, parse_named_models, speed_baseline, speed_markdown
from .stats import mean_sd, summarize_runs
from .suite import check_seed_follows_system, merge_rows, run_benchmark, section_from_rows

__all__ = [
    "STOP_GRACE_S",
    "SPEED_LINE",
    "BenchmarkSettings",
    "benchmark_command",
    "benchmark_config",
    "benchmark_markdown",
    "benchmark_speed",
    "check_seed_follows_system",
    "command_block",
    "compare_speed",
    "curve_table",
    "has_hybrid_ner",
    "machine_description",
    "mean_sd",
    "merge_rows",
    "parse_named_models",
    "run_benchmark",
    "run_streaming",
    "section_from_rows",
    "speed_baseline",
    "speed_markdown",
    "summarize_runs",
    "training_curve",
    "update_benchmark_doc",
    "with_config_overrides",
    "write_results",
]
