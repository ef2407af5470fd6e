#!/usr/bin/env bash
# A font that draws Chinese, for the report and the board previews (district and company names):
# WenQuanYi Micro Hei from Debian's packages (fonts-wqy-microhei, 4.5 MB). Idempotent.
# Without root it only says what to install: the report still renders, with Latin names.
set -euo pipefail
pkg=fonts-wqy-microhei
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  printf 'tianyan stack: no CJK font; the report shows Latin names only (as root: apt-get install %s)\n' "$pkg" >&2
  exit 0
fi
printf 'tianyan stack: installing %s from Debian\n' "$pkg" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "$pkg" >&2; then
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "$pkg" >&2
fi
