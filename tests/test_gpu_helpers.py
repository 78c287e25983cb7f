"""The CPU half of tests/test_gpu.py, and what the GPU check (scripts/gpu_check.sh,
scripts/gpu_wheels.sh) relies on. tests/test_gpu.py compares CUDA against the CPU and
is skipped without a GPU; these tests run the same helpers on the CPU in every CI run,
so that the GPU run does not fail on a typo and each comparison is known to be able to
fail."""

import importlib.util
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy
import pytest
import spacy
import torch

from spacy_hybridner.loggers import gpu_peak_mb, training_logger_v1
from spacy_hybridner.tools.benchmark import benchmark_markdown

from conftest import run_python
from gpu_parity import (
    TEXTS,
    TINY_CHAR_CNN_MODEL,
    char_cnn_vectors,
    check_crf_outputs,
    check_learned,
    compare_crf_outputs,
    crf_outputs,
    encoder_module,
    pipe_entities,
    predict_in_cpu_process,
    same_entities,
    thinc_device,
    train_tiny_recording_losses,
)

ROOT = Path(__file__).parent.parent


def test_crf_outputs_hold_on_cpu_and_the_comparison_sees_a_difference():
    cpu = crf_outputs("cpu")
    check_crf_outputs(cpu)
    assert compare_crf_outputs(crf_outputs("cpu"), cpu) == []
    other = crf_outputs("cpu", seed=1)
    problems = compare_crf_outputs(other, cpu)
    assert any(p.startswith("nll:") for p in problems) and any(p.startswith("tags:") for p in problems)


@pytest.fixture(scope="module")
def cpu_pipeline(tmp_path_factory):
    """TINY_CHAR_CNN_MODEL (mixed precision on, a no-op here) trained on the CPU, saved."""
    with thinc_device(False):
        nlp, losses = train_tiny_recording_losses(TINY_CHAR_CNN_MODEL)
    path = tmp_path_factory.mktemp("cpu_pipeline") / "model"
    nlp.to_disk(path)
    return nlp, losses, path


def test_mixed_precision_char_cnn_pipeline_learns_on_cpu(cpu_pipeline):
    nlp, losses, _ = cpu_pipeline
    check_learned(nlp, losses)
    assert encoder_module(nlp).autocast_dtype is None  # mixed precision is CUDA only


def test_saved_pipeline_loads_in_a_process_without_cuda(cpu_pipeline):
    nlp, _, path = cpu_pipeline
    answer = predict_in_cpu_process(path)
    assert answer["cuda"] is False and answer["device"] == "cpu"
    expected = pipe_entities(nlp)
    assert len(expected) == 2 * len(TEXTS) and any(expected)
    assert same_entities(answer["entities"], expected, abs_tol=1e-5) == []
    # The comparison sees a wrong label and a changed confidence.
    changed = [list(doc) for doc in expected]
    i = next(k for k, doc in enumerate(changed) if doc)
    start, end, label, confidence = changed[i][0]
    changed[i][0] = (start, end, "ORG" if label != "ORG" else "PER", confidence)
    assert same_entities(changed, expected, abs_tol=1e-5)
    changed[i][0] = (start, end, label, confidence - 0.1)
    assert same_entities(changed, expected, abs_tol=0.02)
    # Below min_confidence on both sides, an entity may be missing from one of them.
    unsure = [[(s, e, label, 0.4) for s, e, label, _ in doc] for doc in expected]
    assert same_entities([[] for _ in unsure], unsure, abs_tol=0.05, min_confidence=0.5) == []
    assert same_entities([[] for _ in unsure], unsure, abs_tol=0.05, min_confidence=0.3)


def test_pipe_on_cpu_of_the_saved_pipeline_and_its_character_cnn(cpu_pipeline):
    nlp, _, path = cpu_pipeline
    with thinc_device(False):
        loaded = spacy.load(path)
        assert same_entities(pipe_entities(loaded), pipe_entities(nlp), abs_tol=1e-5) == []
        assert same_entities(pipe_entities(loaded, batch_size=1), pipe_entities(loaded), abs_tol=1e-5) == []
        vectors = char_cnn_vectors(loaded)
    assert vectors.shape == (sum(len(nlp.make_doc(t)) for t in TEXTS), 16)
    assert numpy.array_equal(vectors, char_cnn_vectors(nlp))


def test_hybrid_gpu_and_spacy_ner_configs_need_no_spacy_transformers():
    """The GPU machine gets spaCy and thinc as wheels but not spacy-transformers (nor
    its transformers 4.x): the package, hybrid_gpu and spacy_ner must do without."""
    code = f"""
import importlib.abc, importlib.metadata, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("spacy_transformers", "spacy_alignments", "transformers"):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
HIDDEN = {{"spacy-transformers", "spacy-alignments", "transformers"}}
kept = importlib.metadata.EntryPoints(
    ep for dist in importlib.metadata.distributions() if dist.metadata["Name"] not in HIDDEN
    for ep in dist.entry_points
)
importlib.metadata.entry_points = lambda **select: kept.select(**select) if select else kept
sys.path.insert(0, {str(Path(__file__).parent)!r})
import spacy
import spacy_hybridner
from spacy.util import load_config, load_model_from_config
from conftest import make_examples
for name in ("hybrid_gpu", "spacy_ner"):
    config = load_config({str(ROOT / "configs")!r} + f"/{{name}}.cfg")
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    losses = nlp.update(examples, sgd=optimizer)
    print(name, nlp.pipe_names, sorted(losses))
print("loaded:", sorted(m for m in sys.modules if "transformers" in m))
"""
    out = run_python(code).stdout
    assert "hybrid_gpu ['ner'] ['ner']" in out and "spacy_ner ['tok2vec', 'ner'] ['ner', 'tok2vec']" in out
    assert "loaded: []" in out


def test_training_logger_writes_gpu_peak_only_where_cuda_was_used(tmp_path):
    # In CI torch is imported and CUDA never initialised; on the GPU machine this file
    # runs after tests/test_gpu.py, in the same process, with CUDA initialised.
    used_cuda = torch.cuda.is_initialized()
    assert (gpu_peak_mb() is not None) == used_cuda
    nlp = spacy.blank("en")
    log = tmp_path / "log.jsonl"
    log_step, finalize = training_logger_v1(path=str(log))(nlp, stdout=io.StringIO())
    log_step(
        {
            "epoch": 0,
            "step": 10,
            "seconds": 3,
            "words": 100,
            "score": 0.5,
            "other_scores": {"ents_f": 0.5},
            "losses": {"ner": 1.0},
            "checkpoints": [],
        }
    )
    finalize()
    record = json.loads(log.read_text().splitlines()[0])
    assert record["step"] == 10 and record["seconds"] == 3
    assert ("gpu_peak_mb" in record) == used_cuda


def benchmark_row(name, peak_gpu_mb=None):
    return {
        "name": name,
        "p": 0.8,
        "r": 0.7,
        "f": 0.75,
        "per_type_f": {"PER": 0.9},
        "words_per_second": 1000.0,
        "best_dev_f": 0.76,
        "seconds_to_best": 90.0,
        "steps_to_best": 400,
        "peak_rss_mb": 2000.0,
        "model_mb": 20.0,
        "train_command": "python -m spacy train x",
        "peak_gpu_mb": peak_gpu_mb,
    }


def test_benchmark_table_has_a_gpu_memory_column_only_with_gpu_figures():
    common = dict(corpus="c", command="cmd", budget_s=60, baseline="spacy_ner", gpu_id=-1)
    text = benchmark_markdown([benchmark_row("spacy_ner"), benchmark_row("hybrid_gpu")], **common)
    assert "peak GPU memory" not in text
    text = benchmark_markdown([benchmark_row("spacy_ner", 900.4), benchmark_row("hybrid_gpu", 1234.6)], **common)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.endswith("| peak GPU memory (MiB) |")
    assert next(line for line in text.splitlines() if line.startswith("| hybrid_gpu")).endswith("| 1,235 |")


# --- scripts/gpu_wheel_tools.py ------------------------------------------------------------
def wheel_tools():
    spec = importlib.util.spec_from_file_location("gpu_wheel_tools", ROOT / "scripts" / "gpu_wheel_tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_wheel(path: Path, name: str, requires, files=None) -> Path:
    dist = f"{name}-1.0.dist-info"
    files = dict(files or {}, **{f"{name}/__init__.py": b""})
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files[f"{dist}/METADATA"] = metadata.encode()
    tools = wheel_tools()
    record = "".join(f"{n},{tools._record_hash(d)},{len(d)}\n" for n, d in files.items()) + f"{dist}/RECORD,,\n"
    wheel = path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr(f"{dist}/RECORD", record)
    return wheel


def test_wheel_check_names_requirements_neither_carried_nor_on_the_machine(tmp_path):
    write_wheel(tmp_path, "alpha", ["beta>=1", "numpy", "gamma; python_version < '3.8'", "delta; extra == 'x'"])
    write_wheel(tmp_path, "beta", ["typing-extensions>=4", "zeta_pkg"])
    missing = wheel_tools().missing_requirements(tmp_path, ["numpy", "typing_extensions"])
    assert missing == ["beta: zeta_pkg"]
    assert wheel_tools().missing_requirements(tmp_path, ["numpy", "typing_extensions", "Zeta.Pkg"]) == []


def test_strip_wheel_drops_debug_sections_and_rewrites_record(tmp_path):
    """An extension module with a debug section (added with objcopy to a copy of a real
    one) loses it; RECORD gets the new hash and size, and the rest is unchanged."""
    objcopy = shutil.which("objcopy")
    assert objcopy is not None, "binutils (objcopy, strip) is needed: apt-get install binutils"
    import numpy.random

    source = next(Path(numpy.random.__file__).parent.glob("*.so"))
    debug = tmp_path / "debug.bin"
    debug.write_bytes(b"\x00" * 200_000)
    so = tmp_path / "module.so"
    subprocess.run([objcopy, "--add-section", f".debug_info={debug}", str(source), str(so)], check=True)
    wheel = write_wheel(tmp_path, "pkg", [], {"pkg/module.so": so.read_bytes(), "pkg/data.txt": b"data"})
    tools = wheel_tools()
    assert tools.strip_wheel(wheel) > 0
    with zipfile.ZipFile(wheel) as z:
        stripped = z.read("pkg/module.so")
        lines = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
        record = {line.split(",")[0]: line.split(",")[1:] for line in lines}
        assert z.read("pkg/data.txt") == b"data"
    assert b".debug_info" not in stripped and stripped[:4] == b"\x7fELF"
    assert record["pkg/module.so"] == [tools._record_hash(stripped), str(len(stripped))]
    assert tools.strip_wheel(wheel) == 0  # nothing left to strip: untouched


def test_gpu_report_agreement_of_two_predictions():
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "scripts" / "gpu_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    gpu = [[(0, 5, "PER", 0.9), (10, 15, "LOC", 0.8)], [], [(3, 7, "ORG", None)]]
    cpu = [[(0, 5, "PER", 0.85), (10, 15, "ORG", 0.6)], [], [(3, 7, "ORG", None)]]
    agreement = report.entity_agreement(gpu, cpu)
    assert agreement["identical_docs"] == 2 and agreement["entities_gpu"] == agreement["entities_cpu"] == 3
    assert agreement["f1"] == pytest.approx(2 / 3)
    assert agreement["max_confidence_difference"] == pytest.approx(0.05)


def test_gpu_scripts_parse():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        result = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
