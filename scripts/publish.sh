#!/usr/bin/env bash
# Publish a code change to the deployed function: build the image from lambda_fn/Dockerfile,
# tag it with the git revision, push it to ECR, point the function at it and wait until the
# function is updated. `make publish` runs this; .github/workflows/publish.yml does on each tag.
#
# Settings (environment):
#   FUNCTION_NAME   the function (SAM output FunctionName)   default hybridsphere-face-recognition
#   ECR_REPOSITORY  ECR repository, created if absent           default hybridsphere-function
#   AWS_REGION      default $AWS_DEFAULT_REGION, else us-east-1
#   CONTAINER_TOOL  docker | podman | buildah                   default: the first one found
#   ALLOW_DIRTY=1   publish a tree with uncommitted changes (tagged <rev>-dirty-<time>)
#   DRY_RUN=1       print the commands instead of running them
# Credentials: the standard AWS chain; see deploy/README.md for the permissions needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUNCTION_NAME="${FUNCTION_NAME:-hybridsphere-face-recognition}"
ECR_REPOSITORY="${ECR_REPOSITORY:-hybridsphere-function}"
AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
DRY_RUN="${DRY_RUN:-}"
export AWS_REGION

run() {
  printf '+ %s\n' "$*" >&2
  [[ -n $DRY_RUN ]] || "$@"
}

revision="$(git rev-parse --short=12 HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  if [[ -z ${ALLOW_DIRTY:-} ]]; then
    echo "uncommitted changes: commit first (an image tag must name the code), or ALLOW_DIRTY=1" >&2
    exit 1
  fi
  revision="$revision-dirty-$(date -u +%Y%m%dT%H%M%SZ)"
fi

tool="${CONTAINER_TOOL:-}"
if [[ -z $tool ]]; then
  for candidate in docker podman buildah; do
    if command -v "$candidate" >/dev/null 2>&1; then tool=$candidate; break; fi
  done
fi
[[ -n $tool ]] || { echo "no docker, podman or buildah found (set CONTAINER_TOOL)" >&2; exit 1; }

if [[ -n $DRY_RUN ]]; then
  account=123456789012
else
  account="$(aws sts get-caller-identity --query Account --output text)"
fi
registry="$account.dkr.ecr.$AWS_REGION.amazonaws.com"
image="$registry/$ECR_REPOSITORY:$revision"

# The repository: tags are immutable, so a tag always means one build of one revision.
if [[ -n $DRY_RUN ]] || ! aws ecr describe-repositories --repository-names "$ECR_REPOSITORY" >/dev/null 2>&1; then
  run aws ecr create-repository --repository-name "$ECR_REPOSITORY" \
    --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true \
    --output text --query repository.repositoryUri
fi

if [[ -z $DRY_RUN ]] && aws ecr describe-images --repository-name "$ECR_REPOSITORY" \
    --image-ids "imageTag=$revision" >/dev/null 2>&1; then
  echo "$image is already in ECR: not rebuilt" >&2
else
  # Lambda takes Docker v2 / OCI single-platform manifests: no provenance attestation index.
  case "$tool" in
    docker) run docker build --platform linux/amd64 --provenance=false \
              -f lambda_fn/Dockerfile -t "$image" . ;;
    podman) run podman build --platform linux/amd64 --format docker \
              -f lambda_fn/Dockerfile -t "$image" . ;;
    buildah) run buildah bud --platform linux/amd64 --format docker \
              -f lambda_fn/Dockerfile -t "$image" . ;;
    *) echo "unknown CONTAINER_TOOL=$tool" >&2; exit 1 ;;
  esac
  printf '+ aws ecr get-login-password | %s login --username AWS --password-stdin %s\n' \
    "$tool" "$registry" >&2
  if [[ -z $DRY_RUN ]]; then
    aws ecr get-login-password | "$tool" login --username AWS --password-stdin "$registry"
  fi
  run "$tool" push "$image"
fi

run aws lambda update-function-code --function-name "$FUNCTION_NAME" --image-uri "$image" \
  --output text --query LastUpdateStatus
# Returns when the new image is live (LastUpdateStatus Successful), fails if the update failed.
run aws lambda wait function-updated --function-name "$FUNCTION_NAME"
echo "$FUNCTION_NAME now runs $image" >&2
