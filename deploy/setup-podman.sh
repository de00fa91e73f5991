#!/bin/bash
# Set up podman (runc, host networking) + local debian:bookworm-slim base image + podman-compose.
# Part of the project (deploy/test.sh and CI run it): the machines CI runs on reach Debian's
# mirror and PyPI but not Docker Hub, so the base image is made here with debootstrap. Runs as
# root, about a minute, idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y podman runc debootstrap >/dev/null
# The Debian mirror this machine's apt already uses (the base image is made from it).
# (grep exits 2 when /etc/apt/sources.list is absent, as on deb822-only machines: tolerated.)
urls() { { grep -rhoE 'https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null || true; } | sort -u | awk '{ print length, $0 }' | sort -n | cut -d' ' -f2; }
MIRROR=$(urls | grep -v security | grep -E '/debian/?$' | head -1)
SECURITY=$(urls | grep -E '/debian-security/?$' | head -1)
[ -n "$MIRROR" ] || { echo "no apt mirror configured" >&2; exit 1; }
[ -n "$SECURITY" ] || SECURITY="${MIRROR%/debian}/debian-security"
# rlimits: no CAP_SYS_RESOURCE, so container rlimits must be <= podman's own hard limits.
# podman lowers its own RLIMIT_NPROC to 32768 at start; RLIMIT_NOFILE hard is whatever the VM gives (20000 here).
NOFILE=$(ulimit -Hn); NPROC=$(ulimit -Hu)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
{ [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<CONF
[containers]
default_ulimits = ["nofile=${NOFILE}:${NOFILE}", "nproc=${NPROC}:${NPROC}"]
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
# base image
if ! podman image exists docker.io/library/debian:bookworm-slim; then
  R=$(mktemp -d /var/tmp/bookworm-rootfs.XXXX)
  debootstrap --variant=minbase bookworm "$R" ${MIRROR} >/dev/null
  rm -f "$R/etc/apt/sources.list"
  cat > "$R/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: ${MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/*.log "$R"/var/log/apt/* "$R"/tmp/*
  : > "$R/etc/resolv.conf"; echo localhost > "$R/etc/hostname"
  tar --numeric-owner --xattrs -C "$R" -cf - . | podman import \
     --change 'CMD ["bash"]' \
     --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
     - docker.io/library/debian:bookworm-slim
  rm -rf "$R"
fi
# podman-compose 1.6.0 (Debian's 1.0.3 breaks on network_mode: host)
[ -x /opt/pc-venv/bin/podman-compose ] || { /usr/bin/python3 -m venv /opt/pc-venv && /opt/pc-venv/bin/pip install -q podman-compose==1.6.0; }
podman run --rm debian:bookworm-slim cat /etc/debian_version
