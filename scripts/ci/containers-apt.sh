#!/bin/sh
# System packages for scripts/containers.sh (podman 4.3 on Debian 12), idempotent:
# podman + runc (crun cannot set rlimits here and fails on hybrid cgroups), the CNI dnsname plugin
# (compose services find each other by name on podman's CNI backend), debootstrap (the local
# Debian base: no registry is reachable).
set -eu
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null \
   || [ ! -e /usr/lib/cni/dnsname ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends podman runc debootstrap uidmap \
    golang-github-containernetworking-plugin-dnsname
fi
podman --version
