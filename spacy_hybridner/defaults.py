"""The ``hybrid_ner`` factory's default model: the one source of the component's defaults
(``HybridNER.v2`` itself has none, as spaCy's own architectures)."""

from thinc.api import Config

from .modules import CRF_BATCH_TOKENS, ENCODER_BATCH_TOKENS

# The tuned CPU default: the [components.ner.model] block of configs/hybrid_cpu.cfg
# (tests/test_defaults.py checks that the two agree); the batch bounds named in modules.
DEFAULT_HYBRID_NER_MODEL = f"""
[model]
@architectures = "spacy-hybridner.HybridNER.v2"
width = 128
depth = 2
n_heads = 4
ffn_width = 256
lstm_depth = 1
uni_lstm_depth = 0
dropout = 0.2
token_dropout = 0.1
attention_dropout = 0.0
window = 256
stride = 192
mixed_precision = false
grad_scaler_config = {{}}
encoder_batch_tokens = {ENCODER_BATCH_TOKENS}
crf_batch_tokens = {CRF_BATCH_TOKENS}
nO = null

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "spacy-hybridner.CharMultiHashEmbed.v3"
width = 96
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [20000, 5000, 10000, 5000]
include_static_vectors = false
nM = 16
nC = 8
word_dropout_rate = 0.5
char_cnn_width = 64

[model.tok2vec.encode]
@architectures = "spacy.MaxoutWindowEncoder.v2"
width = 96
depth = 2
window_size = 1
maxout_pieces = 3
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_HYBRID_NER_MODEL)["model"]
