#!/bin/sh
# "Use your own data", end to end on a folder and an ONNX cloud hetero did not write (README). Run from the
# repository root after `make demo` (it uses .venv); OUT and EPOCHS may be set: sh docs/examples/own_data.sh
set -eu
OUT=${OUT:-runs/own}
EPOCHS=${EPOCHS:-30}
PATH="$(pwd)/.venv/bin:$PATH"

# 1. What you have: labelled images (root/<class>/*.png) and your cloud model (ONNX, output not normalised).
python docs/examples/own_data.py "$OUT"

# 2. Your cloud becomes the space: its preprocessing declared, L2 added in the graph; space id = sha256 of the file.
hetero cloud import "$OUT/catalogue.onnx" --size 32 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
    --normalize --out "$OUT/cloud"

# 3. A config for your data: 4 whole classes held out (queries and gallery), the cloud's dim.
cat > "$OUT/own.toml" <<TOML
[data]
dataset = "folder"
path = "$OUT/images"
image_size = 32
heldout_classes = 4

[space]
dim = 16

[edge]
epochs = $EPOCHS
loss_weights = { classification = 1.0, bct = 1.0, regression_cosine = 1.0 }
TOML

# 4. Train an edge into your cloud's space (BCT on prototypes from its embeddings + regression), export, verify.
hetero train edge --config "$OUT/own.toml" --cloud "$OUT/cloud" --out "$OUT/edge"
hetero export --config "$OUT/own.toml" --checkpoint "$OUT/edge" --out "$OUT/export" --formats onnx,tflite \
    --precisions fp32
hetero verify --config "$OUT/own.toml" --cloud "$OUT/cloud" --candidate "edge.onnx=$OUT/export/onnx-fp32" \
    --candidate "edge.tflite=$OUT/export/tflite-fp32" --out "$OUT"

# 5. Embed your catalogue with the cloud into resumable shards and a faiss index (exact at this size).
hetero embed "$OUT/images" --unit "$OUT/cloud" --out "$OUT/gallery" --index auto
