# shellcheck shell=bash
# Sourced by scripts/tools.sh and scripts/cluster/checks.sh: is an installed tool new enough.

version_at_least() { # HAVE WANT, each X[.Y[.Z]]
  local i have want
  IFS=. read -r -a have <<<"$1"
  IFS=. read -r -a want <<<"$2"
  for i in 0 1 2; do
    [ "${have[i]:-0}" -gt "${want[i]:-0}" ] && return 0
    [ "${have[i]:-0}" -lt "${want[i]:-0}" ] && return 1
  done
  return 0
}
