#!/usr/bin/env bash
# Set up .venv with the tested versions (constraints.txt): torch's CPU build, then nextai and the extras asked for.
#
#   scripts/setup.sh            # nextai (the README's quick start)
#   scripts/setup.sh dev        # + the test tools: pytest, the real clients the servers are tested with, the loggers
#   NEXTAI_TORCH=keep scripts/setup.sh   # a GPU machine: keep the CUDA torch already in .venv
#
# torch comes from PyTorch's CPU index (on an ordinary machine PyPI's torch is the multi-GB CUDA build); where that
# index is unreachable, pip finds the same version elsewhere (a local mirror) without retrying. HELM's HTTP client
# (crfm-helm) is installed without its heavy dependencies, as the challenge's tests need only its client.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
[ -d .venv ] || python3 -m venv .venv
pip=".venv/bin/python -m pip"
if [ "${NEXTAI_TORCH:-cpu}" = cpu ]; then
  $pip install -q --retries 0 --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch \
    2> >(grep -v -e "Retrying" -e "is ignored: it is neither" >&2)
fi
$pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
if [ "$extras" = dev ]; then
  $pip install -q --no-deps "crfm-helm==0.5.16"
fi
echo "nextai $(.venv/bin/nextai --version 2>/dev/null || echo installed) in .venv (activate: . .venv/bin/activate)"
