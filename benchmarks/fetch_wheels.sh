#!/usr/bin/env bash
# Fetch, on a machine with a package index, the wheels that an offline GPU machine with PyTorch,
# transformers, peft and accelerate lacks for benchmarks/gpu_checks.sh (MEDTUNE_WHEELS=DIR):
#
#   bash benchmarks/fetch_wheels.sh DIR [PYTHON_VERSION]     # default 3.12, manylinux x86_64
#
# 7b stage: bitsandbytes. kernels stage: liger-kernel (optional: Liger joins the comparison).
# demo stage: datasets (with dill, multiprocess), nltk (with defusedxml), rouge-score, bert-score;
# datasets also wants pyarrow >= 24, which is 40 MB more and left out (the env stage prints the version).
# About 45 MB; none of them pulls in torch.
set -euo pipefail
DIR=${1:?usage: fetch_wheels.sh DIR [PYTHON_VERSION]}
PYVER=${2:-3.12}
PIP=(python3 -m pip)
mkdir -p "$DIR"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$tag")
done
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d "$DIR" \
  "bitsandbytes>=0.45" liger-kernel "datasets>=2.19" dill multiprocess "nltk>=3.8" defusedxml "bert-score>=0.3.12"
# rouge-score publishes no wheel: build one (pure Python, so it runs on any Python 3).
"${PIP[@]}" wheel -q --no-deps -w "$DIR" "rouge-score>=0.1.2"
ls -1 "$DIR"
