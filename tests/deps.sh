#!/bin/sh
# Installs the Debian packages mailpull's build, tests, demo and bench need,
# when any is missing. A policy-rc.d that refuses service starts is put in
# place first (only if none exists) so the system-wide Dovecot and Postfix
# stay down: the tests run private ones (tests/dovecot.py, tests/postfix.py),
# and Postfix is installed with "No configuration" (its system instance is
# never set up; /etc/postfix/main.cf is not used by the tests).
#
# Cyrus IMAP, the tests' second server, cannot be installed beside Dovecot
# (both provide imap-server and pop3-server), so its packages are unpacked
# into CYRUS_ROOT instead (tests/cyrus.py runs them from there); the shared
# libraries they need install normally (the libs in PACKAGES).
set -eu

PACKAGES="build-essential pkg-config libssl-dev libconfuse-dev libsystemd-dev libcmocka-dev
libcurl4-openssl-dev libjansson-dev libidn-dev
clang dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl python3 python3-pytest python3-pytest-xdist mpop isync msmtp
mandoc groff systemd time valgrind
libsasl2-modules libsasl2-modules-db libxapian30 libical3 libicu72 libjansson4 libpq5 libwrap0
libxml2 libsqlite3-0 libeatmydata1"

CYRUS_ROOT=${CYRUS_ROOT:-/var/cache/mailpull-test/cyrus}
CYRUS_DEBS="cyrus-common cyrus-imapd cyrus-pop3d sasl2-bin"
# What tests/cyrus.py runs: each must find all its libraries.
CYRUS_BINS="usr/lib/cyrus/bin/master usr/lib/cyrus/bin/imapd usr/lib/cyrus/bin/pop3d
usr/lib/cyrus/bin/ctl_cyrusdb usr/lib/cyrus/bin/idled usr/sbin/saslpasswd2"

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

if [ -n "$missing" ]; then
	echo "deps.sh: installing:$missing"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod 0755 /usr/sbin/policy-rc.d
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "postfix postfix/main_mailer_type select No configuration" |
		$SUDO debconf-set-selections
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi

# The stamp is written last, so a root without it (an interrupted unpack) is
# made again from scratch.
if [ -e "$CYRUS_ROOT/.complete" ]; then
	exit 0
fi
echo "deps.sh: unpacking$(printf ' %s' $CYRUS_DEBS) into $CYRUS_ROOT"
$SUDO mkdir -p "$(dirname "$CYRUS_ROOT")"
work=$($SUDO mktemp -d "$CYRUS_ROOT.new.XXXXXX")
trap '$SUDO rm -rf "$work"' EXIT
$SUDO mkdir "$work/debs" "$work/root"
# apt's download sandbox user must be able to write there.
$SUDO chmod 0755 "$work"
$SUDO chown _apt "$work/debs" 2>/dev/null || true
# shellcheck disable=SC2086
(cd "$work/debs" && $SUDO apt-get download $CYRUS_DEBS)
for deb in "$work"/debs/*.deb; do
	$SUDO dpkg-deb -x "$deb" "$work/root"
	dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" |
		$SUDO tee -a "$work/root/.versions" >/dev/null
done
libdir=$(echo "$work"/root/usr/lib/*-linux-gnu*)
for b in $CYRUS_BINS; do
	nf=$(LD_LIBRARY_PATH=$libdir ldd "$work/root/$b" | grep 'not found' || true)
	if [ -n "$nf" ]; then
		echo "deps.sh: $b misses libraries (add their packages to PACKAGES):" >&2
		echo "$nf" >&2
		exit 1
	fi
done
$SUDO rm -rf "$CYRUS_ROOT"
$SUDO mv "$work/root" "$CYRUS_ROOT"
$SUDO touch "$CYRUS_ROOT/.complete"
