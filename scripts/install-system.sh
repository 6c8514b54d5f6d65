#!/usr/bin/env bash
# Install the system packages `live` needs, where this machine lacks them.
#   scripts/install-system.sh run    PortAudio, JACK, FFmpeg (to play a show)
#   scripts/install-system.sh test   the same plus Xvfb, liblo-tools and Chromium with its driver (to run the test suite)
# Debian/Ubuntu: apt-get as root or through sudo. Elsewhere: prints what to install and carries on.
set -euo pipefail
want=(libportaudio2 jackd2 libjack-jackd2-0 ffmpeg)
[ "${1:-run}" = test ] && want+=(xvfb liblo-tools chromium chromium-driver)

if [ "$(uname -s)" = Darwin ]; then
  echo "macOS: install PortAudio and FFmpeg with Homebrew if missing: brew install portaudio ffmpeg"
  exit 0
fi
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "Not a Debian/Ubuntu system: install PortAudio, JACK 2, FFmpeg${1:+ (and for tests: Xvfb, liblo tools)} with your package manager."
  exit 0
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "Missing system packages: ${missing[*]}"
  echo "  fix: sudo apt-get install ${missing[*]}   (then run make again)"
  exit 0
fi
echo "Installing system packages: ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
