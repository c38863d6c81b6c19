#!/bin/sh
# Install the Debian packages given as arguments that are not installed yet.
# As root: apt-get update once, then apt-get install.  Otherwise print the
# exact command to run.
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "imapgw: missing Debian packages; run as root:" >&2
	echo "  apt-get update && $cmd" >&2
	exit 1
fi
echo "imapgw: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
$cmd || exit 1
