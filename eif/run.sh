#!/usr/bin/env bash
# Start the enclave on this parent instance.
#
#   eif/run.sh [EIF]                  (default: eif/out/pod.eif)
#
# CPU_COUNT, MEMORY_MIB and ENCLAVE_CID override the defaults (2 vCPUs, 1024 MiB, CID 16). The allocator
# (/etc/nitro_enclaves/allocator.yaml, see eif/allocator.yaml) must reserve at least that much. Never add
# --debug-mode in production: a debug enclave's PCRs are zero, its memory is readable, and clients refuse it.
# The enclave is named secure-pod, so that it is stopped by name
# (`nitro-cli terminate-enclave --enclave-name secure-pod`, as the systemd unit does) and no other enclave with it.
# When REGION is set (the units read it from /etc/secure-pod/region.env), it must be the region the image was built
# for, as the build-info.txt beside the EIF records: the KMS relay connects to REGION, the enclave to its own.
set -euo pipefail
eif="${1:-$(dirname "$0")/out/pod.eif}"
[[ -f "$eif" ]] || { echo "eif/run.sh: $eif not found (run eif/build.sh first)" >&2; exit 2; }
info="$(dirname "$eif")/build-info.txt"
if [[ -n "${REGION:-}" ]]; then
  if [[ -f "$info" ]]; then
    built="$(awk -F': ' '$1 == "region" { print $2; exit }' "$info")"
    if [[ "$built" != "$REGION" ]]; then
      echo "eif/run.sh: $eif was built for region ${built:-(none recorded)} ($info), but REGION is $REGION" \
        "(/etc/secure-pod/region.env): the enclave would reach KMS through a relay to the wrong region." \
        "Set REGION to the image's region, or rebuild the image for $REGION." >&2
      exit 2
    fi
  else
    echo "eif/run.sh: note: no $info beside the image; REGION=$REGION is not checked against the image's" >&2
  fi
fi
command -v nitro-cli >/dev/null || { echo "eif/run.sh: nitro-cli is not installed" >&2; exit 2; }
nitro-cli run-enclave \
  --enclave-name secure-pod \
  --eif-path "$eif" \
  --cpu-count "${CPU_COUNT:-2}" \
  --memory "${MEMORY_MIB:-1024}" \
  --enclave-cid "${ENCLAVE_CID:-16}"
nitro-cli describe-enclaves
