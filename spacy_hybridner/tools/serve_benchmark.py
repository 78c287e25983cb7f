"""How fast the server is next to plain ``nlp.pipe`` on the same texts, in the same run.

Throughput: all texts of a ``.spacy`` file through ``nlp.pipe`` in this process, then the
same texts sent to the real server (a child process on a free loopback port) by N
concurrent clients, one text per request as applications send them; alternately, a few
times, medians reported. Latency: one short text sent sequentially, next to ``nlp(text)``.
"""

import contextlib
import datetime
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..serve.process import ServerProcess
from ..threads import use_threads
from .benchmark import machine_description
from .serve_benchmark_doc import serve_benchmark_markdown, serve_benchmark_title  # noqa: F401 (re-exported)


def load_texts(data_path: Path, limit: int = 0) -> Tuple[List[str], int]:
    """The texts of a ``.spacy`` file and their number of tokens (first ``limit`` docs; 0: all)."""
    import spacy
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(data_path).get_docs(spacy.blank("xx").vocab))
    if limit:
        docs = docs[:limit]
    if not docs:
        raise ValueError(f"{data_path} holds no documents")
    return [doc.text for doc in docs], sum(len(doc) for doc in docs)


def _spans(records: Sequence[Dict[str, Any]]) -> List[Tuple[int, int, str]]:
    return [(r["start_char"], r["end_char"], r["label"]) for r in records]


def time_pipe(
    nlp: Any, texts: Sequence[str], batch_size: Optional[int] = None
) -> Tuple[float, List[List[Tuple[int, int, str]]]]:
    """Seconds for ``list(nlp.pipe(texts, batch_size=batch_size))`` (None: the pipeline's
    batch size) and the entity spans of each text."""
    start = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - start
    return seconds, [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def _post(conn: http.client.HTTPConnection, text: str, headers: Dict[str, str]) -> Dict[str, Any]:
    conn.request("POST", "/v1/ents", body=json.dumps({"text": text}), headers=headers)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {body[:300]!r}")
    return json.loads(body)


def time_server(port: int, texts: Sequence[str], clients: int, api_key: Optional[str] = None) -> Tuple[float, List]:
    """Seconds for ``clients`` concurrent keep-alive connections to send every text (one per
    request, each client taking the next unsent text), and the entity spans of each text."""
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    results: List[Any] = [None] * len(texts)
    errors: List[str] = []
    lock = threading.Lock()
    next_index = [0]
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        barrier.wait()
        try:
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= len(texts):
                    return
                results[i] = _spans(_post(conn, texts[i], headers)["docs"][0]["ents"])
        except Exception as error:  # noqa: BLE001 - reported by the caller
            errors.append(repr(error))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed, first: {errors[0]}")
    return seconds, results


def time_latency(port: int, text: str, n: int, api_key: Optional[str] = None) -> List[float]:
    """Seconds of each of ``n`` sequential requests with one text (one keep-alive connection)."""
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            _post(conn, text, headers)
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


@dataclass
class _Timings:
    """Words/s of every round: ``nlp.pipe`` per torch thread count, ``nlp.pipe`` with a batch
    size of ``clients``, and the most texts whose entities from a server differed."""

    pipe_wps: Dict[int, List[float]]
    small_batch_wps: List[float] = field(default_factory=list)
    mismatched: int = 0


def _server_plans(model_workers: Sequence[int], server_args: Sequence[str], torch_threads: Optional[int]) -> List[Dict]:
    """One server per number of model workers (none given: serve's default), with its torch threads."""
    from ..serve.settings import default_model_workers, default_torch_threads

    workers_list = list(model_workers) or [default_model_workers("--model-thread" not in server_args)]
    return [
        {"workers": w, "threads": torch_threads or default_torch_threads(w), "words_per_second": []}
        for w in workers_list
    ]


def _start_servers(
    stack: contextlib.ExitStack,
    model: str,
    servers: List[Dict],
    clients: int,
    server_args: Sequence[str],
    texts: Sequence[str],
) -> None:
    """Start every server (``server["process"]``, stopped with ``stack``) and warm it up."""
    for server in servers:
        args = [
            "--torch-threads",
            str(server["threads"]),
            "--model-workers",
            str(server["workers"]),
            "--no-access-log",
            "--log-level",
            "warning",
            "--queue-size",
            str(max(64, 2 * clients)),
            *server_args,
        ]
        server["process"] = stack.enter_context(ServerProcess(model, args))
        time_server(server["process"].port, texts[:200], clients)  # warm-up


def _one_round(
    nlp: Any,
    texts: Sequence[str],
    n_words: int,
    clients: int,
    servers: List[Dict],
    server_threads: int,
    timings: _Timings,
) -> None:
    """``nlp.pipe`` with each thread count, with a batch size of ``clients``, then every server."""
    for threads in timings.pipe_wps:
        use_threads(threads)
        seconds, pipe_spans = time_pipe(nlp, texts)
        timings.pipe_wps[threads].append(n_words / seconds)
    use_threads(server_threads)
    timings.small_batch_wps.append(n_words / time_pipe(nlp, texts, batch_size=clients)[0])
    for server in servers:
        seconds, server_spans = time_server(server["process"].port, texts, clients)
        server["words_per_second"].append(n_words / seconds)
        timings.mismatched = max(timings.mismatched, sum(a != b for a, b in zip(pipe_spans, server_spans)))


def _round_line(round_: int, timings: _Timings, servers: List[Dict], clients: int, server_threads: int) -> str:
    pipes = ", ".join(f"{wps[-1]:,.0f} ({t} threads)" for t, wps in timings.pipe_wps.items())
    served = ", ".join(f"{s['words_per_second'][-1]:,.0f} ({s['workers']} workers)" for s in servers)
    return (
        f"round {round_ + 1}: nlp.pipe {pipes}, batch size {clients} "
        f"{timings.small_batch_wps[-1]:,.0f} ({server_threads} threads); server {served} words/s; "
        f"texts with other entities: {timings.mismatched}"
    )


def _intro_line(n_texts: int, n_words: int, clients: int, servers: List[Dict], timings: _Timings) -> str:
    described = "; ".join(f"{s['workers']} model worker(s) x {s['threads']} torch thread(s)" for s in servers)
    return (
        f"{n_texts} texts, {n_words} words; {clients} clients; servers: {described}; "
        f"nlp.pipe torch threads {' and '.join(map(str, timings.pipe_wps))}"
    )


def _rank_servers(servers: List[Dict], timings: _Timings) -> Tuple[Dict[int, float], int]:
    """Every server's median words/s and its ratio to the faster ``nlp.pipe`` (the servers'
    processes dropped). RETURNS: ``nlp.pipe``'s median per thread count, and the faster count."""
    pipe_medians = {t: median(v) for t, v in timings.pipe_wps.items()}
    best_threads = max(pipe_medians, key=pipe_medians.get)
    for server in servers:
        del server["process"]
        server["median"] = median(server["words_per_second"])
        server["ratio"] = server["median"] / pipe_medians[best_threads]
    return pipe_medians, best_threads


def _local_latencies(nlp: Any, text: str, n: int) -> List[float]:
    """Seconds of each of ``n`` calls of ``nlp(text)`` in this process."""
    local = []
    for _ in range(n):
        start = time.perf_counter()
        nlp(text)
        local.append(time.perf_counter() - start)
    return local


def _summary_line(result: Dict[str, Any]) -> str:
    served = ", ".join(
        f"{s['median']:,.0f} words/s with {s['workers']} workers ({s['ratio']:.2f}x)" for s in result["servers"]
    )
    return (
        f"median: nlp.pipe {result['pipe_median']:,.0f} words/s ({result['pipe_best_threads']} threads), "
        f"server {served}; latency p50 {result['latency_p50_ms']:.1f} ms, p99 {result['latency_p99_ms']:.1f} ms "
        f"(nlp(text) p50 {result['nlp_p50_ms']:.1f} ms)"
    )


@dataclass(frozen=True)
class _Settings:
    """The arguments of :func:`serve_benchmark` (see there)."""

    model: str
    data_path: Path
    clients: int
    repeats: int
    limit: int
    latency_requests: int
    torch_threads: Optional[int]
    model_workers: Sequence[int]
    server_args: Sequence[str]
    echo: Callable[[str], None]


def serve_benchmark(
    model: str,
    data_path: Path,
    *,
    clients: int = 16,
    repeats: int = 3,
    limit: int = 0,
    latency_requests: int = 200,
    torch_threads: Optional[int] = None,
    model_workers: Sequence[int] = (),
    server_args: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Measure the server against ``nlp.pipe`` on the texts of ``data_path``.

    model (str): pipeline path or package name (loaded here and by the server).
    data_path (Path): ``.spacy`` file whose texts are sent.
    clients (int): concurrent client connections.
    repeats (int): alternating rounds of ``nlp.pipe`` and the servers; medians are reported.
    limit (int): use only the first N docs (0: all).
    latency_requests (int): sequential requests of one short text for p50 / p99 (to the
        first server).
    torch_threads (Optional[int]): torch intra-op threads of each model process (None:
        serve's default for its number of workers). ``nlp.pipe`` is timed both with the
        first server's threads and with torch's default (one per core), and the servers are
        compared with the faster of the two. It is also timed with the first server's threads
        and a batch size of ``clients``: the largest batch that ``clients`` closed-loop
        clients sending one text each can form.
    model_workers (Sequence[int]): one server for each of these numbers of model processes,
        timed in the same rounds (empty: serve's default alone).
    server_args (Sequence[str]): more ``serve`` options, for every server.
    RETURNS (Dict[str, Any]): the numbers (words/s of each round, medians, ratios, latencies);
        ``server_median`` and ``ratio`` are the first server's.
    """
    # The first statement, so that locals() holds the arguments and nothing else.
    return _serve_benchmark(_Settings(**locals()))


def _serve_benchmark(s: _Settings) -> Dict[str, Any]:
    """:func:`serve_benchmark`: the texts and servers, the rounds, the latencies, the result."""
    import spacy
    import torch

    texts, n_words = load_texts(s.data_path, s.limit)
    servers = _server_plans(s.model_workers, s.server_args, s.torch_threads)
    server_threads = servers[0]["threads"]
    timings = _Timings({t: [] for t in sorted({server_threads, torch.get_num_threads()})})
    nlp = spacy.load(s.model)
    short = next((t for t in texts if 8 <= len(t.split()) <= 15), texts[0])
    s.echo(_intro_line(len(texts), n_words, s.clients, servers, timings))
    time_pipe(nlp, texts[:200])  # warm-up
    with contextlib.ExitStack() as stack:
        _start_servers(stack, s.model, servers, s.clients, s.server_args, texts)
        for round_ in range(s.repeats):
            _one_round(nlp, texts, n_words, s.clients, servers, server_threads, timings)
            s.echo(_round_line(round_, timings, servers, s.clients, server_threads))
        latencies = time_latency(servers[0]["process"].port, short, s.latency_requests)
    pipe_medians, best_threads = _rank_servers(servers, timings)
    use_threads(best_threads)
    local = _local_latencies(nlp, short, s.latency_requests)
    result = {
        "model": s.model,
        "data": str(s.data_path),
        "server_args": list(s.server_args),
        "n_texts": len(texts),
        "n_words": n_words,
        "clients": s.clients,
        "servers": servers,
        "server_torch_threads": server_threads,
        "pipe_words_per_second": timings.pipe_wps,
        "pipe_medians": pipe_medians,
        "pipe_best_threads": best_threads,
        "pipe_median": pipe_medians[best_threads],
        "small_batch_words_per_second": timings.small_batch_wps,
        "small_batch_median": median(timings.small_batch_wps),
        "server_median": servers[0]["median"],
        "ratio": servers[0]["ratio"],
        "mismatched_texts": timings.mismatched,
        "latency_text": short,
        "latency_words": len(nlp.make_doc(short)),
        "latency_requests": s.latency_requests,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "nlp_p50_ms": 1000 * percentile(local, 50),
        "nlp_p99_ms": 1000 * percentile(local, 99),
        "machine": machine_description(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    s.echo(_summary_line(result))
    return result
