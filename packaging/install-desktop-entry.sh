#!/usr/bin/env bash
# Add KD Studio to the desktop's application menu (Linux, freedesktop.org menus).
#   bash packaging/install-desktop-entry.sh [--exe COMMAND] [--icon SVG]
# Without --exe the entry runs the `kdstudio` on PATH (activate its environment first); without
# --icon it uses resources/icons/kdstudio.svg of this folder. packaging/install.sh calls it with
# both; packaging/uninstall.sh removes the entry and the icon.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exe="" icon="$here/../resources/icons/kdstudio.svg"
while [ $# -gt 0 ]; do
  case "$1" in
    --exe) exe="${2:?--exe needs a path}"; shift 2 ;;
    --icon) icon="${2:?--icon needs an .svg file}"; shift 2 ;;
    *) echo "install-desktop-entry.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$exe" ] || exe="$(command -v kdstudio || true)"
if [ -z "$exe" ]; then
  echo "kdstudio is not on PATH: activate the virtual environment it is installed in first, or pass --exe." >&2
  exit 1
fi
[ -f "$icon" ] || { echo "The icon '$icon' does not exist." >&2; exit 1; }
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
cp "$icon" "$icons/kdstudio.svg"
# The Exec key quotes a path with spaces (the desktop entry specification's quoting).
case "$exe" in *" "*) exec_value="\"$exe\"" ;; *) exec_value="$exe" ;; esac
while IFS= read -r line; do
  [ "$line" = "Exec=kdstudio" ] && line="Exec=$exec_value"
  printf '%s\n' "$line"
done < "$here/kdstudio.desktop" > "$apps/kdstudio.desktop.tmp"
mv "$apps/kdstudio.desktop.tmp" "$apps/kdstudio.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" 2>/dev/null || true
echo "Installed $apps/kdstudio.desktop (runs $exe) and its icon."
