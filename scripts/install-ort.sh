#!/usr/bin/env bash
# Links ONNX Runtime's shared library (PyPI wheel onnxruntime==1.32.0) and the WebGPU plugin EP
# (onnxruntime-ep-webgpu) from the venv into .ort/, where Attune looks for them by default.
set -euo pipefail
vpy=${1:-.venv/bin/python}
dest=${2:-.ort}
mkdir -p "$dest"
capi=$("$vpy" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
lib=$(ls "$capi"/libonnxruntime.so.* | head -n1)
ln -sf "$(realpath "$lib")" "$dest/libonnxruntime.so"
ln -sf "$(realpath "$lib")" "$dest/$(basename "$lib")"
ln -sf "$(realpath "$capi/libonnxruntime_providers_shared.so")" "$dest/libonnxruntime_providers_shared.so"
webgpu=$("$vpy" -c 'import onnxruntime_ep_webgpu, os; print(os.path.dirname(onnxruntime_ep_webgpu.__file__))')
ln -sf "$(realpath "$webgpu/libonnxruntime_providers_webgpu.so")" "$dest/libonnxruntime_providers_webgpu.so"
echo "ONNX Runtime: $dest/libonnxruntime.so -> $(basename "$lib")"
