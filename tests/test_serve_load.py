"""A bounded load test on loopback: 16 concurrent clients, every answer checked, then a
clean stop of the real server."""

import signal
import threading

import httpx
import pytest
import spacy

from spacy_hybridner.serve.process import ServerProcess

from conftest import TRAIN_DATA, run_python, write_corpus

N_CLIENTS = 16
REQUESTS_PER_CLIENT = 20  # 320 requests


def make_requests():
    """Every client's requests: single texts, lists and docs with ids, of varied lengths."""
    base = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Berlin and Paris .", "Obama met Merkel in Kenya ."]
    plans = []
    for client in range(N_CLIENTS):
        plan = []
        for i in range(REQUESTS_PER_CLIENT):
            k = client * REQUESTS_PER_CLIENT + i
            a, b = base[k % len(base)], base[(k * 7 + 3) % len(base)]
            if k % 3 == 0:
                plan.append({"text": a})
            elif k % 3 == 1:
                plan.append({"texts": [a, f"{a} {b}"]})
            else:
                plan.append({"docs": [{"id": f"c{client}-{i}", "text": b}, {"id": k, "text": " ".join([a] * 3)}]})
        plans.append(plan)
    return plans


def texts_of(body):
    if "text" in body:
        return [body["text"]]
    if "texts" in body:
        return body["texts"]
    return [d["text"] for d in body["docs"]]


def test_concurrent_clients_all_answered_correctly_then_clean_stop(model_dir):
    plans = make_requests()
    nlp = spacy.load(model_dir)
    all_texts = sorted({t for plan in plans for body in plan for t in texts_of(body)})
    expected = {
        doc.text: [(e.start_char, e.end_char, e.label_, e.text, e._.confidence) for e in doc.ents]
        for doc in nlp.pipe(all_texts)
    }
    assert sum(map(bool, expected.values())) > len(expected) / 2, "the tiny model should find entities"

    answers = [[] for _ in plans]
    failures = []
    args = ["--torch-threads", "1", "--model-workers", "2", "--no-access-log", "--queue-size", "64"]
    with ServerProcess(str(model_dir), args) as server:

        def client(n):
            try:
                with httpx.Client(base_url=server.url, timeout=60) as http:
                    for body in plans[n]:
                        response = http.post("/v1/ents", json=body)
                        answers[n].append((response.status_code, response.json()))
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(repr(error))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(N_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert not any(t.is_alive() for t in threads)
        code = server.stop(signal.SIGTERM, timeout=30)
        log = server.output()
    assert code == 0, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "Application shutdown complete" in log

    n_answers = 0
    for plan, got in zip(plans, answers):
        assert len(got) == len(plan)  # nothing dropped
        for body, (status, answer) in zip(plan, got):
            assert status == 200, answer
            ids = [d["id"] for d in body["docs"]] if "docs" in body else [None] * len(texts_of(body))
            assert [d["id"] for d in answer["docs"]] == ids
            for text, doc in zip(texts_of(body), answer["docs"]):
                want = expected[text]
                assert [(e["start_char"], e["end_char"], e["label"], e["text"]) for e in doc["ents"]] == [
                    w[:4] for w in want
                ]
                assert [e["confidence"] for e in doc["ents"]] == [pytest.approx(w[4], rel=1e-5) for w in want]
            n_answers += 1
    assert n_answers == N_CLIENTS * REQUESTS_PER_CLIENT


def test_serve_benchmark_command_writes_its_section(model_dir, tmp_path):
    """The benchmark command end to end on the tiny model (numbers are not checked, only
    that it runs, the server agreed with nlp.pipe, and the section is written)."""
    data = write_corpus(tmp_path / "data.spacy")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## other\n\nkept\n", encoding="utf8")
    run_python(
        "import sys; from spacy_hybridner.cli import main; sys.argv = ['spacy-hybridner', 'serve-benchmark', "
        f"{str(model_dir)!r}, {str(data)!r}, '--clients', '4', '--repeats', '1', '--latency-requests', '5', "
        f"'--torch-threads', '1', '--model-workers', '2', '--model-workers', '1', "
        f"'--doc-path', {str(doc)!r}, '--title', 'serve (tiny)']; main()",
        timeout=300,
    )
    text = doc.read_text(encoding="utf8")
    assert "## other\n\nkept" in text
    section = text[text.index("## serve (tiny)") :]
    assert "python -m spacy_hybridner serve-benchmark " in section
    assert "| server, 4 clients, 2 model worker(s), torch threads 1 each |" in section
    assert "| server, 4 clients, 1 model worker(s), torch threads 1 each |" in section
    assert "| `nlp.pipe` in process, torch threads 1, batch size 4 |" in section
    assert "differ from `nlp.pipe`'s (last round): 0." in section
    assert "p50 **" in section and "p99 **" in section
