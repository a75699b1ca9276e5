#!/usr/bin/env bash
# Icarus Verilog is the optional second simulator (PyPI has none). Installed from Debian when
# we are root and apt works; otherwise the Icarus tests are skipped with a message.
command -v iverilog >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq iverilog >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq iverilog >/dev/null 2>&1; }) \
    && echo "installed iverilog from Debian" || echo "note: could not install iverilog; Icarus tests will be skipped"
fi
