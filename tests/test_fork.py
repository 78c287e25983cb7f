"""Import has no global effects: forked children keep torch's thread count unless a
hybrid_ner component is alive, and nlp.pipe(n_process=2) works after torch has run
multi-threaded in the parent."""

import json

from conftest import TINY_MODEL, run_python

CHILD_THREADS = """
import gc, json, os, torch
torch.set_num_threads(2)

def child_threads():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, str(torch.get_num_threads()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    return int(os.read(read, 16))

import spacy, spacy_hybridner
from spacy.tokens import Span
seen = {"import": child_threads(), "extension_on_import": Span.has_extension("confidence")}
nlp = spacy.blank("en")
nlp.add_pipe("hybrid_ner", config={"model": json.loads(os.environ["TINY_MODEL"])})
seen["component"] = child_threads()
seen["extension_with_component"] = Span.has_extension("confidence")
del nlp
gc.collect()
seen["after"] = child_threads()
print(json.dumps(seen))
"""


def test_children_are_single_threaded_only_while_a_component_is_alive(monkeypatch):
    monkeypatch.setenv("TINY_MODEL", json.dumps(TINY_MODEL))
    seen = json.loads(run_python(CHILD_THREADS).stdout.strip().splitlines()[-1])
    assert seen == {
        "import": 2,
        "extension_on_import": False,
        "component": 1,
        "extension_with_component": True,
        "after": 2,
    }


def test_n_process_2_after_multithreaded_torch_in_the_parent(trained_nlp, tmp_path):
    trained_nlp.to_disk(tmp_path / "model")
    code = (
        "import json, spacy, torch\n"
        "torch.set_num_threads(2)\n"
        "nlp = spacy.load('model')\n"
        "texts = ['Michael Jordan was born in Brooklyn , New York .', 'Apple hired Tim Cook in London .'] * 6\n"
        "single = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)]\n"
        "multi = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, n_process=2, batch_size=3)]\n"
        "print(json.dumps([single == multi, len(multi)]))\n"
    )
    # A hang would end in run_python's timeout: the test fails, it does not time anything.
    out = run_python(code, cwd=tmp_path, timeout=300).stdout.strip().splitlines()[-1]
    assert json.loads(out) == [True, 12]
