"""The benchmark document's section of a serve benchmark (:mod:`.serve_benchmark`, which
re-exports these), and its default title."""

from pathlib import Path
from typing import Any, Dict

from .benchmark import command_block


def serve_benchmark_title(data_path: Path, model_thread: bool = False) -> str:
    """The default section title of a serve benchmark: ``serve (<folder> <file>)`` of the
    .spacy file, with ``, model thread`` when the server ran the model in its thread."""
    where = ", model thread" if model_thread else ""
    return f"serve ({data_path.parent.name} {data_path.stem}{where})"


def serve_benchmark_markdown(result: Dict[str, Any], *, title: str, command: str) -> str:
    """The benchmark document's section for one run."""
    n_rounds = len(result["small_batch_words_per_second"])
    rows = [
        f"| `nlp.pipe` in process, torch threads {t} | {result['pipe_medians'][t]:,.0f} | "
        f"{result['pipe_medians'][t] / result['pipe_median']:.2f} | "
        f"{', '.join(f'{v:,.0f}' for v in result['pipe_words_per_second'][t])} |"
        for t in sorted(result["pipe_medians"])
    ]
    rows.append(
        f"| `nlp.pipe` in process, torch threads {result['server_torch_threads']}, batch size "
        f"{result['clients']} | {result['small_batch_median']:,.0f} | "
        f"{result['small_batch_median'] / result['pipe_median']:.2f} | "
        f"{', '.join(f'{v:,.0f}' for v in result['small_batch_words_per_second'])} |"
    )
    rows.extend(
        f"| server, {result['clients']} clients, {s['workers']} model worker(s), "
        f"torch threads {s['threads']} each | {s['median']:,.0f} | **{s['ratio']:.2f}** | "
        f"{', '.join(f'{v:,.0f}' for v in s['words_per_second'])} |"
        for s in result["servers"]
    )
    return "\n".join(
        [
            f"## {title}",
            "",
            f"Run on {result['date']} on {result['machine']}, CPU. `python -m spacy_hybridner serve` in a child "
            "process on loopback (defaults but the access log, off; the model "
            f"{'in its worker thread' if '--model-thread' in result['server_args'] else 'in processes of its own'}); "
            "its clients run in the benchmark's process, on the same cores.",
            "",
            *command_block(command),
            f"Throughput on {result['n_texts']:,} texts ({result['n_words']:,} words) of `{result['data']}`: "
            f"one text per request from {result['clients']} concurrent clients, against plain `nlp.pipe` on the "
            f"same texts in the same run, alternating, median of {n_rounds} rounds; the ratio is to the faster "
            "`nlp.pipe` setting. The row with batch size "
            f"{result['clients']} is `nlp.pipe` held to the batches that {result['clients']} clients sending one "
            "text at a time can form at most: what one model process of the server can do under this load.",
            "",
            "| | words/s | × nlp.pipe | rounds |",
            "| --- | ---: | ---: | --- |",
            *rows,
            "",
            f"Texts whose entities from a server differ from `nlp.pipe`'s (last round): {result['mismatched_texts']}.",
            "",
            f"Latency of one short text ({result['latency_words']} words) sent {result['latency_requests']} times "
            f"in a row to the server with {result['servers'][0]['workers']} model worker(s): "
            f"p50 **{result['latency_p50_ms']:.1f} ms**, p99 **{result['latency_p99_ms']:.1f} ms** "
            f"(`nlp(text)` in process: p50 {result['nlp_p50_ms']:.1f} ms, p99 {result['nlp_p99_ms']:.1f} ms).",
            "",
        ]
    )
