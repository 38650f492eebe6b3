#!/bin/sh
# Everything CI checks: dependencies, the build with warnings as errors and
# the whole test suite, the suite again under ASan + UBSan, a clang build,
# and every libFuzzer harness for FUZZ_SECONDS (30) each: a smoke test;
# `make fuzz FUZZ_SECONDS=600` is the long run.
set -eu
cd "$(dirname "$0")/.."

sh tests/deps.sh
make lint
mandoc -T lint -W warning man/mailpull.1 man/mailpull.conf.5
make WERROR=-Werror check
make asan
make CC=clang WERROR=-Werror BUILDDIR=build-clang all
make fuzz-ci FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
echo "check.sh: all passed"
