# shellcheck shell=bash
# Sourced by scripts/lib/tools_table.sh: reading a pin from a tools module's go.mod, and
# comparing versions (whether an installed tool is new enough).

# go_mod_version TOOL MODULE: the version of MODULE that scripts/tools/TOOL/go.mod requires.
# shellcheck disable=SC2154  # repo: set by the script that sources this file
go_mod_version() { awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) {print ($1 == m ? $2 : $3); exit}' "$repo/scripts/tools/$1/go.mod"; }


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
