#!/usr/bin/env bash
# Mesa's lavapipe (a software Vulkan driver) from Debian bookworm-backports: with Mesa ≥ 25 it gives
# Dawn a full WebGPU adapter (shader-f16, subgroups) on a machine without a GPU. Plain bookworm's
# Mesa 22 is refused by Dawn. Idempotent; needs root (CI runs as root).
set -euo pipefail
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]'; then
  echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
  exit 0
fi
sources=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$sources" ]; then
  # Reuse the mirror and keyring this machine already uses for bookworm itself.
  main=$(awk -v RS= '/Suites:[^\n]*bookworm( |$|\n)/ && !/security/' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 20)
  uri=$(printf '%s\n' "$main" | sed -n 's/^URIs: *//p' | head -n 1)
  keyring=$(printf '%s\n' "$main" | sed -n 's/^Signed-By: *//p' | head -n 1)
  if [ -z "$uri" ]; then
    uri=$(sed -n 's/^deb \([^ ]*\) bookworm main.*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
  fi
  [ -n "$uri" ] || { echo "lavapipe: cannot find this machine's Debian mirror in /etc/apt" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}" > "$sources"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
