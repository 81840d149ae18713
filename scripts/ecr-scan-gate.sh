#!/usr/bin/env bash
# The ECR scan gate (docs/pipeline.md, "Scan gate"): waits for ECR's scan of an image
# in the dev repository and fails on findings at SCAN_FAIL_SEVERITY or above. dev.yml runs
# it before signing (job `scan`), main.yml again before the promotion: one script, so the
# two gates cannot drift apart.
#   DIGEST               the image (index) digest to gate, sha256:<64 hex>
#   DEV_IMAGE            the dev repository, <registry host>/<repository>
#   SCAN_FAIL_SEVERITY   CRITICAL, HIGH, MEDIUM, LOW or INFORMATIONAL: it and every
#                        severity above it fail the gate
# It fails closed: a scan that failed or never completed, an image that cannot be read or
# a denied call stops the release, since nothing is released unscanned.
set -euo pipefail

DIGEST=${DIGEST:-}
DEV_IMAGE=${DEV_IMAGE:-}
SCAN_FAIL_SEVERITY=${SCAN_FAIL_SEVERITY:-}

[[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "::error::no digest to gate: '${DIGEST}'"; exit 1; }
[[ $DEV_IMAGE == ?*/?* ]] || { echo "::error::DEV_IMAGE must be <registry>/<repository>, not '${DEV_IMAGE}'"; exit 1; }
# The configured severity and every one above it fail the gate.
blocking=()
for level in CRITICAL HIGH MEDIUM LOW INFORMATIONAL; do
  blocking+=("$level")
  [ "$level" != "$SCAN_FAIL_SEVERITY" ] || break
done
if [ "${blocking[-1]}" != "$SCAN_FAIL_SEVERITY" ]; then
  echo "::error::SCAN_FAIL_SEVERITY must be CRITICAL, HIGH, MEDIUM, LOW or INFORMATIONAL, not '${SCAN_FAIL_SEVERITY}'"
  exit 1
fi
repository=${DEV_IMAGE#*/}
# buildx pushes an image index (the image and its SBOM/provenance attestations): ECR scans
# the platform image in it, so that is what is gated. Each aws answer is kept in a variable
# before jq reads it, so an aws failure stops the script with aws's own message.
found=$(aws ecr batch-get-image --repository-name "$repository" --image-ids imageDigest="$DIGEST" \
  --accepted-media-types application/vnd.oci.image.index.v1+json application/vnd.oci.image.manifest.v1+json \
  application/vnd.docker.distribution.manifest.list.v2+json application/vnd.docker.distribution.manifest.v2+json \
  --output json)
manifest=$(jq -r '.images[0].imageManifest // empty' <<<"$found")
[ -n "$manifest" ] || { echo "::error::${DEV_IMAGE}@${DIGEST} is not in the registry"; exit 1; }
images=$(jq -r --arg digest "$DIGEST" \
  'if .manifests then .manifests[] | select(.platform.os != "unknown") | .digest else $digest end' <<<"$manifest")
[ -n "$images" ] || { echo "::error::${DEV_IMAGE}@${DIGEST} lists no image to gate"; exit 1; }
failed=0
for image in $images; do
  # Polls every 5 s, gives up after 5 minutes or on a FAILED scan; the calling step's
  # timeout bounds it too.
  if ! aws ecr wait image-scan-complete --repository-name "$repository" --image-id imageDigest="$image"; then
    echo "::error::the ECR scan of ${DEV_IMAGE}@${image} did not complete: nothing is released unscanned"
    exit 1
  fi
  findings=$(aws ecr describe-image-scan-findings --repository-name "$repository" \
    --image-id imageDigest="$image" --output json)
  counts=$(jq -c '.imageScanFindings.findingSeverityCounts // {}' <<<"$findings")
  echo "ECR scan of ${image}: ${counts}"
  for level in "${blocking[@]}"; do
    count=$(jq -r --arg level "$level" '.[$level] // 0' <<<"$counts")
    if [ "$count" -gt 0 ]; then
      echo "::error::${DEV_IMAGE}@${image} has ${count} ${level} finding(s); the gate stops at ${SCAN_FAIL_SEVERITY} and above (docs/pipeline.md, \"Scan gate\")"
      failed=1
    fi
  done
done
exit "$failed"
