import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed
from threadpoolctl import threadpool_limits

# Tests run torch and numpy's BLAS (the component's gemm) single-threaded: faster for tiny
# models on 2 cores, and deterministic (the subprocesses of run_python run with one thread
# too; OpenBLAS rounds differently with other thread counts, in the 7th digit).
torch.set_num_threads(1)
threadpool_limits(limits=1, user_api="blas")

ROOT_CONFIG = Path(__file__).parent.parent / "configs" / "hybrid_cpu.cfg"

TRAIN_DATA: List[Tuple[str, List[Tuple[int, int, str]]]] = [
    ("Michael Jordan was born in Brooklyn , New York .", [(0, 14, "PER"), (27, 35, "LOC"), (38, 46, "LOC")]),
    ("Apple hired Tim Cook in London .", [(0, 5, "ORG"), (12, 20, "PER"), (24, 30, "LOC")]),
    ("Angela Merkel met Google executives in Berlin .", [(0, 13, "PER"), (18, 24, "ORG"), (39, 45, "LOC")]),
    ("The weather was nice today .", []),
    ("Microsoft opened an office in Paris .", [(0, 9, "ORG"), (30, 35, "LOC")]),
    ("Barack Obama visited Kenya .", [(0, 12, "PER"), (21, 26, "LOC")]),
]

# A small model that learns TRAIN_DATA in a few dozen updates. Every setting is given:
# spaCy fills the ones left out from the factory's default model (the tuned CPU config).
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


def make_examples(nlp, data=TRAIN_DATA) -> List[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in data]


def ents_of(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def train_tiny(n_iter: int = 100, seed: int = 0, model=None):
    """A blank English pipeline with hybrid_ner trained on TRAIN_DATA."""
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("hybrid_ner", name="ner", config={"model": model or TINY_MODEL})
    examples = make_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(n_iter):
        nlp.update(examples, sgd=optimizer)
    return nlp


@pytest.fixture(scope="session")
def trained_nlp():
    return train_tiny()


@pytest.fixture(scope="session")
def model_dir(trained_nlp, tmp_path_factory):
    """``trained_nlp`` saved with ``to_disk``: a pipeline folder for ``spacy.load``, the
    server, the annotator and the engines."""
    path = tmp_path_factory.mktemp("trained") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT with its WordPiece vocabulary, saved as Hugging Face does."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w.lower() for text, _ in TRAIN_DATA for w in text.split()})
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + [f"##{c}" for c in chars]
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


def run_python(code: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter; raise with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result


def ents_with_confidence(docs):
    return [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in doc.ents] for doc in docs]


def assert_same_entities(got, expected):
    """Entities (lists per doc of ``(start_char, end_char, label, confidence)``) equal, the
    confidences within float32 rounding: they come from other processes, batches or
    thread counts, whose sums may round differently in the last digits."""
    assert [[e[:3] for e in doc] for doc in got] == [[e[:3] for e in doc] for doc in expected]
    flat_got = [e[3] for doc in got for e in doc]
    flat_expected = [e[3] for doc in expected for e in doc]
    assert [c is None for c in flat_got] == [c is None for c in flat_expected]
    assert [c for c in flat_got if c is not None] == pytest.approx(
        [c for c in flat_expected if c is not None], rel=1e-5, abs=1e-6
    )


def reload_and_predict(nlp, texts, tmp_path):
    """Save the pipeline, load it in a fresh interpreter with only `import spacy`, and
    return its entities (with confidences) on the texts."""
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    code = (
        "import json, spacy\n"
        "nlp = spacy.load('model')\n"
        "texts = json.load(open('texts.json'))\n"
        "ents = [[(e.start_char, e.end_char, e.label_, e._.confidence) for e in d.ents] for d in nlp.pipe(texts)]\n"
        "print(json.dumps(ents))\n"
    )
    out = run_python(code, cwd=tmp_path).stdout.strip().splitlines()[-1]
    return [[tuple(e) for e in doc] for doc in json.loads(out)]


def write_corpus(path, data=TRAIN_DATA):
    """TRAIN_DATA as a .spacy file."""
    nlp = spacy.blank("en")
    db = DocBin()
    for text, ents in data:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label) for s, e, label in ents]
        db.add(doc)
    db.to_disk(path)
    return path
