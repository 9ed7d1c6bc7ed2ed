"""The names of the files in a converted model's folder (``<cache>/models/<name>/``).

They live here, below :mod:`ramcli.models.store`, because each family object names the files its
models cannot work without (``Family.files``) and the store checks those files when it opens a
model: the store asks the families, so the families must not import the store. ``store`` re-exports
every name, so ``store.ENCODER`` keeps working.
"""

from __future__ import annotations

META = "meta.json"
# RAM, RAM++ and Tag2Text
ENCODER = "image_encoder.onnx"
HEAD = "tag_head.onnx"
# The same tag head with its attention rewritten for few tags per image (convert.tag_head.CrossSelf.absorbed):
# re-ranking a search query or applying a new custom tag over stored tokens. Models converted before it
# existed lack it, and the full head does that work instead.
HEAD_FEW = "tag_head_few.onnx"
LABELS = "label_embed.npy"
TAG_LIST = "tag_list.txt"
TAG_LIST_ZH = "tag_list_chinese.txt"
THRESHOLDS = "thresholds.txt"
# The graphs that have int8/fp16 variants: nearly all of the FLOPs. Tag2Text's caption graphs stay fp32
# (onnxruntime's quantiser breaks the shape inference of the decoder step with its key/value cache).
QUANTIZED = (ENCODER, HEAD)
# Tag2Text's captioner
TAG_ENCODER = "tag_encoder.onnx"
DECODER_CROSS = "text_decoder_cross.onnx"
DECODER_STEP = "text_decoder_step.onnx"
VOCAB = "vocab.txt"
# the CLIP text encoder
TEXT_ENCODER = "text_encoder.onnx"
BPE = "bpe_simple_vocab_16e6.txt.gz"
