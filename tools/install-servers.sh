#!/usr/bin/env bash
# Installs the server binaries the test suite starts for itself (Redis, PostgreSQL) when
# they are missing. The tests run their own throwaway instances on free loopback ports;
# no system service is used. Without root or apt-get it only says what is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: ${need[*]} missing and cannot be installed here; tests that need them are skipped" \
       "(under CI=true they fail)" >&2
fi
