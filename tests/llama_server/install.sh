#!/usr/bin/env bash
# Builds llama.cpp's OpenAI-compatible server, llama-cpp-python[server] 0.3.36, from its PyPI
# sdist into the virtual environment $1 (once: a stamp file says it is done; a lock keeps two
# callers from building at the same time). pip's cache is off; nothing is kept outside $1.
# GGML_NATIVE is off: its AMX kernels die with SIGILL on these machines.
set -euo pipefail
venv="$1"
want="llama-cpp-python[server]==0.3.36"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ "$(cat "$venv/installed.txt" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF" \
  "$venv/bin/pip" install --quiet --no-cache-dir "$want"
echo "$want" > "$venv/installed.txt"
