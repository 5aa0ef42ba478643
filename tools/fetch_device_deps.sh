#!/usr/bin/env bash
# Downloads the Debian 12 packages of the build's host libraries into .deps/ (git-ignored through
# .git/info/exclude), for a GPU machine whose image has nvcc and CMake but not these -dev packages
# and cannot reach a package mirror: name .deps in the device call's carry and tools/gpu_check.sh
# unpacks them under its build directory (nothing is installed system-wide). About 14 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.deps/' "$exclude" 2>/dev/null || echo '/.deps/' >>"$exclude"
mkdir -p .deps
cd .deps
apt-get download doctest-dev libcli11-dev nlohmann-json3-dev libopenblas-dev libopenblas-pthread-dev \
  libopenblas0-pthread libgfortran5 libquadmath0 libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 \
  pkgconf-bin libpkgconf3
ls -la
