#!/usr/bin/env bash
# Build the enclave image and publish its measurements.
#
#   eif/build.sh [OUT_DIR]            (default: eif/out)
#
# Needs Docker and nitro-cli (an EC2 instance with Nitro Enclaves enabled, or any Linux host with nitro-cli).
# Writes OUT_DIR/pod.eif and OUT_DIR/pcrs.json (nitro-cli's measurements: PCR0 image, PCR1 kernel and boot ramdisk,
# PCR2 application, PCR8 signing certificate when signed). pcrs.json is what clients pin (`podctl --pcrs`,
# `attest-verify --pcrs`) and what the KMS key policy is rendered from (`podctl policy`).
# To sign the image, set SIGNING_CERT and SIGNING_KEY (PEM files); PCR8 then identifies the signer.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-eif/out}"
region="${REGION:-us-east-1}"
mkdir -p "$out"

# The build image must be pinned by digest: a tag moves, and a different toolchain gives different PCRs. The pin lives
# in eif/rust-image (one line, image@sha256:...), reviewed like code; RUST_IMAGE overrides it.
image="${RUST_IMAGE:-$(grep -v '^#' eif/rust-image 2>/dev/null | head -n 1)}"
if [[ ! "$image" =~ @sha256:[0-9a-f]{64}$ ]]; then
  cat >&2 <<MSG
eif/build.sh: the build image is not pinned by digest (${image:-nothing in eif/rust-image}).
Pin it once, on a machine with Docker, and commit the result for review:
  docker pull rust:1.95-bookworm
  docker inspect --format '{{index .RepoDigests 0}}' rust:1.95-bookworm > eif/rust-image
Images whose PCRs you publish must come from a pinned toolchain (or set ALLOW_UNPINNED=1 for a throwaway build).
MSG
  [[ "${ALLOW_UNPINNED:-}" == 1 ]] || exit 2
fi

for tool in docker nitro-cli; do
  command -v "$tool" >/dev/null || { echo "eif/build.sh: $tool is not installed" >&2; exit 2; }
done

echo "== building the enclave container (reproducible: pinned toolchain, --locked, fixed SOURCE_DATE_EPOCH)"
docker build --file Dockerfile.enclave --build-arg REGION="$region" --build-arg RUST_IMAGE="$image" \
  --tag secure-pod-enclave:build .

echo "== building the EIF"
sign=()
if [[ -n "${SIGNING_CERT:-}" && -n "${SIGNING_KEY:-}" ]]; then
  sign=(--signing-certificate "$SIGNING_CERT" --private-key "$SIGNING_KEY")
fi
nitro-cli build-enclave --docker-uri secure-pod-enclave:build --output-file "$out/pod.eif" "${sign[@]}" > "$out/pcrs.json"

echo "== published measurements ($out/pcrs.json):"
cat "$out/pcrs.json"
echo
echo "Next: render the KMS key policy from them:"
echo "  podctl --pcrs $out/pcrs.json policy --role-arn <parent instance role ARN> --admin-arn <key administrator ARN>"
