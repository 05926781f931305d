#!/usr/bin/env bash
# Build the enclave image and publish its measurements.
#
#   eif/build.sh [OUT_DIR]            (default: eif/out)
#
# Needs Docker and nitro-cli (an EC2 instance with Nitro Enclaves enabled, or any Linux host with nitro-cli).
# Writes OUT_DIR/pod.eif, OUT_DIR/pcrs.json (nitro-cli's measurements: PCR0 image, PCR1 kernel and boot ramdisk,
# PCR2 application, PCR8 signing certificate when signed) and OUT_DIR/build-info.txt (what the PCRs depend on:
# region, build image, nitro-cli version, source commit). pcrs.json is what clients pin (`podctl --pcrs`,
# `attest-verify --pcrs`) and what the KMS key policy is rendered from (`podctl policy`).
# REGION (default us-east-1) is baked into the image, so it is part of the PCRs.
# To sign the image, set both SIGNING_CERT and SIGNING_KEY (PEM files); PCR8 then identifies the signer.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-eif/out}"
region="${REGION:-us-east-1}"

# The build image must be pinned by digest: a tag moves, and a different toolchain gives different PCRs. The pin lives
# in eif/rust-image (its first line that is neither blank nor a comment: image@sha256:...), reviewed like code;
# RUST_IMAGE overrides it.
pinned=""
if [[ -f eif/rust-image ]]; then
  pinned="$(awk 'NF && $1 !~ /^#/ { print $1; exit }' eif/rust-image)"
fi
image="${RUST_IMAGE:-$pinned}"
if [[ ! "$image" =~ @sha256:[0-9a-f]{64}$ ]]; then
  cat >&2 <<MSG
eif/build.sh: the build image is not pinned by digest (${image:-no RUST_IMAGE, and no image in eif/rust-image}).
Pin it once, on a machine with Docker, and commit the result for review:
  docker pull rust:1.95-bookworm
  docker inspect --format '{{index .RepoDigests 0}}' rust:1.95-bookworm > eif/rust-image
Images whose PCRs you publish must come from a pinned toolchain (or set ALLOW_UNPINNED=1 for a throwaway build).
MSG
  [[ "${ALLOW_UNPINNED:-}" == 1 ]] || exit 2
  [[ -n "$image" ]] || { echo "eif/build.sh: ALLOW_UNPINNED=1 still needs an image: set RUST_IMAGE" >&2; exit 2; }
fi

sign=()
signed=no
if [[ -n "${SIGNING_CERT:-}" || -n "${SIGNING_KEY:-}" ]]; then
  if [[ -z "${SIGNING_CERT:-}" || -z "${SIGNING_KEY:-}" ]]; then
    echo "eif/build.sh: only one of SIGNING_CERT and SIGNING_KEY is set; set both to sign the image, or neither" >&2
    exit 2
  fi
  sign=(--signing-certificate "$SIGNING_CERT" --private-key "$SIGNING_KEY")
  signed="yes (PCR8 identifies the signing certificate)"
fi

for tool in docker nitro-cli; do
  command -v "$tool" >/dev/null || { echo "eif/build.sh: $tool is not installed (or not on PATH)" >&2; exit 2; }
done

# Everything is written to a scratch directory first and moved into place at the end: a failed build leaves the
# previous pod.eif, pcrs.json and build-info.txt as they were, never a truncated or mismatched file.
mkdir -p "$out"
work="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== building the enclave container (reproducible: pinned toolchain, --locked, fixed SOURCE_DATE_EPOCH)"
docker build --file Dockerfile.enclave --build-arg REGION="$region" --build-arg RUST_IMAGE="$image" \
  --tag secure-pod-enclave:build .

echo "== building the EIF"
nitro-cli build-enclave --docker-uri secure-pod-enclave:build --output-file "$work/pod.eif" \
  ${sign[@]+"${sign[@]}"} > "$work/pcrs.json"

if command -v git >/dev/null && commit="$(git rev-parse HEAD 2>/dev/null)"; then
  # No optional locks: this must not write the index of a working tree someone else is using.
  if [[ -n "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    commit="$commit (with uncommitted changes: not a release build)"
  fi
else
  commit=unknown
fi
{
  echo "region: $region"
  echo "build image: $image"
  echo "nitro-cli: $(nitro-cli --version 2>/dev/null || echo "unknown (nitro-cli --version failed)")"
  echo "source commit: $commit"
  echo "signed: $signed"
} > "$work/build-info.txt"

mv -f "$work/pod.eif" "$out/pod.eif"
mv -f "$work/pcrs.json" "$out/pcrs.json"
mv -f "$work/build-info.txt" "$out/build-info.txt"

echo "== published measurements ($out/pcrs.json):"
cat "$out/pcrs.json"
echo
echo "== build information ($out/build-info.txt; a rebuild matches only with the same values):"
cat "$out/build-info.txt"
echo
echo "Next: render the KMS key policy from them:"
echo "  podctl --pcrs $out/pcrs.json policy --role-arn <parent instance role ARN> --admin-arn <key administrator ARN>"
