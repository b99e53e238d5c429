#!/usr/bin/env bash
# Developer build without installing: compiles the engine into BUILD_DIR (default build/dev) and
# places the extension in BUILD_DIR/site/pyinv/, so that
#     PYTHONPATH=BUILD_DIR/site:src python -c "import pyinv"
# uses the working tree's Python sources with the freshly built engine (pyinv extends its package
# path with pkgutil.extend_path). Users install with `pip install .` instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=${1:-$root/build/dev}
mkdir -p "$bdir"
bdir=$(cd "$bdir" && pwd)
cd "$root"
if [ ! -f "$bdir/build.ninja" ]; then
  meson setup "$bdir" >/dev/null
elif ! ninja -C "$bdir" -t query build.ninja >/dev/null 2>&1; then
  meson setup --reconfigure "$bdir" >/dev/null
fi
# pick up Fortran files added since the last configure
meson setup --reconfigure "$bdir" >/dev/null 2>&1 || true
ninja -C "$bdir" >"$bdir/ninja.log" 2>&1 || { grep -E 'Error|error:|FAILED' -A4 "$bdir/ninja.log" | head -60; exit 1; }
mkdir -p "$bdir/site/pyinv"
cp -f "$bdir"/_engine*.so "$bdir/site/pyinv/"
echo "built: PYTHONPATH=$bdir/site:$root/src"
