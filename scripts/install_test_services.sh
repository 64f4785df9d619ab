#!/usr/bin/env bash
# Make sure every program the test suite runs is installed (the list: scripts/test_services.txt).
# Missing ones are installed with apt-get when this runs as root on Debian/Ubuntu; otherwise it
# stops with the missing programs and the command that installs them. Fast when nothing is missing.
#   scripts/install_test_services.sh [LIST]     (run by `make test`, `make test-fast`, `make bench*`)
set -euo pipefail
list="$(realpath "${1:-$(dirname "$0")/test_services.txt}")"

found() {  # on PATH, in sbin, or where Debian keeps PostgreSQL's server programs (not on PATH there)
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ||
    compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}

missing_programs=() packages=()
while read -r program package _; do
  case "$program" in ''|'#'*) continue ;; esac
  if ! found "$program"; then
    missing_programs+=("$program")
    [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
  fi
done < "$list"
[ "${#packages[@]}" -eq 0 ] && exit 0

echo "Test services missing: ${missing_programs[*]} (Debian packages: ${packages[*]})" >&2
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  for program in "${missing_programs[@]}"; do
    found "$program" || { echo "error: $program still missing after installing ${packages[*]}" >&2; exit 1; }
  done
  echo "Installed ${packages[*]}" >&2
else
  echo "error: cannot install them here (needs root and apt-get); run:" >&2
  echo "  sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
