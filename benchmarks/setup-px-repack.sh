#!/usr/bin/env bash
# Install px-repack (pypx, the Python original) into its own virtual environment so that
# `dicom-repack bench` can race it. It needs pydicom 2 while dicom-repack needs pydicom 3,
# hence a separate venv; `dicom-repack bench` looks for ./.venv-px/bin/px-repack by itself
# (or give --px-repack PATH).
#
#   benchmarks/setup-px-repack.sh            # -> ./.venv-px
#   benchmarks/setup-px-repack.sh /opt/px    # -> /opt/px
#   PYPX_VERSION=3.12.6 PYTHON=python3.11 benchmarks/setup-px-repack.sh
#
# 3.12.6 is the version the reference outputs in shared/data/expected were made with.
set -euo pipefail

venv=${1:-.venv-px}
python=${PYTHON:-python3}
version=${PYPX_VERSION:-3.12.6}

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "pypx==${version}" "pydicom>=2.4,<3"

if [ ! -x "$venv/bin/px-repack" ]; then
    echo "setup-px-repack: pypx installed but $venv/bin/px-repack is missing" >&2
    exit 1
fi
"$venv/bin/python" -c 'import importlib.metadata as m; print("pypx", m.version("pypx"), "with pydicom", m.version("pydicom"))'
echo "px-repack: $(cd "$venv" && pwd)/bin/px-repack"
echo "run: dicom-repack bench --px-repack $(cd "$venv" && pwd)/bin/px-repack   (found by itself when it is ./.venv-px)"
