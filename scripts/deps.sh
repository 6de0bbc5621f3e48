#!/bin/sh
# Install the Debian 12 packages bitplan needs to build, test and run.
set -eu
PKGS="cmake make gcc pkg-config libglpk-dev glpk-utils libzmq3-dev libmsgpack-dev \
libcmocka-dev libjansson-dev libsodium-dev libopenblas-dev liblapacke-dev python3 \
gnuplot-nox coinor-cbc"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
