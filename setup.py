from pathlib import Path

from setuptools import find_packages, setup

about = {}
exec((Path(__file__).parent / "spacy_hybridner" / "about.py").read_text(), about)

setup(
    name="spacy-hybridner",
    version=about["__version__"],
    description="Transformer + BiLSTM + CRF named entity recognition as a spaCy component",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["spacy_hybridner", "spacy_hybridner.*"]),
    package_data={"spacy_hybridner.serve": ["static/*"]},  # the page of `serve`, in non-editable installs too
    # The Pythons that CI tests the built wheel on (scripts/wheel_smoke.sh reads them from the
    # classifiers below, which must name exactly these). 3.10 is the floor of the dependencies:
    # spacy-transformers 1.4 declares Requires-Python >= 3.10, and neither torch 2.13 (the pin of
    # constraints.txt) nor ray 2.60 ([ray]) publishes 3.9 wheels. The cap is the newest Python
    # tested: CI has no 3.14 interpreter yet (the dependencies do publish 3.14 wheels); move it
    # up with a classifier once 3.14 runs there.
    python_requires=">=3.10,<3.14",
    install_requires=[
        "spacy>=3.8,<3.9",
        "thinc>=8.3,<8.4",
        "torch>=2.4",  # torch.cuda.is_bf16_supported(including_emulation=...): PyTorch 2.4 (pytorch#129288)
        "spacy-transformers>=1.4,<1.5",
        "typer>=0.9",
        "numpy",
        "srsly",
        "tqdm>=4.38",
        "threadpoolctl>=3",
    ],
    extras_require={
        "report": ["matplotlib>=3.5", "seqeval>=1.2"],
        "tensorboard": ["tensorboard>=2.10"],
        "serve": ["fastapi>=0.110", "uvicorn[standard]>=0.30.6,<0.56"],
        # annotate --engine ray (Ray Data), and Parquet input/output for either engine
        "ray": ["ray[data]>=2.60", "pyarrow>=17"],
        # the transformer as an ONNX Runtime graph (spacy-hybridner optimize --runtime onnxruntime)
        "onnx": ["onnxruntime>=1.20", "onnx>=1.16"],
        "test": [
            "pytest>=7",
            "matplotlib>=3.5",
            "seqeval>=1.2",
            "ruff>=0.5",
            "mypy>=1.10",
            "tensorboard>=2.10",
            "fastapi>=0.110",
            "uvicorn[standard]>=0.30.6,<0.56",
            "httpx>=0.27",
            "selenium>=4.11",
            "ray[data]>=2.60",
            "pyarrow>=17",
            "onnxruntime>=1.20",
            "onnx>=1.16",
            # property tests of annotate's record path and a schema-driven fuzz of serve's API
            "hypothesis>=6.100",
            "schemathesis>=4.0",
            # scripts/wheel_smoke.sh: build the sdist and the wheel, check their metadata
            "build>=1.2",
            "twine>=5",
        ],
    },
    entry_points={
        "console_scripts": ["spacy-hybridner = spacy_hybridner.cli:main"],
        "spacy_factories": [
            "hybrid_ner = spacy_hybridner.pipeline_component:make_hybrid_ner",
            "hybrid_inference = spacy_hybridner.inference.component:make_hybrid_inference",
        ],
        "spacy_callbacks": [
            "spacy-hybridner.initialize_frozen.v1 = spacy_hybridner.callbacks:initialize_frozen_v1",
            "spacy-hybridner.component_learn_rates.v1 = spacy_hybridner.callbacks:component_learn_rates_v1",
        ],
        "spacy_tokenizers": [
            "spacy-hybridner.BoundedTokenizer.v1 = spacy_hybridner.tokenizer:create_bounded_tokenizer"
        ],
        "spacy_readers": ["spacy-hybridner.GoldSilverCorpus.v1 = spacy_hybridner.readers:gold_silver_corpus"],
        "thinc_schedules": ["spacy-hybridner.warmup_linear_epochs.v1 = spacy_hybridner.schedules:warmup_linear_epochs"],
        "spacy_loggers": [
            "spacy-hybridner.TrainingLogger.v1 = spacy_hybridner.loggers:training_logger_v1",
            "spacy-hybridner.TensorBoardLogger.v1 = spacy_hybridner.loggers:tensorboard_logger_v1",
        ],
        "spacy_architectures": [
            "spacy-hybridner.HybridNER.v1 = spacy_hybridner.architectures:build_hybrid_ner",
            "spacy-hybridner.HybridNER.v2 = spacy_hybridner.architectures:build_hybrid_ner_v2",
            "spacy-hybridner.CharMultiHashEmbed.v1 = spacy_hybridner.architectures:build_char_multi_hash_embed",
            "spacy-hybridner.CharMultiHashEmbed.v2 = spacy_hybridner.architectures:build_char_multi_hash_embed_v2",
            "spacy-hybridner.CharMultiHashEmbed.v3 = spacy_hybridner.architectures:build_char_multi_hash_embed_v3",
        ],
    },
    classifiers=[
        "Framework :: spaCy",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
