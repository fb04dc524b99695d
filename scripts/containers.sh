#!/usr/bin/env bash
# RadGate's images and compose stack, built and run here with podman (docker where podman is absent).
#
#   scripts/containers.sh                 # everything: bases, images, stack up, smoke journey, down
#   scripts/containers.sh bases           # localhost/debian:bookworm (debootstrap) + Python base + CPU Ray
#   scripts/containers.sh build [NAME..]  # images (default: all): gateway ui mlflow trainer serving
#                                         #   orthanc postgres s3
#   scripts/containers.sh up|smoke|down   # the stack (docker/compose.yaml + compose.local.yaml)
#   scripts/containers.sh sizes           # image sizes and the build times recorded in $STATE
#   scripts/containers.sh lock            # regenerate constraints.txt from the venv
#
# No registry is reachable on the development machines, so by default the bases are built
# locally (RADGATE_LOCAL_BASES=1; 0 uses python:3.11-slim-bookworm and rayproject/ray from a
# registry). pip inside builds uses the host's CA bundle and local wheel directory when PIP_CERT /
# PIP_FIND_LINKS are set: a pip.conf naming them is mounted at build time only (never in a layer).
# Torch is the CPU build: a local torch-*+cpu wheel when there is one, else PyTorch's CPU index.
# Every build runs under `nice` (RADGATE_NICE, default 19) and one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

# podman unless a docker daemon answers (a docker client alone, without its daemon, is no engine:
# podman is then installed by engine_setup)
if [ -n "${CONTAINER_ENGINE:-}" ]; then
  ENGINE="$CONTAINER_ENGINE"
elif command -v podman >/dev/null 2>&1; then
  ENGINE=podman
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  ENGINE=podman
fi
NICE=(nice -n "${RADGATE_NICE:-19}")
STATE="${RADGATE_CONTAINERS_STATE:-/var/tmp/radgate-containers}"
LOCAL_BASES="${RADGATE_LOCAL_BASES:-1}"
RAY_VERSION="$(sed -n 's/^ray==//p' constraints.txt)"
PY_BASE="localhost/radgate/python:3.11-bookworm"
RAY_CPU="localhost/radgate/ray:${RAY_VERSION}-cpu"
COMPOSE_FILES=(-f docker/compose.yaml -f docker/compose.local.yaml)
PROJECT="${RADGATE_COMPOSE_PROJECT:-radgate}"
mkdir -p "$STATE"

log() { printf '[containers %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- host set-up (podman 4.3 on Debian 12: runc, cgroupfs, file events, ulimits) --------------------
engine_setup() {
  if [ "$ENGINE" = podman ] && [ "${RADGATE_SKIP_APT:-0}" != 1 ]; then
    sh scripts/ci/containers-apt.sh >/dev/null
  fi
  if [ "$ENGINE" = podman ] && [ "$(id -u)" = 0 ] && [ ! -s /etc/containers/containers.conf ]; then
    # crun cannot set rlimits without CAP_SYS_RESOURCE and does not run on hybrid cgroups here.
    cat > /etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  fi
}

# --- pip inside builds -------------------------------------------------------------------------------
PIP_BUILD=()
TORCH_ARGS=()
pip_setup() {
  local conf="$STATE/pip/pip.conf"
  mkdir -p "$STATE/pip"
  : > "$conf"
  echo "[global]" >> "$conf"
  echo "timeout = 180" >> "$conf"
  if [ -n "${PIP_CERT:-}" ] && [ -r "$PIP_CERT" ]; then
    echo "cert = /run/radgate-pip/ca.crt" >> "$conf"
    PIP_BUILD+=(-v "$PIP_CERT:/run/radgate-pip/ca.crt:ro")
  fi
  if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
    echo "find-links = /run/radgate-pip/wheels" >> "$conf"
    PIP_BUILD+=(-v "$PIP_FIND_LINKS:/run/radgate-pip/wheels:ro")
    if compgen -G "$PIP_FIND_LINKS/torch-*+cpu-*.whl" >/dev/null; then
      TORCH_ARGS=(--build-arg TORCH_INDEX=)   # the local CPU wheel; PyTorch's index is not reachable
    fi
  fi
  PIP_BUILD+=(-v "$conf:/run/radgate-pip/pip.conf:ro" --build-arg PIP_CONFIG_FILE=/run/radgate-pip/pip.conf)
}

# Every image of one run is built from one commit (RADGATE_BUILD_REF, default HEAD), exported to
# $STATE/context: images built from a working tree that changes between builds disagree (e.g. on
# the catalog's migrations) when they meet in the stack.
CONTEXT=""
snapshot() {
  [ -z "$CONTEXT" ] || return 0
  local ref="${RADGATE_BUILD_REF:-HEAD}"
  CONTEXT="$STATE/context"
  rm -rf "$CONTEXT"
  mkdir -p "$CONTEXT"
  git archive --format=tar "$ref" | tar -x -C "$CONTEXT"
  log "build context: $ref = $(git rev-parse --short "$ref")"
}

# build NAME TAG DOCKERFILE [ENGINE BUILD ARGS...]: one image, its wall time and size recorded.
build_image() {
  local name="$1" tag="$2" dockerfile="$3"
  shift 3
  snapshot
  local ignore=()
  [ -f "$CONTEXT/$dockerfile.dockerignore" ] && ignore=(--ignorefile "$CONTEXT/$dockerfile.dockerignore")
  local start end
  start=$(date +%s)
  log "build $name -> $tag"
  "${NICE[@]}" "$ENGINE" build --pull=never --network host --format docker \
    -f "$CONTEXT/$dockerfile" "${ignore[@]}" "${PIP_BUILD[@]}" "$@" -t "$tag" "$CONTEXT" \
    > "$STATE/build-$name.log" 2>&1 || {
      tail -n 30 "$STATE/build-$name.log" >&2
      log "build $name FAILED (log: $STATE/build-$name.log)"
      return 1
    }
  end=$(date +%s)
  local size
  size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
  sed -i "/^$name /d" "$STATE/builds.txt" 2>/dev/null || true
  echo "$name $tag $((end - start)) $size $(git -C "$REPO" rev-parse --short "${RADGATE_BUILD_REF:-HEAD}")" >> "$STATE/builds.txt"
  log "built $name in $((end - start)) s, $((size / 1000000)) MB"
}

# --- bases -------------------------------------------------------------------------------------------
# The local stand-in for debian:bookworm-slim; a new revision here rebuilds it (and the bases on it).
DEBIAN_BASE_REV=slim-2

# What Debian's official slim image leaves out, done to a debootstrap root: documentation (licences
# kept), manual pages and translations are never installed (dpkg path excludes, also for every
# later apt-get in the images), and apt keeps no package caches (75 MB of *.bin per apt layer).
slim_rootfs() {
  local root="$1"
  cat > "$root/etc/dpkg/dpkg.cfg.d/radgate-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  cat > "$root/etc/apt/apt.conf.d/radgate-clean" <<'EOF'
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
  find "$root/usr/share/doc" \( -type f -o -type l \) ! -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
}

bases() {
  if [ "$LOCAL_BASES" != 1 ]; then
    log "official bases: python:3.11-slim-bookworm, rayproject/ray:${RAY_VERSION}-py311[-gpu]"
    return
  fi
  local made
  made="$("$ENGINE" image inspect --format '{{index .Labels "org.radgate.base"}}' localhost/debian:bookworm 2>/dev/null || true)"
  if [ "$made" != "$DEBIAN_BASE_REV" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap
    local mirror rootfs="$STATE/rootfs"
    mirror="$(grep -h '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1 | awk '{print $2}')"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rm -rf "$rootfs"
    log "debootstrap bookworm from $mirror"
    "${NICE[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$STATE/debootstrap.log" 2>&1
    slim_rootfs "$rootfs"
    tar -C "$rootfs" -c . | "$ENGINE" import --change "LABEL org.radgate.base=$DEBIAN_BASE_REV" - \
      localhost/debian:bookworm >/dev/null
    rm -rf "$rootfs"
  fi
  build_image python "$PY_BASE" docker/base/python.Dockerfile
  build_image ray "$RAY_CPU" docker/ray.Dockerfile --build-arg "BASE_IMAGE=$PY_BASE" \
    --build-arg "RAY_VERSION=$RAY_VERSION"
}

base_args() {
  if [ "$LOCAL_BASES" = 1 ]; then echo "--build-arg BASE_IMAGE=$PY_BASE"; fi
}

ray_args() {
  if [ "$LOCAL_BASES" = 1 ]; then echo "--build-arg RAY_IMAGE=$RAY_CPU"; else
    echo "--build-arg RAY_IMAGE=rayproject/ray:${RAY_VERSION}-py311"; fi
}

ALL_IMAGES=(postgres s3 orthanc mlflow gateway ui trainer serving)

build() {
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=("${ALL_IMAGES[@]}")
  local name
  for name in "${names[@]}"; do
    case "$name" in
      python | ray) bases ;;
      gateway | ui | mlflow)
        # shellcheck disable=SC2046
        build_image "$name" "localhost/radgate/$name:latest" "docker/$name.Dockerfile" $(base_args) \
          "${TORCH_ARGS[@]}" ;;
      trainer | serving)
        # CPU images: the local CPU Ray base (or Ray's CPU image) and torch's CPU build.
        # shellcheck disable=SC2046
        build_image "$name" "localhost/radgate/$name:latest" "docker/$name.Dockerfile" $(ray_args) \
          --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu "${TORCH_ARGS[@]}" ;;
      postgres | s3 | orthanc)
        local ohif=()
        local version dist
        version="$(sed -n 's/^OHIF_VERSION = "\(.*\)"$/\1/p' imaging/gateway/viewer.py)"
        dist="${RADGATE_OHIF_DIST:-$HOME/.cache/radgate/ohif/$version/dist}"
        if [ "$name" = orthanc ] && [ -f "$dist/index.html" ]; then
          ohif=(-v "$dist:/run/radgate-ohif:ro" --build-arg "RADGATE_OHIF=$version")
        fi
        # shellcheck disable=SC2046
        build_image "$name" "localhost/radgate/$name:latest" "docker/peers/$name.Dockerfile" "${ohif[@]}" \
          $(if [ "$LOCAL_BASES" = 1 ]; then echo "--build-arg BASE_IMAGE=$PY_BASE --build-arg DEBIAN_IMAGE=localhost/debian:bookworm"; fi) ;;
      *) log "unknown image $name"; return 2 ;;
    esac
  done
  # Layers no image uses any more (earlier builds of the same tags).
  "$ENGINE" image prune -f >/dev/null 2>&1 || true
}

sizes() {
  printf '%-10s %-45s %8s %8s\n' image tag build_s MB
  while read -r name tag seconds size _; do
    printf '%-10s %-45s %8s %8s\n' "$name" "$tag" "$seconds" "$((size / 1000000))"
  done < "$STATE/builds.txt"
}

lock() {
  {
    sed -n '1,/^[^#]/{/^#/p}' constraints.txt
    # images take OpenCV's headless build at the venv's OpenCV release (docker/requirements.py)
    .venv/bin/pip freeze --exclude-editable 2>/dev/null | sed -E \
      -e 's/^torch==([^+]+)\+cpu$/torch==\1/' \
      -e 's/^opencv-python==(.*)$/opencv-python==\1\nopencv-python-headless==\1/'
  } > constraints.txt.new
  mv constraints.txt.new constraints.txt
  log "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
}

# --- the stack ---------------------------------------------------------------------------------------
compose() {
  local tool=(.venv/bin/podman-compose)
  if [ "$ENGINE" = docker ]; then tool=(docker compose); fi
  if [ "$ENGINE" = podman ] && [ ! -x .venv/bin/podman-compose ]; then
    .venv/bin/python -m pip install -q "podman-compose>=1.6" >&2
  fi
  "${NICE[@]}" "${tool[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"
}

# The RadGate CLI in the admin console's container (`admin`, the UI image: the governance audit
# writer, which holds audit-signing.key; the compose file's catalog, MLflow and S3 settings, secrets
# through the image's entrypoint); RADGATE_TOKEN passes from this environment by name, never in argv.
radgate_run() {
  "$ENGINE" exec -e RADGATE_TOKEN "${PROJECT}_admin_1" /usr/local/bin/radgate-entrypoint radgate "$@"
}

# The services' own RadGate users (gateway: data-steward; serving, UI: ml-engineer), issued by the
# first admin once the catalog is up; their tokens go to docker/secrets/ (git-ignored), the admin's
# to docker/secrets/radgate_admin_token (mounted nowhere).
bootstrap() {
  local dir=docker/secrets out token pair
  if ! out="$(RADGATE_TOKEN="" radgate_run users add radgate-admin --role admin 2>&1)"; then
    if [ -s "$dir/radgate_admin_token" ]; then
      log "catalog already has users: keeping the tokens in $dir"
      return 0
    fi
    printf '%s\n' "$out" | tail -n 5 >&2
    return 1
  fi
  token="$(printf '%s\n' "$out" | grep -o 'rg_[A-Za-z0-9_-]*' | tail -n 1)"
  ( umask 077; printf '%s\n' "$token" > "$dir/radgate_admin_token" )
  for pair in gateway:data-steward serving:ml-engineer ui:ml-engineer; do
    # A user left by an earlier, interrupted attempt gets a new token instead.
    out="$(RADGATE_TOKEN="$token" radgate_run users add "radgate-${pair%%:*}" --role "${pair#*:}" 2>/dev/null)" \
      || out="$(RADGATE_TOKEN="$token" radgate_run users rotate "radgate-${pair%%:*}" 2>/dev/null)"
    printf '%s\n' "$out" | grep -o 'rg_[A-Za-z0-9_-]*' | tail -n 1 > "$dir/radgate_${pair%%:*}_token"
    chmod 0644 "$dir/radgate_${pair%%:*}_token"   # read by the service's non-root user
  done
  log "bootstrap: admin + service users for gateway, serving, UI"
}

# wait_for SERVICE COMMAND...: until COMMAND succeeds in the service's container (5 min at most).
wait_for() {
  local service="$1" deadline=$((SECONDS + 300))
  shift
  until "$ENGINE" exec "${PROJECT}_${service}_1" "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "$service not ready"; return 1; }
    sleep 3
  done
}

# In phases, each service started without podman's --requires (podman 4.3 cannot start a container
# whose dependencies share a dependency: "not found in input list") and, as podman before 4.6
# ignores depends_on's service_healthy, after what it needs answers.
up() {
  sh docker/make-secrets.sh >/dev/null
  log "stack up: peers"
  compose up -d --no-deps postgres minio orthanc
  wait_for minio python /usr/local/bin/radgate-healthcheck tcp 127.0.0.1 9000
  wait_for postgres pg_isready -h 127.0.0.1
  # The admin console first: governance-home (its and the UI's RADGATE_HOME, read-only in the
  # Ray head and serving) takes the owner of the first container that mounts it.
  compose up -d --no-deps buckets mlflow admin
  wait_for admin /usr/local/bin/radgate-entrypoint radgate --help
  compose up -d --no-deps ray-head
  wait_for ray-head ray health-check --skip-version-check
  bootstrap
  log "stack up: RadGate"
  compose up -d --no-deps gateway ui
}

down() {
  log "stack down"
  compose down -v --remove-orphans || true
}

smoke() {
  RAY_AUTH_MODE=disabled "${NICE[@]}" .venv/bin/python scripts/ci/container_smoke.py \
    --engine "$ENGINE" --project "$PROJECT" --report "$STATE/smoke.json"
}

main() {
  local step="${1:-all}"
  [ $# -gt 0 ] && shift
  engine_setup
  pip_setup
  case "$step" in
    bases) bases ;;
    build) build "$@" ;;
    up) up ;;
    bootstrap) bootstrap ;;
    smoke) smoke ;;
    down) down ;;
    sizes) sizes ;;
    lock) lock ;;
    all)
      bases
      build
      sizes
      trap down EXIT
      up
      smoke
      ;;
    *) sed -n '2,12p' "$0"; return 2 ;;
  esac
}

main "$@"; exit $?
