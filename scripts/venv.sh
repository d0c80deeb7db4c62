# Sourced by scripts/demo.sh and scripts/tour.sh (which define `say`): build or check the
# repository's .venv on a Python 3.11 every user of the machine may run, when there is one
# (the first python3.11 on PATH, else /usr/bin/python3.11, ...): one under root's home (a
# pyenv build, 0700) would leave .venv/bin/isolate usable by root alone. PYTHON=... chooses
# the interpreter instead. It says which one it used.

# Whether every user may run the file $1: it and each directory above it have the
# 'others' execute bit, on the path as given and on every path its symlinks lead to.
world_executable() {
    local path=$1 hops=0 next
    while :; do
        case $path in
            /*) ;;
            *) return 1 ;;
        esac
        reachable "$path" || return 1
        [ -L "$path" ] || break
        next=$(readlink -- "$path") || return 1
        case $next in
            /*) path=$next ;;
            *) path=$(dirname -- "$path")/$next ;;
        esac
        hops=$((hops + 1))
        [ "$hops" -lt 40 ] || return 1
    done
    [ -f "$path" ] && reachable "$(readlink -f -- "$path")"
}

# Whether $1 and every directory above it have the 'others' execute bit; if not, $blocked
# is the first that lacks it.
blocked=
reachable() {
    local path=$1 mode
    while :; do
        blocked=$path
        mode=$(stat -L -c %a -- "$path" 2>/dev/null) || return 1
        ((8#$mode & 1)) || return 1
        [ "$path" = / ] && return 0
        path=$(dirname -- "$path")
    done
}

# The interpreter a venv made by $1 runs on: pyenv's shims and venvs lead to another.
base_interpreter() {
    "$1" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)'
}

# Prints the interpreter to build .venv on: the first candidate with venv whose interpreter
# every user may run, else the first with venv (saying that others cannot run isolate).
pick_python() {
    local candidate base fallback="" seen=" "
    if [ -n "${PYTHON:-}" ]; then
        base=$(base_interpreter "$PYTHON") || {
            say "PYTHON=$PYTHON does not run"
            return 1
        }
        world_executable "$base" ||
            say "warning: PYTHON=$PYTHON runs $base, which other users cannot run (mode of" \
                "$blocked): only you will be able to run .venv/bin/isolate"
        printf '%s\n' "$PYTHON"
        return 0
    fi
    for candidate in $(type -ap python3.11 || true) /usr/bin/python3.11 /usr/local/bin/python3.11; do
        case $seen in *" $candidate "*) continue ;; esac
        seen="$seen$candidate "
        [ -x "$candidate" ] || continue
        base=$(base_interpreter "$candidate" 2>/dev/null) || continue
        if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
            say "skipping $candidate: no venv module (apt-get install python3.11-venv)"
            continue
        fi
        if world_executable "$base"; then
            printf '%s\n' "$base"
            return 0
        fi
        say "skipping $candidate ($base): other users cannot run it (mode of $blocked)"
        [ -n "$fallback" ] || fallback=$base
    done
    if [ -n "$fallback" ]; then
        say "warning: no python3.11 every user may run; using $fallback:" \
            "only you will be able to run .venv/bin/isolate"
        printf '%s\n' "$fallback"
        return 0
    fi
    say "no python3.11 with venv found (on Debian or Ubuntu: apt-get install python3.11-venv)"
    return 1
}

# Builds .venv (with isolate installed, editable) unless it exists; says what it runs on.
# Run from the top of the repository.
ensure_venv() {
    local python
    if [ ! -x .venv/bin/isolate ]; then
        python=$(pick_python)
        say "building .venv on $python"
        "$python" -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -e .
    elif world_executable "$PWD/.venv/bin/python"; then
        say ".venv runs on $(readlink -f .venv/bin/python)"
    else
        say "warning: other users cannot run .venv/bin/isolate (mode of $blocked);" \
            "remove .venv to build it again on a python they can run"
    fi
}
