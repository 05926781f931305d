#!/usr/bin/env bash
# Start the enclave on this parent instance.
#
#   eif/run.sh [EIF]                  (default: eif/out/pod.eif)
#
# CPU_COUNT, MEMORY_MIB and ENCLAVE_CID override the defaults (2 vCPUs, 1024 MiB, CID 16). The allocator
# (/etc/nitro_enclaves/allocator.yaml, see eif/allocator.yaml) must reserve at least that much. Never add
# --debug-mode in production: a debug enclave's PCRs are zero, its memory is readable, and clients refuse it.
set -euo pipefail
eif="${1:-$(dirname "$0")/out/pod.eif}"
[[ -f "$eif" ]] || { echo "eif/run.sh: $eif not found (run eif/build.sh first)" >&2; exit 2; }
command -v nitro-cli >/dev/null || { echo "eif/run.sh: nitro-cli is not installed" >&2; exit 2; }
nitro-cli run-enclave \
  --eif-path "$eif" \
  --cpu-count "${CPU_COUNT:-2}" \
  --memory "${MEMORY_MIB:-1024}" \
  --enclave-cid "${ENCLAVE_CID:-16}"
nitro-cli describe-enclaves
