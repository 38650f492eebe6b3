#!/bin/sh
# Sends one message through a throwaway local Postfix and fetches sample mail
# (and that message) from a throwaway local Dovecot into ./demo/Maildir.
set -eu
cd "$(dirname "$0")/.."

sh tests/deps.sh
make demo
