"""Thread policy (spacy_hybridner/threads.py): the package changes no process-wide thread
count that outlasts a call; applications set theirs with use_threads."""

import json

import pytest

from spacy_hybridner.threads import blas_threads, use_threads

from conftest import TINY_MODEL, run_python

COUNTS = """
import json, os
import torch
from threadpoolctl import ThreadpoolController

def counts():
    # torch's threads, and each BLAS library's (a library loaded later, e.g. SciPy's
    # OpenBLAS, starts with the count its environment gives it)
    blas = ThreadpoolController().select(user_api="blas").info()
    return {"torch": torch.get_num_threads(), **{b["filepath"]: b["num_threads"] for b in blas}}

torch.set_num_threads(2)
from threadpoolctl import threadpool_limits
threadpool_limits(limits=2, user_api="blas")
seen = {"start": counts()}
import spacy, spacy_hybridner
seen["import"] = counts()
from spacy.training import Example
nlp = spacy.blank("en")
nlp.add_pipe("hybrid_ner", name="ner", config={"model": json.loads(os.environ["TINY_MODEL"])})
doc = nlp.make_doc("Michael Jordan was born in Brooklyn .")
example = Example.from_dict(doc, {"entities": [(0, 14, "PER"), (27, 35, "LOC")]})
optimizer = nlp.initialize(lambda: [example])
seen["build"] = counts()
for _ in range(3):
    nlp.update([example], sgd=optimizer)
seen["update"] = counts()
nlp("Apple hired Tim Cook in London .")
seen["call"] = counts()
list(nlp.pipe(["Angela Merkel met Google executives in Berlin ."] * 40, batch_size=8))
seen["pipe"] = counts()
print(json.dumps(seen))
"""


def test_the_component_leaves_torch_and_blas_thread_counts_as_it_found_them(monkeypatch):
    """Importing the package, building and training a pipeline, nlp() and nlp.pipe():
    torch's and numpy BLAS's thread counts stay what the program set (prediction limits
    BLAS to one thread for the span of each call only)."""
    monkeypatch.setenv("TINY_MODEL", json.dumps(TINY_MODEL))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = json.loads(run_python(COUNTS).stdout.strip().splitlines()[-1])
    assert seen["start"]["torch"] == 2 and len(seen["start"]) >= 2  # torch and numpy's BLAS
    stages = list(seen.values())
    for before, after in zip(stages, stages[1:]):
        assert {name: after[name] for name in before} == before, seen  # nothing changed
    assert set(stages[-1]) >= set(stages[0])


def test_use_threads_sets_both_pools_and_refuses_zero():
    import torch
    from threadpoolctl import threadpool_limits

    torch_before = torch.get_num_threads()
    with threadpool_limits(user_api="blas"):  # puts the BLAS count back afterwards
        try:
            use_threads(1)
            assert torch.get_num_threads() == 1
            assert blas_threads() in (1, None)
            with pytest.raises(ValueError, match="at least 1"):
                use_threads(0)
        finally:
            torch.set_num_threads(torch_before)
