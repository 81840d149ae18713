#!/usr/bin/env bash
# Builds local stand-ins for the Dockerfile's public base images, from Debian packages,
# because this machine (and CI) reaches no container registry:
#
#   local/python-build:3.11-bookworm    ~ debian:12-slim + python3-venv + binutils (build)
#   local/python-distroless:3.11-nonroot ~ gcr.io/distroless/python3-debian12:nonroot
#
# The distroless stand-in holds only the files of the Debian packages distroless ships
# for Python 3.11 (libc, OpenSSL, CA certificates, tzdata, the interpreter and its
# libraries): no shell, no apt, no dpkg binary, user nonroot (65532).
#
# Cached: the images carry a label with a hash of this script; when both exist with the
# current hash nothing is rebuilt. The debootstrap rootfs tarball is also kept in
# $BASES_CACHE_DIR so that a fresh Docker data root only needs a `docker import`.
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILD_IMAGE=${BUILD_BASE_IMAGE:-local/python-build:3.11-bookworm}
RUNTIME_IMAGE=${RUNTIME_BASE_IMAGE:-local/python-distroless:3.11-nonroot}
CACHE_DIR=${BASES_CACHE_DIR:-/var/cache/comments-api/bases}
DOCKER=${DOCKER:-docker}

KEY=$(sha256sum "$0" | cut -c1-16)
LABEL=org.example.comments-api.base-key

current() { [ "$($DOCKER image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$KEY" ]; }

if current "$BUILD_IMAGE" && current "$RUNTIME_IMAGE"; then
  echo "local base images are current ($KEY): $BUILD_IMAGE, $RUNTIME_IMAGE"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-local-bases.sh: debootstrap needs root" >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

mkdir -p "$CACHE_DIR"
work=$(mktemp -d "${TMPDIR:-/tmp}/comments-bases.XXXXXX")
trap 'rm -rf "$work"' EXIT
build_tar="$CACHE_DIR/build-$KEY.tar"
runtime_tar="$CACHE_DIR/runtime-$KEY.tar"

if [ ! -s "$build_tar" ] || [ ! -s "$runtime_tar" ]; then
  root="$work/build"
  echo "debootstrap $SUITE (minbase + python3-venv + binutils) ..."
  debootstrap --variant=minbase --include=python3,python3-venv,binutils,ca-certificates,tzdata,netbase \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  # Like debian:12-slim: no docs, man pages, locales or apt caches.
  rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,linda}/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache

  # --- the distroless-style runtime rootfs, from the build rootfs's package files ---
  rt="$work/runtime"
  mkdir -p "$rt"
  # Debian 12 is merged-/usr: /lib, /bin, ... are links into /usr.
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$rt/$d"; done
  mkdir -p "$rt"/usr/{bin,sbin,lib,lib64} "$rt"/etc "$rt"/var/lib/dpkg "$rt"/home/nonroot "$rt"/root
  install -d -m 1777 "$rt/tmp"
  # The packages gcr.io/distroless/python3-debian12 is made of (base + cc + python3).
  pkgs=(
    base-files netbase tzdata ca-certificates libc6 libssl3 libgcc-s1 libstdc++6 libgomp1
    libpython3.11-minimal python3.11-minimal libpython3.11-stdlib python3-distutils
    libbz2-1.0 libcom-err2 libcrypt1 libdb5.3 libexpat1 libffi8 libgssapi-krb5-2 libk5crypto3
    libkeyutils1 libkrb5-3 libkrb5support0 liblzma5 libmpdec3 libncursesw6 libnsl2 libreadline8
    libsqlite3-0 libtinfo6 libtirpc3 libuuid1 zlib1g
  )
  present=()
  for p in "${pkgs[@]}"; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not a shell variable
    if chroot "$root" dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
      present+=("$p")
    fi
  done
  # Regular files and symlinks of those packages, with merged-/usr paths made canonical.
  chroot "$root" dpkg-query -L "${present[@]}" 2>/dev/null |
    sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#' | sort -u |
    while IFS= read -r path; do
      [ -n "$path" ] || continue
      if [ -L "$root$path" ] || [ -f "$root$path" ]; then printf '%s\n' "${path#/}"; fi
    done | grep -vE '^usr/share/(doc|man|info|lintian|locale)/' >"$work/files"
  tar -C "$root" --no-recursion -cf - -T "$work/files" | tar -C "$rt" -xf -
  # Generated at install time, so not in any package's file list.
  cp -a "$root/etc/ssl/certs" "$rt/etc/ssl/"
  cp -a "$root/etc/localtime" "$root/etc/timezone" "$rt/etc/" 2>/dev/null || true
  ln -sf python3.11 "$rt/usr/bin/python3"
  # Package metadata, so SBOM scanners see the Debian packages (distroless ships status.d).
  chroot "$root" dpkg-query -s "${present[@]}" >"$rt/var/lib/dpkg/status"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rt/etc/group"
  chown 65532:65532 "$rt/home/nonroot"
  chmod 700 "$rt/root"
  for sh in bin/sh bin/bash bin/dash usr/bin/sh usr/bin/bash usr/bin/dash; do
    if [ -e "$rt/$sh" ]; then
      echo "runtime rootfs unexpectedly has a shell: $sh" >&2
      exit 1
    fi
  done

  tar --numeric-owner -C "$root" -cf "$build_tar.tmp" . && mv "$build_tar.tmp" "$build_tar"
  tar --numeric-owner -C "$rt" -cf "$runtime_tar.tmp" . && mv "$runtime_tar.tmp" "$runtime_tar"
  # Older keys' tarballs are dead weight.
  find "$CACHE_DIR" -maxdepth 1 -name '*.tar' ! -name "*-$KEY.tar" -delete
fi

path_env='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
$DOCKER import \
  --change "ENV $path_env" \
  --change "LABEL $LABEL=$KEY" \
  --change 'CMD ["/bin/bash"]' \
  "$build_tar" "$BUILD_IMAGE" >/dev/null
$DOCKER import \
  --change "ENV $path_env" \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL $LABEL=$KEY" \
  --change 'USER 65532:65532' \
  --change 'WORKDIR /home/nonroot' \
  --change 'ENTRYPOINT ["/usr/bin/python3.11"]' \
  "$runtime_tar" "$RUNTIME_IMAGE" >/dev/null
for image in "$BUILD_IMAGE" "$RUNTIME_IMAGE"; do
  printf '%s: %s MB\n' "$image" \
    "$($DOCKER image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f", $1/1e6}')"
done
