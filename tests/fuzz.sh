#!/bin/sh
# Runs libFuzzer harnesses for CI: each for SECONDS, FUZZ_JOBS (default 2)
# at a time, then one summary line per harness. Fails when any harness
# stops on a crash, a leak, a timeout or running out of memory; the
# input that did it is in build-fuzz/artifacts/ and the whole output in
# build-fuzz/logs/NAME.log.
#
#   sh tests/fuzz.sh SECONDS NAME...     (make fuzz-ci builds the harnesses first)
set -u

if [ "${1:-}" = "--one" ]; then
	# One harness, its output to its log; the exit status is libFuzzer's.
	seconds=$2 t=$3
	dict=
	[ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
	mkdir -p "build-fuzz/corpus/$t"
	# shellcheck disable=SC2086 # $dict is empty or one word
	exec "build-fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 $dict -artifact_prefix="build-fuzz/artifacts/$t-" \
		"build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"build-fuzz/logs/$t.log" 2>&1
fi

if [ $# -lt 2 ]; then
	echo "usage: $0 SECONDS NAME..." >&2
	exit 2
fi
seconds=$1
shift
case $seconds in
'' | *[!0-9]*)
	echo "$0: SECONDS must be a number, not '$seconds'" >&2
	exit 2
	;;
esac
for t in "$@"; do
	if [ ! -x "build-fuzz/fuzz_$t" ]; then
		echo "$0: build-fuzz/fuzz_$t is missing (make fuzz-ci builds it)" >&2
		exit 2
	fi
done
mkdir -p build-fuzz/logs build-fuzz/artifacts
for t in "$@"; do
	rm -f "build-fuzz/logs/$t.log" "build-fuzz/logs/$t.rc"
done

echo "fuzzing $# harnesses for $seconds s each, ${FUZZ_JOBS:-2} at a time"
start=$(date +%s)
# xargs runs them in parallel; each records its own exit status.
# shellcheck disable=SC2016 # expanded by the inner shell
printf '%s\n' "$@" | xargs -P "${FUZZ_JOBS:-2}" -I{} \
	sh -c 'sh "$0" --one "$1" "$2"; echo $? >"build-fuzz/logs/$2.rc"' "$0" "$seconds" {}

failed=0
for t in "$@"; do
	log=build-fuzz/logs/$t.log
	rc=$(cat "build-fuzz/logs/$t.rc" 2>/dev/null || echo '?')
	# libFuzzer's last words: "Done 123456 runs in 60 second(s)".
	done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" 2>/dev/null | tail -n 1)
	if [ "$rc" = 0 ] && [ -n "$done_line" ]; then
		runs=$(echo "$done_line" | awk '{ print $2 }')
		secs=$(echo "$done_line" | awk '{ print $5 }')
		printf 'fuzz_%-12s ok      %12s runs in %s s\n' "$t" "$runs" "$secs"
		continue
	fi
	failed=1
	# The first sanitizer or libFuzzer report, shortened.
	what=$(grep -m 1 -E 'ERROR: |runtime error: ' "$log" 2>/dev/null |
		sed 's/^.*\(ERROR\|runtime error\): //' | cut -c 1-80)
	runs=$(grep -m 1 -oE 'stat::number_of_executed_units: [0-9]+' "$log" 2>/dev/null |
		awk '{ print $2 }')
	art=$(grep -m 1 -oE 'Test unit written to [^ ]+' "$log" 2>/dev/null | awk '{ print $5 }')
	printf 'fuzz_%-12s FAILED  %12s runs; exit %s: %s%s (log %s)\n' "$t" "${runs:-?}" "$rc" \
		"${what:-see the log}" "${art:+; input $art}" "$log"
done
echo "fuzzing took $(($(date +%s) - start)) s"
exit $failed
