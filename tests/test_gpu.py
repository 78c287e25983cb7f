"""Training and prediction on a CUDA GPU against the CPU (issue 16). Skipped where CUDA is
absent: scripts/gpu_check.sh runs it on a GPU machine, and tests/test_gpu_helpers.py
runs the CPU half of every comparison in CI.

- training steps with mixed precision (bfloat16 on compute capability >= 8) learn the
  tiny set, with finite losses, for the plain hash embedding and for the character CNN;
- the CRF's loss and gradients, Viterbi paths, marginals and segment probabilities on
  CUDA tensors equal the CPU ones on the same random inputs;
- the character CNN (its character ids go through cupy) gives the CPU's vectors;
- a pipeline trained and saved on the GPU loads in a process that sees no GPU, with the
  same entities; ``nlp.pipe`` on the GPU gives the CPU's entities for the same saved
  pipeline (bfloat16 on the GPU against float32 on the CPU: confidences to 0.05, and an
  entity of confidence below 0.5 on both sides may differ);
- calibration runs on the GPU; the training logger reads the GPU's peak memory.
"""

import numpy
import pytest
import spacy
import torch
from thinc.api import CupyOps, get_current_ops

from spacy_hybridner.loggers import gpu_peak_mb

from conftest import make_examples
from gpu_parity import (
    TEXTS,
    TINY_CHAR_CNN_MODEL,
    TINY_MIXED_MODEL,
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

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (scripts/gpu_check.sh runs it on one); tests/test_gpu_helpers.py runs the CPU half",
)

# bfloat16 against float32 (or another batch shape in bfloat16): the entities the model is
# sure of are the same, confidences close; one it is unsure of may give way to another.
BF16 = {"abs_tol": 0.05, "min_confidence": 0.5}


def expected_autocast_dtype():
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if bf16 else None  # float16 goes through thinc's autocast instead


@pytest.fixture(scope="module")
def gpu_pipeline(tmp_path_factory):
    """TINY_CHAR_CNN_MODEL trained on the GPU with mixed precision, saved there."""
    with thinc_device(True):
        assert isinstance(get_current_ops(), CupyOps)
        nlp, losses = train_tiny_recording_losses(TINY_CHAR_CNN_MODEL, n_iter=150)
        path = tmp_path_factory.mktemp("gpu_pipeline") / "model"
        nlp.to_disk(path)
        entities = pipe_entities(nlp)
        vectors = char_cnn_vectors(nlp)
    return {"nlp": nlp, "losses": losses, "path": path, "entities": entities, "char_cnn": vectors}


def check_on_gpu(nlp):
    module = encoder_module(nlp)
    assert next(module.parameters()).device.type == "cuda"
    assert module.autocast_dtype == expected_autocast_dtype()
    assert isinstance(nlp.get_pipe("ner").model.ops, CupyOps)


def test_mixed_precision_training_with_character_cnn_learns_on_gpu(gpu_pipeline):
    check_on_gpu(gpu_pipeline["nlp"])
    with thinc_device(True):
        check_learned(gpu_pipeline["nlp"], gpu_pipeline["losses"])


def test_mixed_precision_training_with_hash_embedding_learns_on_gpu():
    with thinc_device(True):
        nlp, losses = train_tiny_recording_losses(TINY_MIXED_MODEL, n_iter=150)
        check_on_gpu(nlp)
        check_learned(nlp, losses)


def test_crf_on_cuda_equals_cpu():
    cpu, gpu = crf_outputs("cpu"), crf_outputs("cuda")
    check_crf_outputs(gpu)
    assert compare_crf_outputs(gpu, cpu) == []


def test_character_cnn_on_gpu_equals_cpu(gpu_pipeline):
    with thinc_device(False):
        cpu = char_cnn_vectors(spacy.load(gpu_pipeline["path"]))
    assert numpy.allclose(gpu_pipeline["char_cnn"], cpu, atol=1e-4)


def test_saved_on_gpu_loads_in_a_cpu_only_process_with_the_same_entities(gpu_pipeline):
    answer = predict_in_cpu_process(gpu_pipeline["path"])
    assert answer["cuda"] is False and answer["device"] == "cpu"
    assert same_entities(answer["entities"], gpu_pipeline["entities"], **BF16) == []


def test_pipe_on_gpu_equals_cpu_for_the_same_saved_pipeline(gpu_pipeline):
    with thinc_device(True):
        on_gpu = spacy.load(gpu_pipeline["path"])
        check_on_gpu(on_gpu)
        gpu = pipe_entities(on_gpu)
        gpu_one_by_one = pipe_entities(on_gpu, batch_size=1)
    with thinc_device(False):
        on_cpu = spacy.load(gpu_pipeline["path"])
        assert next(encoder_module(on_cpu).parameters()).device.type == "cpu"
        cpu = pipe_entities(on_cpu)
    assert same_entities(gpu, gpu_pipeline["entities"], abs_tol=1e-4) == []  # reloaded on the GPU
    assert same_entities(gpu_one_by_one, gpu, **BF16) == []
    assert same_entities(gpu, cpu, **BF16) == []


def test_calibrate_on_gpu_keeps_entities(gpu_pipeline):
    with thinc_device(True):
        nlp = spacy.load(gpu_pipeline["path"])
        before = pipe_entities(nlp, TEXTS[:6])
        result = nlp.get_pipe("ner").calibrate(make_examples(nlp), temperatures=[0.5, 1.0, 2.0])
        after = pipe_entities(nlp, TEXTS[:6])
    assert result["temperature"] in (0.5, 1.0, 2.0)
    assert [[e[:3] for e in doc] for doc in after] == [[e[:3] for e in doc] for doc in before]


def test_training_logger_reads_gpu_peak_memory():
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    assert gpu_peak_mb() >= 64
    del block
