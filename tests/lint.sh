#!/bin/sh
# Bans the C library calls that have bitten mail clients before, and calls
# that go round in a circle between modules. Usage: lint.sh [OBJDIR]
# (default build/obj; `make lint` builds the objects first).
set -u
objdir=${1:-build/obj}
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
# The module call graph, one edge "caller callee" per object that uses a
# function (or global) another object defines; tsort fails on any cycle of
# two or more modules (an edge from a module to itself is allowed).
if ! ls "$objdir"/*.o >/dev/null 2>&1; then
	echo "lint: no objects in $objdir (run make first)"
	exit 1
fi
edges=$(for o in "$objdir"/*.o; do
	m=$(basename "$o" .o)
	nm "$o" | awk -v m="$m" '$1 == "U" { print "U", m, $2 }
		NF == 3 && $2 ~ /^[TDBR]$/ { print "D", m, $3 }'
done | awk '$1 == "D" { def[$3] = $2; next }
	{ n++; um[n] = $2; us[n] = $3 }
	END { for (i = 1; i <= n; i++) if (us[i] in def) print um[i], def[us[i]] }' | sort -u)
if ! loop=$(printf '%s\n' "$edges" | tsort 2>&1 >/dev/null); then
	echo "modules that call each other in a cycle:"
	echo "$loop"
	exit 1
fi
echo "lint: ok"
