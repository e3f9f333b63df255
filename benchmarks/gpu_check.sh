#!/usr/bin/env bash
# The one GPU check: whoever is first lent a GPU runs this and nothing else (8 minutes; each part has
# a time limit, 9 minutes in all at worst).
#
#   bash benchmarks/gpu_check.sh [OUT.json]        (default: gpu_check.json)
#
# 1. the kernel tests on CUDA tensors with the Triton path forced (DITACCEL_KERNELS=triton), and the
#    method tests with the tiny pipelines on CUDA (make_pipe); there DITACCEL_KERNELS stays auto,
#    which takes Triton for CUDA tensors, because some method tests build CPU pipelines of their own;
# 2. the attention kernel benchmark (dense / block-sparse Triton vs SDPA, block-external layer);
# 3. benchmarks/gpu_check.py: every method's speedup, FLOPs ratio and error on a FLUX.1-dev-width
#    transformer (bf16, 4096 image tokens, 2 + 4 blocks), offloading with a method on, and
#    torch.compile (whole / regional) of a wrapped pipeline.
# Each part has its own time limit and writes what it finished; one JSON collects them all.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}
WORK=$(mktemp -d)
# GPU_CHECK_DRY=1: a CPU dry run of the plumbing (toy sizes, Triton's interpreter; numbers mean nothing)
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
  export DITACCEL_TEST_DEVICE=cpu TRITON_INTERPRET=1; TOY=(--toy); KERNELS=(--toy)
else
  export DITACCEL_TEST_DEVICE=cuda; unset TRITON_INTERPRET; TOY=(); KERNELS=(--lengths 4096 16384)
fi

python - <<'EOF' > "$WORK/device.json"
import json, torch
print(json.dumps({"cuda": torch.cuda.is_available(),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                  "torch": torch.__version__}))
EOF
cat "$WORK/device.json"

DITACCEL_KERNELS=triton timeout 90 python -m pytest -q -p no:cacheprovider tests/test_kernels.py \
  --junitxml="$WORK/kernel_tests.xml" 2>&1 | tail -5
timeout 120 python -m pytest -q -p no:cacheprovider --maxfail=20 \
  tests/test_served_values.py tests/test_exactness.py tests/test_sparse_attention.py \
  tests/test_block_external.py tests/test_controlnet.py \
  --junitxml="$WORK/method_tests.xml" 2>&1 | tail -5
timeout 60 python benchmarks/attention_kernels.py "${KERNELS[@]}" --densities 0.25 0.5 1.0 \
  --json "$WORK/attention_kernels.json" 2>&1 | tail -20
timeout 120 python benchmarks/gpu_check.py "${TOY[@]}" --parts t2i edit --json "$WORK/methods.json" 2>&1 | grep -v "^W" | tail -20
timeout 45 python benchmarks/gpu_check.py "${TOY[@]}" --parts offload --json "$WORK/offload.json" 2>&1 | tail -6
timeout 100 python benchmarks/gpu_check.py "${TOY[@]}" --parts compile --json "$WORK/compile.json" 2>&1 | grep -v "^W" | tail -6

python - "$WORK" "$OUT" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {"device": json.loads((work / "device.json").read_text())}
for name in ("kernel_tests", "method_tests"):
    path = work / f"{name}.xml"
    if not path.is_file():
        report[name] = {"error": "no result (timed out or did not start)"}
        continue
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [c.get("classname", "") + "::" + c.get("name", "") for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    report[name] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
        "seconds": float(suite.get("time", 0)), "failed": failed}
for name in ("attention_kernels", "methods", "offload", "compile"):
    path = work / f"{name}.json"
    report[name] = json.loads(path.read_text()) if path.is_file() else {"error": "no result (timed out?)"}
out.write_text(json.dumps(report, indent=1))
print(f"wrote {out}")
EOF
