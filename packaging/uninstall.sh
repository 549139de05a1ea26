#!/usr/bin/env bash
# Remove what packaging/install.sh added (Linux and macOS): the private environment, the
# `kdstudio` command in ~/.local/bin and the menu entry. Your runs, prepared teachers and
# settings are kept unless you pass --purge.
#
#   bash packaging/uninstall.sh [--purge] [--yes]
#
#   --purge   also delete every run, prepared teacher and the app's settings
#   --yes     do not ask before --purge deletes them
set -euo pipefail

purge=0 yes=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1; shift ;;
    --yes|-y) yes=1; shift ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

case "$(uname -s)" in
  Linux) data="${XDG_DATA_HOME:-$HOME/.local/share}/kdstudio"; config="${XDG_CONFIG_HOME:-$HOME/.config}/kdstudio" ;;
  Darwin) data="$HOME/Library/Application Support/kdstudio"; config="$data" ;;
  *) echo "This script is for Linux and macOS; on Windows run packaging/uninstall.ps1" >&2; exit 1 ;;
esac
marker="# KD Studio launcher (packaging/install.sh); packaging/uninstall.sh removes it"
removed() { printf 'Removed %s\n' "$1"; }

if [ -d "$data/env" ]; then rm -rf "$data/env"; removed "$data/env"; fi
launcher="$HOME/.local/bin/kdstudio"
if [ -e "$launcher" ]; then
  if grep -qsF "$marker" "$launcher"; then rm -f "$launcher"; removed "$launcher"
  else echo "Left $launcher alone: another installation put it there."; fi
fi
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icon="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps/kdstudio.svg"
for f in "$apps/kdstudio.desktop" "$icon"; do
  if [ -f "$f" ]; then rm -f "$f"; removed "$f"; fi
done
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" 2>/dev/null || true
if [ -d "$HOME/Applications/KD Studio.app" ]; then
  rm -rf "$HOME/Applications/KD Studio.app"; removed "$HOME/Applications/KD Studio.app"
fi

if [ "$purge" = 1 ]; then
  if [ "$yes" = 0 ]; then
    read -r -p "Delete every run, prepared teacher and setting in $data? [y/N] " answer
    case "$answer" in y|Y|yes|YES) ;; *) echo "Kept $data."; exit 0 ;; esac
  fi
  for d in "$data" "$config"; do
    if [ -d "$d" ]; then rm -rf "$d"; removed "$d"; fi
  done
  [ -n "${KDSTUDIO_HOME:-}" ] && echo "KDSTUDIO_HOME is set: the runs in $KDSTUDIO_HOME were not touched."
elif [ -d "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
  echo "Kept your runs, prepared teachers and settings in $data"
  [ "$config" != "$data" ] && [ -d "$config" ] && echo "and $config"
  echo "(bash ${BASH_SOURCE[0]} --purge deletes them)."
else
  rmdir "$data" 2>/dev/null || true
fi
echo "Models downloaded from the Hugging Face Hub stay in its cache (~/.cache/huggingface)."
echo "KD Studio is uninstalled."
