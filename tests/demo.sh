#!/bin/sh
# Fetches sample mail from a throwaway local Dovecot into ./demo/Maildir.
set -eu
cd "$(dirname "$0")/.."

sh tests/deps.sh
make demo
