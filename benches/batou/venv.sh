# Sourced by the batou benchmarks (with `root` set to the project and a
# `log` function): batou 2.7.1 in a venv under target/batou/venv, installed
# from PyPI unless it is already there at the pinned versions. Sets `venv`,
# `batou_version` and `setuptools_version`.

venv=$root/target/batou/venv
# batou 2.7.1 imports pkg_resources, which setuptools dropped after 81.
batou_version=2.7.1
setuptools_version=80.9.0

# Let batou cache its components' bytecode as it would for a user; some
# sandboxes set this to keep trees clean.
unset PYTHONDONTWRITEBYTECODE

if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(0 if m.version('batou') == '$batou_version' \
and m.version('setuptools') == '$setuptools_version' else 1)" 2>/dev/null; then
    log "installing batou $batou_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "batou==$batou_version" "setuptools==$setuptools_version"
fi
