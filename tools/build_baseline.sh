#!/usr/bin/env bash
# Build the engine and Python sources of another commit (default: ccb99ce, the last commit before the
# engine restructure of issue 9) into a folder, for side-by-side benchmarks:
#     tools/build_baseline.sh [REV] [DIR]      (DIR default: build/baseline-REV)
# then  PYINV_BASELINE=DIR python benchmarks/bench_inversion.py
# The folder holds src/ (that commit's Python package) and build/dev/site (its engine); it is
# ignored by git (build/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-ccb99ce}
dir=${2:-$root/build/baseline-$rev}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
git -C "$root" archive "$rev" | tar -x -C "$dir"
"$dir/tools/devbuild.sh" "$dir/build/dev" >/dev/null
echo "$dir"
