#!/usr/bin/env bash
# Icarus Verilog (iverilog + vvp), the second simulator. PyPI has none, so it comes from Debian.
# `make test` runs this first: the test suite needs it. Installs it with apt-get when we are root
# (or have password-less sudo); otherwise, or when apt-get fails, stops with what to run instead.
set -u
have() { command -v iverilog >/dev/null 2>&1 && command -v vvp >/dev/null 2>&1; }
have && exit 0
apt=()
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt=(apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then apt=(sudo -n apt-get)
  fi
fi
if [ ${#apt[@]} -gt 0 ]; then
  echo "installing iverilog from Debian (the tests need Icarus Verilog) ..."
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  { "${apt[@]}" install -y -qq iverilog || { "${apt[@]}" update -qq && "${apt[@]}" install -y -qq iverilog; }; } >"$log" 2>&1
  if have; then rm -f "$log"; echo "installed iverilog from Debian"; exit 0; fi
  echo "apt-get could not install iverilog:" >&2
  tail -n 15 "$log" >&2
  rm -f "$log"
fi
echo "error: Icarus Verilog (iverilog, vvp) is not installed and could not be installed here; the tests need it." >&2
echo "       Install it (Debian/Ubuntu: sudo apt-get install iverilog; elsewhere: your system's iverilog package)," >&2
echo "       then run make test again." >&2
exit 1
