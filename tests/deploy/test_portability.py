"""The scripts on the laptops this machine is not: WSL (line endings, a clone on a Windows
drive), macOS (its lsof, its bash 3.2). What cannot run here runs against stand-ins (lsof and
ps as macOS answers) or is checked in the source (bash 3.2, which no registry here ships:
Debian's bash and bash-static are 5.2, and PyPI and npm have no bash build)."""

import re
import shutil
import subprocess

import pytest

from deploy_helpers import REPO


def run_bash(script, path, **env):
    return subprocess.run([shutil.which("bash"), "-c", script], cwd=REPO, env={"PATH": path, **env}, capture_output=True, text=True, timeout=30)


# ---- WSL

def test_every_script_is_checked_out_with_lf_line_endings():
    # A Git for Windows clone (core.autocrlf=true) would otherwise give every script CRLF.
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    scripts = [f for f in files if f.endswith((".sh", ".py", ".yaml", ".toml", ".env")) or f in ("Tiltfile", ".ci/run")
               or (REPO / f).read_bytes().startswith(b"#!")]
    assert {"scripts/dev.sh", "scripts/tools.sh", ".ci/run", "Tiltfile", "scripts/versions.env"} <= set(scripts)
    attrs = subprocess.run(["git", "check-attr", "eol", "--", *scripts], cwd=REPO, capture_output=True, text=True, check=True).stdout
    not_lf = [line for line in attrs.splitlines() if not line.endswith(": eol: lf")]
    assert not not_lf, not_lf


@pytest.mark.parametrize("directory, wsl, warns", [
    ("/mnt/c/Users/you/dapr-spin-hello", "Ubuntu", True),
    ("/home/you/dapr-spin-hello", "Ubuntu", False),
    ("/mnt/c/Users/you/dapr-spin-hello", None, False),  # a Linux machine with a /mnt/c is not WSL
])
def test_a_clone_on_a_windows_drive_is_warned_about(directory, wsl, warns):
    if wsl is None and "microsoft" in open("/proc/version").read().lower():
        pytest.skip("this machine is WSL")
    env = {"WSL_DISTRO_NAME": wsl} if wsl else {}
    p = run_bash(f'. scripts/lib/wsl.sh; windows_drive_warning "{directory}"', "/usr/bin:/bin", **env)
    assert p.returncode == 0
    if warns:
        assert f"warning: {directory} is on a Windows drive: edits made from Windows send WSL no file events" in p.stderr
        assert "Clone inside the Linux filesystem" in p.stderr
    else:
        assert p.stderr == ""


def test_dev_sh_runs_the_windows_drive_check_on_the_repo():
    # dev.sh cannot be moved to /mnt/c here: this checks that it asks about its own real path.
    assert re.search(r'^\. scripts/lib/wsl\.sh\nwindows_drive_warning "\$\(pwd -P\)"$', (REPO / "scripts/dev.sh").read_text(), re.M)


# ---- macOS: lsof cuts process names to 9 characters

def test_a_port_held_by_docker_desktop_on_macos_is_named(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for util in ("basename", "head"):
        (bin_dir / util).symlink_to(shutil.which(util))
    # No ss on macOS. Its lsof lists COMMAND as "com.docke"; ps names the executable whole.
    (bin_dir / "lsof").write_text('#!/bin/sh\ncase " $* " in *" -t "*) echo 4242 ;; *) echo "COMMAND    PID USER   FD   TYPE NODE NAME"\n'
                                  '  echo "com.docke 4242 you  123u  IPv4  TCP 127.0.0.1:8000 (LISTEN)" ;; esac\n')
    (bin_dir / "ps").write_text('#!/bin/sh\n[ "$*" = "-o comm= -p 4242" ] && echo /Applications/Docker.app/Contents/MacOS/com.docker.backend\n')
    for tool in ("lsof", "ps"):
        (bin_dir / tool).chmod(0o755)
    p = run_bash('. scripts/lib/ports.sh; port_taken 8000 APP_PORT "the app"', str(bin_dir))
    assert "port 8000 (the app) is taken by com.docker.backend (pid 4242): a Docker container's published port (docker ps --filter publish=8000)" in p.stderr, p.stderr


# ---- bash 3.2 (macOS's /bin/bash): no bash 4 constructs

# Each construct with the bash release that brought it, from bash's NEWS file. Allowed, as
# they are in 3.2: printf -v (3.1), += (3.1), read -a, [[ =~ ]], $'...', process substitution.
BASH4_ONLY = {
    "associative arrays, declare -l/-u (4.0), -g (4.2), -n namerefs (4.3)": r"\b(declare|local|typeset)\s+(-\w+\s+)*-\w*[AluUgn]\b",
    "local - (4.4)": r"\blocal\s+-(\s|$)",
    "case-modifying expansions ${v^^} ${v,,} (4.0)": r"\$\{[#!]?\w+(\[[^]]*\])?(\^|,)",
    "mapfile/readarray (4.0)": r"\b(mapfile|readarray)\b",
    "coproc (4.0)": r"\bcoproc\b",
    "|& (4.0)": r"\|&",
    "&>> (4.0)": r"&>>",
    ";& and ;;& case terminators (4.0)": r";;?&",
    "read -i (4.0), read -N (4.1), fractional read -t (4.0)": r"\bread\b[^|;]*\s(-\w*[iN]\b|-t\s*\d*\.\d)",
    "$BASHPID (4.0), EPOCHSECONDS/EPOCHREALTIME (5.0)": r"\$\{?(BASHPID|EPOCHSECONDS|EPOCHREALTIME)\b",
    "shopt globstar/autocd/checkjobs/dirspell (4.0), lastpipe (4.2), inherit_errexit (4.4)":
        r"\bshopt\s+-s\s+(globstar|autocd|checkjobs|dirspell|lastpipe|inherit_errexit)\b",
    "{var}> file descriptor variables (4.1)": r"(^|\s)\{[A-Za-z_]\w*\}[<>]",
    "test -v (4.2)": r"\[\[?\s+-v\s",
    "printf %(fmt)T (4.2)": r"%\([^)]*\)T",
    "\\u escapes in $'...' (4.2)": r"\$'[^']*\\[uU][0-9a-fA-F]",
    "negative array subscripts (4.2, assignment 4.3)": r"(\$\{\w+\[-\d+\]|\b\w+\[-\d+\]=)",
    "${v@Q} transformations (4.4)": r"\$\{\w+(\[[^]]*\])?@[QEPAaKkULu]\}",
    "wait -n (4.3)": r"\bwait\s+-\w*n\b",
}


def bash_scripts():
    files = subprocess.run(["git", "ls-files", "scripts", ".ci"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if re.match(r"#!.*\bbash\b|# shellcheck shell=bash", (REPO / f).read_text(errors="replace"))]


def bash4_constructs(text):
    """(line number, construct) for each bash-4-only construct outside comments."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = re.sub(r"(^|\s)#.*$", "", line)
        found += [(number, name) for name, pattern in BASH4_ONLY.items() if re.search(pattern, code)]
    return found


@pytest.mark.parametrize("snippet", [
    "declare -A seen=()", "local -n ref=$1", "declare -g x=1", "echo ${name,,}", "echo ${name^^}", "mapfile -t lines < f",
    "coproc cat", "make |& tee log", "cmd &>> log", "  a) echo a ;&", "  a) echo a ;;&", "read -r -i x v", "read -N 3 v",
    "read -t 0.5 v", "echo $BASHPID", "shopt -s globstar", "exec {fd}>file", "[[ -v name ]]", "printf '%(%F)T' -1",
    "echo $'\\u00e9'", "echo ${a[-1]}", "a[-1]=x", "echo ${v@Q}", "wait -n", "local -",
])
def test_the_bash4_check_catches(snippet):
    assert bash4_constructs(snippet), snippet


def test_the_bash4_check_passes_bash_3_2_code():
    bash32 = """printf -v line '%q up' "$x"; targets+=(all); IFS=. read -r -a have <<<"$1"
[[ $runtime == containerd://* ]]; [[ $v =~ ^[0-9]+$ ]]; echo "${v:-default}" "${#a[@]}" "${a[@]:1}" "${!var}"
case $x in a) echo a ;; esac; local -a list; local -r fixed=1; done < <(cmd) # declare -A in a comment"""
    assert bash4_constructs(bash32) == []


def test_scripts_use_nothing_newer_than_bash_3_2():
    # macOS ships bash 3.2. Not checkable here: "${a[@]}" of an empty array under set -u, an
    # error before bash 4.4 (the scripts write ${a[@]+"${a[@]}"} where an array may be empty).
    scripts = bash_scripts()
    assert {"scripts/cluster.sh", "scripts/cluster/checks.sh", "scripts/lib/ports.sh", ".ci/run"} <= set(scripts)
    found = {f: bash4_constructs((REPO / f).read_text()) for f in scripts}
    assert not {f: c for f, c in found.items() if c}
