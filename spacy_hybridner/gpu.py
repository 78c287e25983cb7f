"""GPU set-up, in one place: everything that loads a pipeline on a GPU calls
:func:`setup_gpu` first (the command line's commands, and :class:`~spacy_hybridner.annotate.annotator.Annotator`,
which serve's model processes and annotate's workers and Ray actors load through)."""


def setup_gpu(gpu_id: int) -> None:
    """Run thinc (and the PyTorch layers through it) on GPU ``gpu_id`` from now on, with
    ``spacy.require_gpu``; a negative id (-1: the command line's default) leaves the CPU.
    Call it before loading the pipeline: a pipeline loaded earlier keeps its arrays where
    they are.

    gpu_id (int): The GPU's id, or -1 for the CPU.
    Raises ValueError (spaCy's) when the GPU cannot be used (no CUDA device, no cupy).
    """
    if gpu_id >= 0:
        import spacy

        spacy.require_gpu(gpu_id)
