# Sourced by the scripts that need a Python venv from PyPI (never run on its own).
# ensure_venv DIR "import a, b" PACKAGE...: create DIR as a venv and install the
# packages unless its python already imports what the second argument names.
ensure_venv() {
    local venv="$1" imports="$2"
    shift 2
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "$imports" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    fi
}
