"""The two Python steps of scripts/gpu_check.sh.

``versions``: what the machine has (Python, torch and its CUDA, the GPU, cupy, spaCy,
thinc, ...), whether the installed requirements of spaCy, thinc and this package are
met, and whether spaCy finds ``hybrid_ner`` through its entry point. Written as JSON.

``summary``: one JSON file with everything the run found: those versions, each phase's
exit code and seconds, the pytest counts, the benchmark rows (test P/R/F, words/s, time
to best dev F, peak GPU memory in training) or, when the benchmark stopped early, what
its trainings left; then, measured here, the peak GPU memory of ``nlp.pipe`` over test
documents for each trained pipeline, and how far the entities of ``hybrid_gpu`` on the
GPU agree with the same saved pipeline's on the CPU. Runs on a CPU too (``--gpu-id -1``:
the "GPU" half then runs on the CPU as well, a rehearsal of the code).

    python scripts/gpu_report.py versions --gpu-id 0 --output versions.json
    python scripts/gpu_report.py summary --gpu-id 0 --work /tmp/gpu_check --results $OUT --data .gpudata/conll03
"""

import argparse
import gc
import json
import platform
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

MODELS = ("hybrid_gpu", "spacy_ner")


def requirement_problems(names: List[str]) -> List[str]:
    """Installed requirements of the named distributions that are missing or of a
    version outside their specifier (extras left out)."""
    from packaging.requirements import Requirement

    problems = []
    for name in names:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                have = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {requirement}: not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {requirement}: {have} installed")
    return problems


def versions(gpu_id: int) -> Dict:
    """What the machine has; see the module docstring."""
    info: Dict = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (
        "torch",
        "cupy-cuda13x",
        "cupy-cuda12x",
        "spacy",
        "thinc",
        "numpy",
        "pydantic",
        "typer",
        "click",
        "typing-extensions",
        "spacy-hybridner",
        "spacy-transformers",
        "transformers",
        "pytest",
    ):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    try:
        import torch
    except ImportError as e:  # reported; the tests and trainings will say the same
        info["torch_error"] = repr(e)
        return info
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if gpu_id >= 0 and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(gpu_id)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(including_emulation=False),
        }
        try:
            import cupy

            info["cupy_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
            import cupy.cublas  # noqa: F401  thinc needs it (gradient clipping): without it, no GPU

            info["cupy_cublas"] = True
        except Exception as e:  # reported, not fatal: spaCy's own check below says more
            info["cupy_error"] = repr(e)
    import spacy
    from thinc.util import has_cupy_gpu

    info["thinc_has_cupy_gpu"] = has_cupy_gpu
    info["requirement_problems"] = requirement_problems(["spacy", "thinc", "weasel", "pydantic", "spacy-hybridner"])
    nlp = spacy.blank("en")
    nlp.add_pipe("hybrid_ner")  # through the spacy_factories entry point
    info["hybrid_ner_factory"] = True
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
        info["spacy_require_gpu"] = True
    return info


def pytest_counts(path: Path) -> Optional[Dict]:
    if not path.exists():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def partial_rows(bench_dir: Path) -> List[Dict]:
    """What each training left when the benchmark did not finish: best dev F and when,
    and the test scores if ``spacy evaluate`` ran."""
    rows = []
    for name in MODELS:
        out = bench_dir / name
        if not out.exists():
            continue
        row: Dict = {"name": name, "complete": False, "model_best": (out / "model-best").exists()}
        log = out / "log.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        if records:
            best = max(records, key=lambda r: r["score"])
            row.update(
                best_dev_f=best["score"],
                seconds_to_best=best["seconds"],
                steps_to_best=best["step"],
                peak_gpu_mb=max((r["gpu_peak_mb"] for r in records if "gpu_peak_mb" in r), default=None),
            )
        scores = out / "test_scores.json"
        if scores.exists():
            s = json.loads(scores.read_text())
            row.update(p=s["ents_p"], r=s["ents_r"], f=s["ents_f"])
        rows.append(row)
    return rows


def entity_agreement(a: List[List[tuple]], b: List[List[tuple]]) -> Dict:
    """How far two predictions of the same docs agree: identical docs, entity-level F1
    of one against the other, largest confidence difference on shared entities."""
    spans_a = {(i, *e[:3]) for i, doc in enumerate(a) for e in doc}
    spans_b = {(i, *e[:3]) for i, doc in enumerate(b) for e in doc}
    shared = spans_a & spans_b
    conf_a = {(i, *e[:3]): e[3] for i, doc in enumerate(a) for e in doc}
    conf_b = {(i, *e[:3]): e[3] for i, doc in enumerate(b) for e in doc}
    diffs = [abs(conf_a[k] - conf_b[k]) for k in shared if conf_a[k] is not None and conf_b[k] is not None]
    total = len(spans_a) + len(spans_b)
    return {
        "docs": len(a),
        "identical_docs": sum([e[:3] for e in x] == [e[:3] for e in y] for x, y in zip(a, b)),
        "entities_gpu": len(spans_a),
        "entities_cpu": len(spans_b),
        "f1": 2 * len(shared) / total if total else 1.0,
        "max_confidence_difference": max(diffs) if diffs else None,
    }


def predict_measures(model: Path, texts: List[str], gpu_id: int, batch_size: int) -> Dict:
    """Peak GPU memory (``torch.cuda.max_memory_allocated``, cupy's arrays included
    through the PyTorch allocator) and words/s of loading the pipeline and piping the
    texts on the GPU; and its entities there. On ``gpu_id`` -1 the same on the CPU."""
    import spacy
    import torch
    from thinc.api import set_gpu_allocator

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
        set_gpu_allocator("pytorch")
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        spacy.require_cpu()
    nlp = spacy.load(model)
    start = time.time()
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.time() - start
    result = {
        "docs": len(docs),
        "words": sum(len(d) for d in docs),
        "seconds": seconds,
        "entities": [
            [(e.start_char, e.end_char, e.label_, getattr(e._, "confidence", None)) for e in d.ents] for d in docs
        ],
    }
    if gpu_id >= 0:
        torch.cuda.synchronize()
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu_mb_before_load"] = before / 2**20
    del nlp, docs
    gc.collect()
    return result


def summary(args: argparse.Namespace) -> Dict:
    """Everything the run found; see the module docstring."""
    work, results = Path(args.work), Path(args.results)
    out: Dict = {"command": args.command, "gpu_id": args.gpu_id}
    versions_path = work / "versions.json"
    out["versions"] = json.loads(versions_path.read_text()) if versions_path.exists() else None
    phases_path = work / "phases.tsv"
    out["phases"] = [
        dict(zip(("phase", "exit", "seconds"), line.split("\t")))
        for line in (phases_path.read_text().splitlines() if phases_path.exists() else [])
        if line.strip()
    ]
    out["pytest"] = pytest_counts(results / "pytest.xml")
    bench_dir = work / "benchmark" / args.corpus
    rows_path = bench_dir / "benchmark.json"
    out["benchmark"] = json.loads(rows_path.read_text()) if rows_path.exists() else partial_rows(bench_dir)
    for name in MODELS:
        log = bench_dir / name / "log.jsonl"
        if log.exists():
            shutil.copy(log, results / f"{name}.log.jsonl")
    import spacy
    from spacy.tokens import DocBin

    test_path = Path(args.data) / "test.spacy"
    texts = [doc.text for doc in DocBin().from_disk(test_path).get_docs(spacy.blank("en").vocab)][: args.n_docs]
    out["predict"] = {}
    for name in MODELS:
        model = bench_dir / name / "model-best"
        if not model.exists():
            continue
        try:
            measured = predict_measures(model, texts, args.gpu_id, args.batch_size)
            entities = measured.pop("entities")
            out["predict"][name] = measured
            if name == "hybrid_gpu":
                on_cpu = predict_measures(model, texts[: args.n_cpu_docs], -1, args.batch_size)
                out["predict"]["hybrid_gpu_vs_cpu"] = entity_agreement(
                    entities[: args.n_cpu_docs], on_cpu.pop("entities")
                )
        except Exception as e:  # recorded: the rest of the summary still gets written
            out["predict"][name] = {"error": repr(e)}
    return out


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    v = sub.add_parser("versions")
    v.add_argument("--gpu-id", type=int, default=0)
    v.add_argument("--output", required=True)
    s = sub.add_parser("summary")
    s.add_argument("--gpu-id", type=int, default=0)
    s.add_argument("--work", required=True, help="scripts/gpu_check.sh's WORK folder")
    s.add_argument("--results", required=True, help="Folder that gets summary.json and the training logs")
    s.add_argument("--data", required=True, help="Folder with test.spacy")
    s.add_argument("--corpus", default="conll03-gpu", help="The benchmark's --corpus")
    s.add_argument("--n-docs", type=int, default=231, help="Test documents piped for peak memory")
    s.add_argument("--n-cpu-docs", type=int, default=40, help="Of those, how many are also piped on the CPU")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--command", default="", help="The command that ran the check, recorded as given")
    args = parser.parse_args(argv)
    if args.step == "versions":
        info = versions(args.gpu_id)
        Path(args.output).write_text(json.dumps(info, indent=2))
        print(json.dumps(info, indent=2))
        return 0
    result = summary(args)
    path = Path(args.results) / "summary.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}, indent=2))
    print(f"Written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
