#!/usr/bin/env bash
# Add KD Studio to the desktop's application menu (Linux, freedesktop.org menus).
# Run it from the environment where `kdstudio` is installed:  bash packaging/install-desktop-entry.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exe="$(command -v kdstudio || true)"
if [ -z "$exe" ]; then
  echo "kdstudio is not on PATH: activate the virtual environment it is installed in first." >&2
  exit 1
fi
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
cp "$here/../resources/icons/kdstudio.svg" "$icons/kdstudio.svg"
sed "s|^Exec=kdstudio|Exec=$exe|" "$here/kdstudio.desktop" > "$apps/kdstudio.desktop"
echo "Installed $apps/kdstudio.desktop (runs $exe)."
