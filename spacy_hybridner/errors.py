"""The messages of the ``hybrid_ner`` component's errors, as spaCy keeps its own
(``spacy.errors.Errors``): format strings, each naming what is wrong and what to do."""


class Errors:
    E001 = "[hybrid_ner] max_predict_words must be at least 1, got {value}."
    E002 = (
        "[hybrid_ner] Cannot add the label '{label}' to '{name}' after it was initialized: its "
        "CRF has one set of tags per label. Add every label before nlp.initialize() "
        "(ner.add_label, or labels in [initialize.components.{name}]), or initialize again to "
        "retrain with the new label."
    )
    E003 = (
        "[hybrid_ner] The training data has an entity with the label '{label}', which the "
        "component '{name}' was not initialized with (its labels: {labels}). Initialize it with "
        "that label: leave labels out of [initialize.components.{name}] so they are read from "
        "the training data, or add it with add_label before nlp.initialize()."
    )
    E004 = (
        "[hybrid_ner] The component '{name}' in {source} was saved by spacy-hybridner 0.1.x, "
        "whose saved format this version ({version}) no longer reads: from 0.2.0 the model "
        "saves the settings it was built with beside its weights and rebuilds itself. Retrain "
        "the pipeline with this version (the same config works once its architecture names "
        "spacy-hybridner.HybridNER.v2 or v1), or load it with spacy-hybridner 0.1.x."
    )
    E005 = (
        "[hybrid_ner] Could not load the weights of '{name}' from {source}: {error}. The file is "
        "damaged or was written for a different model config. Save the pipeline again with "
        "nlp.to_disk, or retrain it."
    )
    E006 = (
        "[hybrid_ner] The weights of '{name}' in {source} hold no CRF although the component has "
        "labels {labels}: the file was saved before the model was initialized. Save the pipeline "
        "again after nlp.initialize or training."
    )
    E007 = (
        "[hybrid_ner] The weights file of '{name}' is missing: {path}. The pipeline folder is "
        "incomplete; copy it again in full, save it again with nlp.to_disk, or retrain it."
    )
