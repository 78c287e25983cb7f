"""Training corpora for distillation: gold data mixed with silver data (a teacher's
annotations of unlabeled text).

``spacy-hybridner.GoldSilverCorpus.v1`` reads both with spaCy's own ``Corpus`` and yields
their examples shuffled together. The silver part can be cut to a fraction of the silver
corpus (to measure what more text does), drawn to a ratio of silver to gold words, and
weighted: ``hybrid_ner`` multiplies each example's loss by ``doc.user_data[WEIGHT_KEY]`` of
its reference (1.0 when absent). Where the teacher stored its tag marginals, a share
``soft_weight`` of a silver example's loss is taken against them (soft targets) instead of
against the teacher's entities. The keys and the loss live in ``distill``; other components
ignore weights and marginals. Nothing is read until training starts (``spacy debug config``
validates a config whose data is not there yet).

spaCy's training loop reads a corpus once when ``max_epochs >= 0`` and shuffles that list
every epoch, so the silver sample is drawn once per run; with ``max_epochs = -1`` (streaming)
it is drawn anew every epoch.
"""

import random
from pathlib import Path
from typing import Iterator, List, Optional, Union

from spacy.training import Corpus, Example
from spacy.util import registry

from .distill import MARGINALS_KEY, SOFT_WEIGHT_KEY, WEIGHT_KEY, soften

#: The seed of the silver subset, fixed so that a smaller ``silver_fraction`` takes a
#: subset of a larger one, whatever the training seed.
SUBSET_SEED = 0


def _n_words(examples: List[Example]) -> int:
    return sum(len(eg.reference) for eg in examples)


class GoldSilverCorpus:
    """Gold and silver examples, shuffled together (see the module's docstring)."""

    def __init__(
        self,
        gold: Union[str, Path],
        silver: Union[str, Path],
        *,
        silver_fraction: float = 1.0,
        silver_ratio: Optional[float] = None,
        silver_weight: float = 1.0,
        soft_weight: float = 0.0,
        soft_temperature: float = 1.0,
        max_length: int = 0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= silver_fraction <= 1.0:
            raise ValueError(f"GoldSilverCorpus: silver_fraction must be between 0 and 1, not {silver_fraction}")
        if silver_ratio is not None and silver_ratio < 0:
            raise ValueError(f"GoldSilverCorpus: silver_ratio must be 0 or more (or null: all), not {silver_ratio}")
        if silver_weight <= 0:
            raise ValueError(f"GoldSilverCorpus: silver_weight must be positive, not {silver_weight}")
        if not 0.0 <= soft_weight <= 1.0:
            raise ValueError(f"GoldSilverCorpus: soft_weight must be between 0 and 1, not {soft_weight}")
        if soft_temperature <= 0:
            raise ValueError(f"GoldSilverCorpus: soft_temperature must be positive, not {soft_temperature}")
        self.gold_path = Path(gold)
        self.silver_path = Path(silver)
        self.max_length = max_length
        self.silver_fraction = silver_fraction
        self.silver_ratio = silver_ratio
        self.silver_weight = silver_weight
        self.soft_weight = soft_weight
        self.soft_temperature = soft_temperature
        self.rng = random.Random(seed)

    def silver_subset(self, silver: List[Example]) -> List[Example]:
        """The first ``silver_fraction`` of the silver examples in a fixed random order."""
        order = list(range(len(silver)))
        random.Random(SUBSET_SEED).shuffle(order)
        keep = round(len(silver) * self.silver_fraction)
        return [silver[i] for i in sorted(order[:keep])]

    def draw(self, silver: List[Example], gold_words: int) -> List[Example]:
        """``silver_ratio`` × ``gold_words`` words of silver examples, drawn without
        replacement while they last (the whole subset, again, when the ratio asks for more);
        all of them when the ratio is None."""
        if self.silver_ratio is None or not silver:
            return list(silver)
        target = self.silver_ratio * gold_words
        drawn: List[Example] = []
        words = 0
        while words < target:
            pool = list(silver)
            self.rng.shuffle(pool)
            for eg in pool:
                if words >= target:
                    break
                drawn.append(eg)
                words += len(eg.reference)
        return drawn

    def _corpus(self, name: str, path: Path) -> Corpus:
        if not path.exists():
            option = "train" if name == "gold" else "silver"
            raise ValueError(
                f"GoldSilverCorpus: the {name} corpus '{path}' does not exist: set [paths] "
                f"{option} (or --paths.{option}) to a .spacy file or a folder of them"
                + (
                    " (the output of `python -m spacy_hybridner annotate TEACHER TEXT FOLDER --output-format docbin`)"
                    if name == "silver"
                    else ""
                )
            )
        return Corpus(path, max_length=self.max_length)

    def __call__(self, nlp) -> Iterator[Example]:
        gold = list(self._corpus("gold", self.gold_path)(nlp))
        silver = (
            self.silver_subset(list(self._corpus("silver", self.silver_path)(nlp))) if self.silver_fraction > 0 else []
        )
        if self.silver_fraction > 0 and not silver:
            raise ValueError(
                f"GoldSilverCorpus: no silver documents in '{self.silver_path}': annotate unlabeled "
                "text with the teacher into it first (DocBin output), or set silver_fraction = 0"
            )
        silver = self.draw(silver, _n_words(gold))
        if self.soft_weight > 0 and silver and not any(MARGINALS_KEY in eg.reference.user_data for eg in silver):
            raise ValueError(
                f"GoldSilverCorpus: soft_weight is {self.soft_weight} but the silver documents in "
                f"'{self.silver_path}' have no teacher marginals: annotate with --marginals (a hybrid_ner "
                "teacher), or set soft_weight = 0 for hard labels"
            )
        for eg in {id(eg): eg for eg in silver}.values():  # a drawn example may occur twice
            data = eg.reference.user_data
            if self.silver_weight != 1.0:
                data[WEIGHT_KEY] = self.silver_weight
            if self.soft_weight > 0 and MARGINALS_KEY in data:
                data[SOFT_WEIGHT_KEY] = self.soft_weight
                data[MARGINALS_KEY] = soften(data[MARGINALS_KEY], self.soft_temperature)
        examples = gold + silver
        self.rng.shuffle(examples)
        yield from examples


@registry.readers("spacy-hybridner.GoldSilverCorpus.v1")
def gold_silver_corpus(
    gold: Union[str, Path],
    silver: Union[str, Path],
    silver_fraction: float = 1.0,
    silver_ratio: Optional[float] = None,
    silver_weight: float = 1.0,
    soft_weight: float = 0.0,
    soft_temperature: float = 1.0,
    max_length: int = 0,
    seed: int = 0,
) -> GoldSilverCorpus:
    """Gold examples (``gold``: a .spacy file or folder) and silver examples (``silver``,
    e.g. the DocBin folder written by ``annotate``) shuffled together.

    silver_fraction (float): Use this share of the silver documents (a fixed random subset,
        nested: 0.25 is inside 0.5); 0 trains on gold only.
    silver_ratio (Optional[float]): Silver words per gold word in the data of a run, drawn
        from the subset; null: all of the subset once.
    silver_weight (float): Loss weight of a silver example for ``hybrid_ner`` (gold: 1).
    soft_weight (float): For silver documents with the teacher's tag marginals
        (``annotate --marginals``): the share of their loss taken against those marginals
        (``CRF.soft_loss``), the rest against the teacher's entities; 0: entities only.
    soft_temperature (float): Flatten (above 1) or sharpen (below 1) the marginals first.
    max_length (int): As spaCy's ``Corpus``: split longer documents into sentences.
    seed (int): Seed of the draws and of the shuffle.
    """
    return GoldSilverCorpus(
        gold,
        silver,
        silver_fraction=silver_fraction,
        silver_ratio=silver_ratio,
        silver_weight=silver_weight,
        soft_weight=soft_weight,
        soft_temperature=soft_temperature,
        max_length=max_length,
        seed=seed,
    )
