"""Smoke suite of an installed spacy-hybridner wheel (issue 39), run by scripts/wheel_smoke.sh.

Runs with the Python of a fresh virtual environment into which only the built wheel (with
its [serve] extra) was installed, from a temporary working directory outside the repository,
and uses only that installed package and the files it writes itself (plus one shipped
config, given by path). Each step prints ``[python X.Y] step: NAME`` and writes its name to
``.step`` in the working directory, so that a failure names the Python and the step; a
failure prints what the step's commands wrote and exits 1.

    python wheel_smoke.py --config CONFIG --version VERSION
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import traceback
import urllib.request
from pathlib import Path

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
WORK = Path.cwd()

TRAIN_DATA = [
    ("Michael Jordan was born in Brooklyn , New York .", [(0, 14, "PER"), (27, 35, "LOC"), (38, 46, "LOC")]),
    ("Apple hired Tim Cook in London .", [(0, 5, "ORG"), (12, 20, "PER"), (24, 30, "LOC")]),
    ("Angela Merkel met Google executives in Berlin .", [(0, 13, "PER"), (18, 24, "ORG"), (39, 45, "LOC")]),
    ("The weather was nice today .", []),
    ("Microsoft opened an office in Paris .", [(0, 9, "ORG"), (30, 35, "LOC")]),
    ("Barack Obama visited Kenya .", [(0, 12, "PER"), (21, 26, "LOC")]),
]
TEXTS = [text for text, _ in TRAIN_DATA] + ["Tim Cook visited Paris and Berlin ."]

# A model that learns TRAIN_DATA in a few dozen updates (the test suite's TINY_MODEL).
TINY_MODEL = {
    "@architectures": "spacy-hybridner.HybridNER.v2",
    "width": 32,
    "depth": 1,
    "n_heads": 2,
    "ffn_width": 64,
    "lstm_depth": 1,
    "uni_lstm_depth": 0,
    "dropout": 0.0,
    "token_dropout": 0.0,
    "attention_dropout": None,
    "window": 32,
    "stride": 24,
    "tok2vec": {
        "@architectures": "spacy.Tok2Vec.v2",
        "embed": {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": 32,
            "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
            "rows": [500, 100, 200, 200],
            "include_static_vectors": False,
        },
        "encode": {
            "@architectures": "spacy.MaxoutWindowEncoder.v2",
            "width": 32,
            "depth": 1,
            "window_size": 1,
            "maxout_pieces": 2,
        },
    },
}

# `spacy train` of the shipped config, shrunk to a few seconds.
TRAIN_OVERRIDES = {
    "components.ner.model.width": "32",
    "components.ner.model.depth": "1",
    "components.ner.model.n_heads": "2",
    "components.ner.model.ffn_width": "64",
    "components.ner.model.window": "32",
    "components.ner.model.stride": "24",
    "components.ner.model.tok2vec.embed.width": "32",
    "components.ner.model.tok2vec.embed.rows": "[500,100,200,200]",
    "components.ner.model.tok2vec.embed.char_cnn_width": "16",
    "components.ner.model.tok2vec.encode.width": "32",
    "components.ner.model.tok2vec.encode.depth": "1",
    "training.max_steps": "20",
    "training.eval_frequency": "10",
    "nlp.batch_size": "64",
}

# Prints the entities (with confidences) of the texts on stdin, one JSON list per text.
PRINT_ENTS = """
import json, sys
import spacy
texts = json.loads(sys.stdin.read())
nlp = spacy.load(sys.argv[1])
print(json.dumps([[[e.start_char, e.end_char, e.label_, e._.confidence] for e in doc.ents]
                  for doc in nlp.pipe(texts)]))
"""


class StepFailed(Exception):
    pass


STARTED = time.monotonic()


def step(name: str) -> None:
    print(f"[python {PY}] step: {name} (at {time.monotonic() - STARTED:.0f} s)", flush=True)
    (WORK / ".step").write_text(name, encoding="utf8")


def run(args, *, input_text=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run a command; raise StepFailed with everything it wrote if it fails."""
    result = subprocess.run(args, input=input_text, capture_output=True, text=True, timeout=timeout, env=env, cwd=WORK)
    if result.returncode != 0:
        raise StepFailed(
            f"{' '.join(map(str, args))} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def fresh_ents(model: str):
    """The entities of TEXTS from ``spacy.load(model)`` in a fresh interpreter."""
    out = run([sys.executable, "-c", PRINT_ENTS, model], input_text=json.dumps(TEXTS)).stdout
    return json.loads(out.strip().splitlines()[-1])


def same_ents(got, expected, what: str) -> None:
    def key(ents):
        return [[tuple(e[:3]) for e in doc] for doc in ents]

    if key(got) != key(expected):
        raise StepFailed(f"{what}: entities differ\n  got      {key(got)}\n  expected {key(expected)}")
    for doc_got, doc_expected in zip(got, expected):
        for a, b in zip(doc_got, doc_expected):
            if (a[3] is None) != (b[3] is None) or (a[3] is not None and abs(a[3] - b[3]) > 1e-4):
                raise StepFailed(f"{what}: confidences differ: {a} against {b}")


def check_installed(pkg_file: str, version: str, expected_version: str) -> Path:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    pkg_dir = Path(pkg_file).resolve().parent
    if site not in pkg_dir.parents:
        raise StepFailed(f"spacy_hybridner was imported from {pkg_dir}, not from this environment's {site}")
    if version != expected_version:
        raise StepFailed(f"installed version {version}, the wheel's is {expected_version}")
    return pkg_dir


def blank_pipeline(expected_version: str) -> Path:
    """spacy.blank + add_pipe("hybrid_ner") with nothing imported (the entry points register
    the factory), a few updates, save, the same entities from a fresh process; and the
    training corpus of `spacy train`. RETURNS the installed package's folder."""
    code = f"""
import json, sys
import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed
assert "spacy_hybridner" not in sys.modules
fix_random_seed(0)
nlp = spacy.blank("en")
nlp.add_pipe("hybrid_ner", name="ner", config={{"model": json.loads({json.dumps(json.dumps(TINY_MODEL))})}})
import spacy_hybridner
data = json.loads({json.dumps(json.dumps(TRAIN_DATA))})
examples = [Example.from_dict(nlp.make_doc(t), {{"entities": ents}}) for t, ents in data]
optimizer = nlp.initialize(lambda: examples)
for _ in range(60):
    nlp.update(examples, sgd=optimizer)
nlp.to_disk("blank-model")
db = DocBin()
for example in examples * 4:
    db.add(example.reference)
db.to_disk("train.spacy")
db.to_disk("dev.spacy")
texts = json.loads({json.dumps(json.dumps(TEXTS))})
print(json.dumps({{"file": spacy_hybridner.__file__, "version": spacy_hybridner.__version__,
                  "ents": [[[e.start_char, e.end_char, e.label_, e._.confidence] for e in doc.ents]
                           for doc in nlp.pipe(texts)]}}))
"""
    step("spacy.blank + add_pipe('hybrid_ner') from the installed package, update, save")
    out = json.loads(run([sys.executable, "-c", code]).stdout.strip().splitlines()[-1])
    pkg_dir = check_installed(out["file"], out["version"], expected_version)
    if not any(out["ents"]):
        raise StepFailed("the pipeline predicted no entity on its own training texts after 60 updates")
    step("spacy.load of the saved pipeline in a fresh process")
    same_ents(fresh_ents("blank-model"), out["ents"], "spacy.load in a fresh process")
    return pkg_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, data=None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def serve(model: str, pkg_dir: Path, expected) -> None:
    """`serve` from the installed package: the page and every static file it names, byte for
    byte the installed files, and /v1/ents with the entities of a fresh spacy.load."""
    port = free_port()
    log = open(WORK / "serve.log", "w+", encoding="utf8")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spacy_hybridner",
            "serve",
            model,
            "--port",
            str(port),
            "--model-workers",
            "1",
            "--torch-threads",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=WORK,
    )
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.flush()
        return (WORK / "serve.log").read_text(encoding="utf8", errors="replace")

    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise StepFailed(f"serve exited with {proc.returncode} before it was ready:\n{output()}")
            try:
                if get(url + "/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StepFailed(f"serve was not ready after 180 s:\n{output()}")
            time.sleep(0.3)
        status, ctype, body = get(url + "/")
        page = body.decode("utf8")
        if status != 200 or "text/html" not in ctype or "<title>spacy-hybridner</title>" not in page:
            raise StepFailed(f"GET / answered {status} {ctype}:\n{page[:500]}")
        static = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        if not static:
            raise StepFailed(f"the page names no /static/ file:\n{page[:500]}")
        for path in static:
            status, ctype, body = get(url + path)
            installed = (pkg_dir / "serve" / path.lstrip("/")).read_bytes()
            if status != 200 or body != installed:
                raise StepFailed(f"GET {path} answered {status} with {len(body)} bytes, not the installed file")
            print(f"  GET {path}: {status} {ctype}, {len(body)} bytes", flush=True)
        status, _, body = get(url + "/v1/ents", json.dumps({"texts": TEXTS}).encode("utf8"))
        got = [
            [[e["start_char"], e["end_char"], e["label"], e["confidence"]] for e in doc["ents"]]
            for doc in json.loads(body)["docs"]
        ]
        same_ents(got, expected, "POST /v1/ents")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            raise StepFailed(f"serve exited with {code} on SIGTERM:\n{output()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def annotate(model: str, expected) -> None:
    with open(WORK / "input.jsonl", "w", encoding="utf8") as f:
        for i, text in enumerate(TEXTS):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    run([sys.executable, "-m", "spacy_hybridner", "annotate", model, "input.jsonl", "output.jsonl"])
    records = [json.loads(line) for line in (WORK / "output.jsonl").read_text(encoding="utf8").splitlines()]
    if [r["id"] for r in records] != list(range(len(TEXTS))):
        raise StepFailed(f"annotate wrote the ids {[r['id'] for r in records]}")
    got = [[[e["start_char"], e["end_char"], e["label"], e["confidence"]] for e in r["ents"]] for r in records]
    same_ents(got, expected, "annotate")
    if not (WORK / "output.jsonl.manifest.json").exists():
        raise StepFailed("annotate wrote no manifest")


def package(model: str, expected) -> None:
    step("spacy package")
    (WORK / "packages").mkdir(exist_ok=True)
    run([sys.executable, "-m", "spacy", "package", model, "packages", "--name", "smoke", "--version", "0.0.1"])
    sdists = list((WORK / "packages").glob("en_smoke-0.0.1/dist/en_smoke-0.0.1.tar.gz"))
    if not sdists:
        raise StepFailed("spacy package built no packages/en_smoke-0.0.1/dist/en_smoke-0.0.1.tar.gz")
    meta = json.loads((WORK / "packages" / "en_smoke-0.0.1" / "meta.json").read_text(encoding="utf8"))
    if not any(r.startswith("spacy-hybridner") for r in meta.get("requirements", [])):
        raise StepFailed(f"the model package does not require spacy-hybridner: {meta.get('requirements')}")
    step("pip install of the model package, pip check")
    # --no-deps, then pip check: its requirements must be met by what is installed already.
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", str(sdists[0])])
    run([sys.executable, "-m", "pip", "check"])
    step("spacy.load('en_smoke') in a fresh process")
    same_ents(fresh_ents("en_smoke"), expected, "spacy.load('en_smoke')")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True, type=Path, help="a shipped training config")
    parser.add_argument("--version", required=True, help="the wheel's version")
    args = parser.parse_args()
    name = "start"
    try:
        pkg_dir = blank_pipeline(args.version)
        step(f"spacy train {args.config.name} (tiny overrides)")
        overrides = [arg for key, value in TRAIN_OVERRIDES.items() for arg in (f"--{key}", value)]
        run(
            [
                sys.executable,
                "-m",
                "spacy",
                "train",
                str(args.config),
                "--paths.train",
                "train.spacy",
                "--paths.dev",
                "dev.spacy",
                "-o",
                "training",
                *overrides,
            ]
        )
        model = "training/model-best"
        step("spacy.load of the trained pipeline in a fresh process")
        expected = fresh_ents(model)
        step("serve: page, static files and /v1/ents from the installed package")
        serve(model, pkg_dir, expected)
        step("annotate of a JSON Lines file")
        annotate(model, expected)
        package(model, expected)
    except Exception as error:  # noqa: BLE001 - every failure is reported with its step
        name = (WORK / ".step").read_text(encoding="utf8") if (WORK / ".step").exists() else name
        detail = str(error) if isinstance(error, StepFailed) else traceback.format_exc()
        print(f"[python {PY}] {detail}", file=sys.stderr, flush=True)
        print(f"FAILED on Python {PY} at step {name}", file=sys.stderr, flush=True)
        return 1
    print(f"[python {PY}] smoke suite passed in {time.monotonic() - STARTED:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
