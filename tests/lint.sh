#!/bin/sh
# Bans the C library calls that have bitten mail clients before.
set -u
bad=$(grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol|strtok|sscanf|popen|system)[[:space:]]*\(' src/*.c || true)
if [ -n "$bad" ]; then
	echo "banned calls:"
	echo "$bad"
	exit 1
fi
bad=$(grep -nE '\bexit[[:space:]]*\(' src/*.c | grep -v '^src/main.c' || true)
if [ -n "$bad" ]; then
	echo "exit() below main.c:"
	echo "$bad"
	exit 1
fi
echo "lint: ok"
