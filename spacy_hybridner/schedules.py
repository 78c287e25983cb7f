"""Learning-rate schedules sized in epochs of the training data.

spaCy's ``warmup_linear.v1`` counts warm-up and total in optimizer steps, so a schedule
written for one corpus, batch size or machine (20,000 steps for a GPU) is wrong for another:
on a CPU the run ends while the rate is still near its peak. ``warmup_linear_epochs.v1``
takes epochs instead and counts the steps of one epoch by running the config's own batcher
over the training documents once, when training takes its second step's rate (so a config
resolves, e.g. in ``spacy debug config``, before its data exists).
"""

from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from spacy.tokens import DocBin
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import warmup_linear


def steps_per_epoch(train_path: Union[str, Path], batcher: Callable[[Iterable], Iterator]) -> int:
    """Number of batches (optimizer steps) that ``batcher`` makes of the documents in the
    ``.spacy`` file or folder ``train_path``: one epoch of ``spacy train``. The training loop
    shuffles before batching, so an epoch's count can differ from this by a batch or two.
    """
    path = Path(train_path)
    files = sorted(path.rglob("*.spacy")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise ValueError(
            f"warmup_linear_epochs: no training data at '{train_path}': set [paths] train "
            "(or --paths.train) to the .spacy file the schedule is sized for"
        )
    vocab = Vocab()
    docs = [doc for f in files for doc in DocBin().from_disk(f).get_docs(vocab)]
    return max(1, sum(1 for _ in batcher(docs)))


@registry.schedules("spacy-hybridner.warmup_linear_epochs.v1")
def warmup_linear_epochs(
    initial_rate: float,
    warmup_epochs: float,
    total_epochs: float,
    train_path: Optional[str],
    batcher: Callable[[Iterable], Iterator],
) -> Iterable[float]:
    """``warmup_linear`` with warm-up and total length in epochs of the training data.

    initial_rate (float): the peak rate, reached after ``warmup_epochs``.
    warmup_epochs (float): linear warm-up from 0, in epochs (0.5: half an epoch).
    total_epochs (float): the rate falls linearly to 0 at the end of this epoch; pair it
        with ``[training] max_epochs`` so that training ends there.
    train_path (str): the training ``.spacy`` data (``${paths.train}``).
    batcher: the training batcher (``${training.batcher}``), used once to count an
        epoch's steps.
    RETURNS (Iterable[float]): the rate for each step.
    """
    if not 0 <= warmup_epochs < total_epochs:
        raise ValueError(
            f"warmup_linear_epochs: warmup_epochs ({warmup_epochs}) must be at least 0 and "
            f"less than total_epochs ({total_epochs})"
        )
    return _warmup_linear_epochs(initial_rate, warmup_epochs, total_epochs, train_path, batcher)


def _warmup_linear_epochs(
    initial_rate: float,
    warmup_epochs: float,
    total_epochs: float,
    train_path: Optional[str],
    batcher: Callable[[Iterable], Iterator],
) -> Iterator[float]:
    """The schedule's rates, reading the training data only when the second rate is asked
    for: the optimizer takes the first when it is built (``spacy debug config`` and
    ``spacy train`` resolving the config), training takes the rest. The first rate needs
    no data: 0 with a warm-up (which then lasts at least one step), else ``initial_rate``."""
    yield 0.0 if warmup_epochs > 0 else initial_rate
    if train_path is None:
        raise ValueError(
            "warmup_linear_epochs needs the training data to size an epoch: set [paths] train (or --paths.train)"
        )
    n = steps_per_epoch(train_path, batcher)
    warmup_steps = max(1, round(warmup_epochs * n)) if warmup_epochs > 0 else 0
    rates = warmup_linear(initial_rate, warmup_steps=warmup_steps, total_steps=round(total_epochs * n))
    next(rates)  # step 0, given above
    yield from rates
