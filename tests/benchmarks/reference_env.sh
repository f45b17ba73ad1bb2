#!/usr/bin/env bash
# Build an environment where imagecorruptions 1.1.2 runs (it needs numpy < 2, scikit-image 0.20
# with `multichannel=True` replaced by `channel_axis=-1`, setuptools < 81 for pkg_resources, and
# OpenCV), then time it side by side with robustvit's corruptions on the same images.
#
#   tests/benchmarks/reference_env.sh                      # 224 px, severity 3, batch 64, 1 thread
#   tests/benchmarks/reference_env.sh --size 32 --batch 256
#   REF_ENV=/tmp/icref tests/benchmarks/reference_env.sh   # keep and reuse the environment
#
# Arguments are passed to tests/benchmarks/reference_compare.py (see its --help). The reference
# environment goes to a temporary folder, removed afterwards unless REF_ENV names one to keep.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

if [[ -n "${REF_ENV:-}" ]]; then
    env_dir="$REF_ENV"
else
    env_dir="$(mktemp -d -t icref.XXXXXX)"
    trap 'rm -rf "$env_dir"' EXIT
fi

if [[ ! -x "$env_dir/bin/python" ]] || ! "$env_dir/bin/python" -c "import imagecorruptions" 2>/dev/null; then
    echo "building the reference environment in $env_dir" >&2
    "$python" -m venv "$env_dir"
    "$env_dir/bin/pip" install -q "numpy<2" "scikit-image==0.20.0" "scipy<1.12" "setuptools<81" \
        "opencv-python-headless" "pillow<11"
    "$env_dir/bin/pip" install -q --no-deps "imagecorruptions==1.1.2"
    src="$("$env_dir/bin/python" -c "import importlib.metadata as m; print(m.distribution('imagecorruptions').locate_file('imagecorruptions/corruptions.py'))")"
    sed -i 's/multichannel=True/channel_axis=-1/g' "$src"
    "$env_dir/bin/python" -c "import imagecorruptions" >/dev/null
fi

cd "$root"
"$python" "$here/reference_compare.py" --ref-python "$env_dir/bin/python" "$@"
