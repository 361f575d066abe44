#!/usr/bin/env bash
# Installs what `make bench` needs beyond the test servers: Debian's wrk (the load
# generator of bench/control_ack.py), and the servers of tools/install-servers.sh.
# py-spy (for --profile) is a Python package: bench/requirements.txt. Without root or
# apt-get it only says what is missing.
set -euo pipefail

bash "$(dirname "$0")/install-servers.sh"
command -v wrk >/dev/null 2>&1 && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing wrk"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
else
  echo "note: wrk is missing and cannot be installed here; bench/control_ack.py needs it" \
       "(or run it with --generator python)" >&2
fi
