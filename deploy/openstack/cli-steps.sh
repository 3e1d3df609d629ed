#!/usr/bin/env bash
# The watcher VM on OpenStack (DevStack or any cloud) with `openstack` CLI commands: the same
# resources as heat.yaml — network, subnet, router, SSH-only security group, image, key pair,
# instance, floating IP — then credentials over SSH and a check that the service runs.
#
#   source openrc admin admin            # or any project's credentials
#   export SSH_CIDR=203.0.113.7/32 REPO_URL=https://git.example.org/you/hybridsphere.git
#   export INPUT_BUCKET=... OUTPUT_BUCKET=...       # the SAM stack's outputs
#   export CREDENTIALS_FILE=./credentials.env       # AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=...
#   deploy/openstack/cli-steps.sh up     # create everything (idempotent: existing names are kept)
#   deploy/openstack/cli-steps.sh down   # delete everything it created
#   deploy/openstack/cli-steps.sh user-data   # print the rendered #cloud-config (no keys)
#
# DRY_RUN=1 prints the commands instead of running them (no cloud needed).
# The AWS keys never go into user-data here: they are copied over SSH into a root-only file.
set -euo pipefail

NAME="${NAME:-hybridsphere}"
PUBLIC_NET="${PUBLIC_NET:-public}"
PRIVATE_CIDR="${PRIVATE_CIDR:-10.46.0.0/24}"
DNS="${DNS:-1.1.1.1}"
FLAVOR="${FLAVOR:-m1.small}"
IMAGE="${IMAGE:-ubuntu-24.04}"
IMAGE_FILE="${IMAGE_FILE:-noble-server-cloudimg-amd64.img}"
IMAGE_URL="${IMAGE_URL:-https://cloud-images.ubuntu.com/noble/current/$IMAGE_FILE}"
KEY_NAME="${KEY_NAME:-$NAME-key}"
PUBLIC_KEY="${PUBLIC_KEY:-$HOME/.ssh/id_ed25519.pub}"
NODE_ID="${NODE_ID:-openstack-vm-1}"
AWS_REGION="${AWS_REGION:-us-east-1}"
TABLE="${TABLE:-hybridsphere-students}"
FUNCTION_NAME="${FUNCTION_NAME:-hybridsphere-face-recognition}"
KEY_PREFIX="${KEY_PREFIX:-videos}"
TRIGGER_MODE="${TRIGGER_MODE:-s3}"
REPO_REF="${REPO_REF:-main}"
WATCHER_PACKAGE="${WATCHER_PACKAGE:-}"
CREDENTIALS_FILE="${CREDENTIALS_FILE:-}"
DRY_RUN="${DRY_RUN:-}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
NET="$NAME-net" SUBNET="$NAME-subnet" ROUTER="$NAME-router" SG="$NAME-ssh-only" SERVER="$NAME-watcher"

run() {
  # Print every command; run it unless DRY_RUN is set.
  printf '+ %s\n' "$*" >&2
  [[ -n $DRY_RUN ]] || "$@"
}

exists() {
  # `openstack <kind> show NAME` succeeds: the resource is already there (never in a dry run).
  [[ -z $DRY_RUN ]] && openstack "$@" show -f value -c id "$NAME_TO_SHOW" >/dev/null 2>&1
}

need() {
  local var
  for var in "$@"; do
    [[ -n ${!var:-} ]] || { echo "set $var (see the top of $0)" >&2; exit 2; }
  done
}

render_user_data() {
  # heat.yaml does this with str_replace; the keys stay empty: they are copied over SSH. No
  # wait condition (this script checks the service over SSH) and no staging volume here.
  sed -e "s|__AWS_REGION__|$AWS_REGION|g" \
      -e "s|__INPUT_BUCKET__|$INPUT_BUCKET|g" \
      -e "s|__OUTPUT_BUCKET__|$OUTPUT_BUCKET|g" \
      -e "s|__TABLE__|$TABLE|g" \
      -e "s|__FUNCTION_NAME__|$FUNCTION_NAME|g" \
      -e "s|__TRIGGER_MODE__|$TRIGGER_MODE|g" \
      -e "s|__NODE_ID__|$NODE_ID|g" \
      -e "s|__KEY_PREFIX__|$KEY_PREFIX|g" \
      -e "s|__AWS_ACCESS_KEY_ID__||g" \
      -e "s|__AWS_SECRET_ACCESS_KEY__||g" \
      -e "s|__REPO_URL__|$REPO_URL|g" \
      -e "s|__REPO_REF__|$REPO_REF|g" \
      -e "s|__WATCHER_PACKAGE__|$WATCHER_PACKAGE|g" \
      -e "s|__WAIT_NOTIFY__||g" \
      -e "s|__STAGING_VOLUME_ID__||g" \
      "$HERE/user-data.yaml"
}

up() {
  need SSH_CIDR REPO_URL INPUT_BUCKET OUTPUT_BUCKET
  if [[ $SSH_CIDR == 0.0.0.0/0 ]]; then
    echo "SSH_CIDR=0.0.0.0/0 opens SSH to the world; give your own address/32" >&2
    exit 2
  fi

  # 1. Private network, subnet, and a router to the public network.
  NAME_TO_SHOW=$NET exists network || run openstack network create "$NET"
  NAME_TO_SHOW=$SUBNET exists subnet || run openstack subnet create "$SUBNET" \
    --network "$NET" --subnet-range "$PRIVATE_CIDR" --dns-nameserver "$DNS"
  if ! NAME_TO_SHOW=$ROUTER exists router; then
    run openstack router create "$ROUTER"
    run openstack router set "$ROUTER" --external-gateway "$PUBLIC_NET"
    run openstack router add subnet "$ROUTER" "$SUBNET"
  fi

  # 2. Security group: SSH from one CIDR, nothing else in (default egress rules stay).
  if ! NAME_TO_SHOW=$SG exists security group; then
    run openstack security group create "$SG" --description "SSH from $SSH_CIDR only"
    run openstack security group rule create "$SG" \
      --ingress --ethertype IPv4 --protocol tcp --dst-port 22 --remote-ip "$SSH_CIDR"
  fi

  # 3. Image (Ubuntu 24.04 cloud image: Python 3.12) and key pair.
  if ! NAME_TO_SHOW=$IMAGE exists image; then
    [[ -f $IMAGE_FILE ]] || run curl -fL -o "$IMAGE_FILE" "$IMAGE_URL"
    run openstack image create "$IMAGE" --disk-format qcow2 --container-format bare \
      --file "$IMAGE_FILE"
  fi
  NAME_TO_SHOW=$KEY_NAME exists keypair || run openstack keypair create "$KEY_NAME" \
    --public-key "$PUBLIC_KEY"

  # 4. The instance with cloud-init user-data, then a floating IP on its port.
  local user_data="$WORK/user-data.yaml"
  render_user_data >"$user_data"
  NAME_TO_SHOW=$SERVER exists server || run openstack server create "$SERVER" \
    --image "$IMAGE" --flavor "$FLAVOR" --key-name "$KEY_NAME" --network "$NET" \
    --security-group "$SG" --user-data "$user_data" --wait
  local ip=FLOATING_IP port
  if [[ -z $DRY_RUN ]]; then
    port="$(openstack port list --server "$SERVER" -f value -c ID | head -n1)"
    ip="$(openstack floating ip list --port "$port" -f value -c "Floating IP Address" | head -n1)"
  fi
  if [[ -z $ip || -n $DRY_RUN ]]; then
    run openstack floating ip create "$PUBLIC_NET" -f value -c floating_ip_address
    [[ -n $DRY_RUN ]] || ip="$(openstack floating ip create "$PUBLIC_NET" -f value -c floating_ip_address)"
    run openstack server add floating ip "$SERVER" "$ip"
  fi

  # 5. SSH in: wait for cloud-init, install the credentials (root-only), start, check.
  local ssh=(ssh -o StrictHostKeyChecking=accept-new "ubuntu@$ip")
  run "${ssh[@]}" cloud-init status --wait
  if [[ -n $CREDENTIALS_FILE ]]; then
    printf '+ %s < %s\n' "${ssh[*]} sudo install -m 0600 -o root -g root /dev/stdin /etc/hybrid-watcher/credentials.env" "$CREDENTIALS_FILE" >&2
    [[ -n $DRY_RUN ]] || "${ssh[@]}" sudo install -m 0600 -o root -g root /dev/stdin \
      /etc/hybrid-watcher/credentials.env <"$CREDENTIALS_FILE"
    run "${ssh[@]}" sudo systemctl restart hybrid-watcher
  fi
  run "${ssh[@]}" systemctl is-active hybrid-watcher
  echo "watcher VM: ssh ubuntu@$ip; drop videos into /var/lib/hybrid-watcher/inbox" >&2
}

down() {
  # Reverse order; each step tolerates what is already gone.
  local port ip
  if [[ -z $DRY_RUN ]]; then
    port="$(openstack port list --server "$SERVER" -f value -c ID 2>/dev/null | head -n1 || true)"
    if [[ -n $port ]]; then
      for ip in $(openstack floating ip list --port "$port" -f value -c "Floating IP Address"); do
        run openstack floating ip delete "$ip"
      done
    fi
  else
    run openstack floating ip delete FLOATING_IP
  fi
  run openstack server delete --wait "$SERVER" || true
  run openstack router remove subnet "$ROUTER" "$SUBNET" || true
  run openstack router delete "$ROUTER" || true
  run openstack subnet delete "$SUBNET" || true
  run openstack network delete "$NET" || true
  run openstack security group delete "$SG" || true
  run openstack keypair delete "$KEY_NAME" || true
  echo "the image $IMAGE is kept (openstack image delete $IMAGE to remove it)" >&2
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  user-data) need REPO_URL INPUT_BUCKET OUTPUT_BUCKET; render_user_data ;;
  *) echo "usage: $0 up|down|user-data   (DRY_RUN=1 prints the commands)" >&2; exit 2 ;;
esac
