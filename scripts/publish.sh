#!/usr/bin/env bash
# Roll the function out through its stack: build the image from lambda_fn/Dockerfile with the
# git revision baked in (VERSION -> HYBRID_FUNCTION_VERSION, reported in every result's
# `function_version`), push it to ECR tagged with that revision, then deploy the SAM stack
# (a CloudFormation change set) with the stack's ImageUri parameter set to it. The stack stays
# the one source of truth for what runs: no update-function-code beside it, no drift.
# `make publish` runs this; .github/workflows/publish.yml does on each tag.
#
# Rollback: IMAGE_TAG=<an earlier revision> scripts/publish.sh — builds nothing, checks the tag
# is in ECR and deploys the stack with it (deploy/README.md, "Rollback").
#
# Settings (environment):
#   STACK_NAME        the SAM stack                               default hybridsphere
#   ECR_REPOSITORY    ECR repository, created if absent           default hybridsphere-function
#   AWS_REGION        default $AWS_DEFAULT_REGION, else us-east-1
#   CONTAINER_TOOL    docker | podman | buildah                   default: the first one found
#   IMAGE_TAG         deploy this existing tag instead of building (rollback)
#   PARAMETER_OVERRIDES  more stack parameters, e.g. "TriggerMode=sqs AlarmEmail=ops@example.org"
#                     (on updates, parameters not named keep their current values)
#   CFN_ROLE_ARN      a CloudFormation service role to deploy with (optional)
#   ALLOW_DIRTY=1     publish a tree with uncommitted changes (tagged <rev>-dirty-<time>)
# Credentials: the standard AWS chain; see deploy/README.md for the permissions needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

STACK_NAME="${STACK_NAME:-hybridsphere}"
ECR_REPOSITORY="${ECR_REPOSITORY:-hybridsphere-function}"
AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
TEMPLATE=deploy/aws/template.yaml
export AWS_REGION

run() {
  printf '+ %s\n' "$*" >&2
  "$@"
}

tag="${IMAGE_TAG:-}"
if [[ -z $tag ]]; then
  tag="$(git rev-parse --short=12 HEAD)"
  if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    if [[ -z ${ALLOW_DIRTY:-} ]]; then
      echo "uncommitted changes: commit first (an image tag must name the code), or ALLOW_DIRTY=1" >&2
      exit 1
    fi
    tag="$tag-dirty-$(date -u +%Y%m%dT%H%M%SZ)"
  fi
fi

account="$(aws sts get-caller-identity --query Account --output text)"
registry="$account.dkr.ecr.$AWS_REGION.amazonaws.com"
image="$registry/$ECR_REPOSITORY:$tag"

in_ecr() {
  aws ecr describe-images --repository-name "$ECR_REPOSITORY" --image-ids "imageTag=$tag" \
    >/dev/null 2>&1
}

if [[ -n ${IMAGE_TAG:-} ]]; then
  # A rollback (or a re-deploy) must name an image that exists: never build one under an old tag.
  in_ecr || { echo "$image is not in ECR: nothing to roll back to" >&2; exit 1; }
  echo "deploying the existing $image" >&2
elif in_ecr; then
  echo "$image is already in ECR: not rebuilt" >&2
else
  tool="${CONTAINER_TOOL:-}"
  if [[ -z $tool ]]; then
    for candidate in docker podman buildah; do
      if command -v "$candidate" >/dev/null 2>&1; then tool=$candidate; break; fi
    done
  fi
  [[ -n $tool ]] || { echo "no docker, podman or buildah found (set CONTAINER_TOOL)" >&2; exit 1; }

  # The repository: tags are immutable, so a tag always means one build of one revision.
  if ! aws ecr describe-repositories --repository-names "$ECR_REPOSITORY" >/dev/null 2>&1; then
    run aws ecr create-repository --repository-name "$ECR_REPOSITORY" \
      --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true \
      --output text --query repository.repositoryUri
  fi
  # VERSION becomes HYBRID_FUNCTION_VERSION in the image (lambda_fn/Dockerfile).
  # Lambda takes Docker v2 / OCI single-platform manifests: no provenance attestation index.
  case "$tool" in
    docker) run docker build --platform linux/amd64 --provenance=false \
              --build-arg "VERSION=$tag" -f lambda_fn/Dockerfile -t "$image" . ;;
    podman) run podman build --platform linux/amd64 --format docker \
              --build-arg "VERSION=$tag" -f lambda_fn/Dockerfile -t "$image" . ;;
    buildah) run buildah bud --platform linux/amd64 --format docker \
              --build-arg "VERSION=$tag" -f lambda_fn/Dockerfile -t "$image" . ;;
    *) echo "unknown CONTAINER_TOOL=$tool" >&2; exit 1 ;;
  esac
  printf '+ aws ecr get-login-password | %s login --username AWS --password-stdin %s\n' \
    "$tool" "$registry" >&2
  aws ecr get-login-password | "$tool" login --username AWS --password-stdin "$registry"
  run "$tool" push "$image"
fi

# A change set on the stack (CloudFormation runs the template's transforms itself): creates the
# stack the first time, else changes only what differs — here, normally, the image.
# shellcheck disable=SC2206  # PARAMETER_OVERRIDES is a list of Key=Value words on purpose
overrides=("ImageUri=$image" ${PARAMETER_OVERRIDES:-})
role=()
[[ -z ${CFN_ROLE_ARN:-} ]] || role=(--role-arn "$CFN_ROLE_ARN")
run aws cloudformation deploy --template-file "$TEMPLATE" --stack-name "$STACK_NAME" \
  --capabilities CAPABILITY_NAMED_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
  "${role[@]}" --parameter-overrides "${overrides[@]}"
echo "$STACK_NAME now runs $image" >&2
