#!/bin/sh
# Builder-stage step shared by every services/*/Dockerfile. Reads the build args
# EXTRAS (pip extras, e.g. "cuda"), MODEL_PACK_DIR (a folder of .onnx files in the
# build context to bake in) and MODEL_PACK (its pack name), and leaves everything
# the runtime stage needs in /opt/facepipe (SRC and PREFIX override the paths).
set -eu
src=${SRC:-/src}
prefix=${PREFIX:-/opt/facepipe}
venv=$prefix/venv

python -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --upgrade pip
if [ -n "${EXTRAS:-}" ]; then
  "$pip" install "${src}[${EXTRAS}]"
else
  "$pip" install "$src"
fi

case ",${EXTRAS:-}," in
*,cuda,*)
  # onnxruntime (a base dependency) and onnxruntime-gpu ship the same module and
  # overwrite each other: keep only the GPU build, with CUDA 12 and cuDNN 9 from
  # PyPI so the image needs no CUDA base (the node provides only the driver).
  ort_version=$("$pip" show onnxruntime-gpu | sed -n 's/^Version: //p')
  "$pip" uninstall -y onnxruntime
  "$pip" install --force-reinstall --no-deps "onnxruntime-gpu==$ort_version"
  "$pip" install "onnxruntime-gpu[cuda,cudnn]==$ort_version"
  ;;
esac

mkdir -p "$prefix/models"
if [ -n "${MODEL_PACK_DIR:-}" ]; then
  # `models install` checks that the folder holds a detector and a recognizer and
  # writes the manifest; the pack then lies flat in $prefix/models.
  pack_home=$(mktemp -d)
  FACEPIPE_HOME=$pack_home "$venv/bin/facepipe" models install "${MODEL_PACK:-local}" \
    --from "$src/$MODEL_PACK_DIR"
  cp -R "$pack_home/models/${MODEL_PACK:-local}/." "$prefix/models/"
  rm -rf "$pack_home"
fi
