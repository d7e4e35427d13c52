# shellcheck shell=bash
# Sourced by scripts/dev.sh and scripts/tools.sh: WSL's pitfalls, named before they bite.

on_wsl() { [ -n "${WSL_DISTRO_NAME:-}" ] || grep -qi microsoft /proc/version 2>/dev/null; }

# windows_drive_warning DIR: a clone on a Windows drive (/mnt/c/...) gets no file events for
# edits made from Windows, so Tilt never reloads; it is also slow to build in.
windows_drive_warning() {
  on_wsl || return 0
  case $1 in
    /mnt/[a-zA-Z]/*) echo "warning: $1 is on a Windows drive: edits made from Windows send WSL no file events, so Tilt does not reload on save (and builds there are slow). Clone inside the Linux filesystem instead, e.g. git clone <repo> ~/dapr-spin-hello, and edit there (VS Code: the WSL extension)." >&2 ;;
  esac
}
