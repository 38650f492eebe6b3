#!/bin/sh
# Installs the Debian packages mailpull's build, tests, demo and bench need,
# when any is missing. A policy-rc.d that refuses service starts is put in
# place first (only if none exists) so the system-wide Dovecot stays down:
# the tests run a private one.
set -eu

PACKAGES="build-essential pkg-config libssl-dev libconfuse-dev libsystemd-dev libcmocka-dev
clang dovecot-core dovecot-imapd dovecot-pop3d openssl python3 python3-pytest python3-pytest-xdist mpop isync
mandoc groff systemd time valgrind"

if [ "$(id -u)" -eq 0 ]; then
	SUDO=
else
	SUDO=sudo
fi

missing=
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done

if [ -z "$missing" ]; then
	exit 0
fi

echo "deps.sh: installing:$missing"
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 0755 /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
