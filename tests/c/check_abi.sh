#!/usr/bin/env bash
# Checks the shipped ABI: the shared library exports exactly the functions the header
# declares (all prefixed conveyor_), every macro and type of the header is prefixed,
# and the library carries the expected SONAME.
# Usage: check_abi.sh LIBRARY.so HEADER EXPECTED_SONAME
set -euo pipefail
lib=$1 header=$2 soname=$3
fail() { echo "check_abi: $*" >&2; exit 1; }

exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sort)
declared=$(grep -E '^[a-z].*\bconveyor_[a-z_]+\(' "$header" | grep -v '^typedef' \
  | sed -E 's/.*\b(conveyor_[a-z_]+)\(.*/\1/' | sort -u)
[ -n "$declared" ] || fail "no function declarations found in $header"
stray=$(grep -v '^conveyor_' <<<"$exported" || true)
[ -z "$stray" ] || fail "exported symbols without the conveyor_ prefix: $stray"
if [ "$exported" != "$declared" ]; then
  diff <(echo "$exported") <(echo "$declared") >&2 || true
  fail "exports of $lib (<) differ from the declarations of $header (>)"
fi

macros=$(grep -E '^#define ' "$header" | awk '{ print $2 }')
bad_macros=$(grep -v '^CONVEYOR_' <<<"$macros" || true)
[ -z "$bad_macros" ] || fail "macros without the CONVEYOR_ prefix: $bad_macros"
types=$( (grep -E '^(typedef [^(]*|\}) [a-z_]+;$' "$header" | sed -E 's/.* ([a-z_]+);$/\1/'
         grep -E '^typedef .*\(\*[a-z_]+\)' "$header" | sed -E 's/.*\(\*([a-z_]+)\).*/\1/') | sort -u)
[ -n "$types" ] || fail "no types found in $header"
bad_types=$(grep -v '^conveyor_' <<<"$types" || true)
[ -z "$bad_types" ] || fail "types without the conveyor_ prefix: $bad_types"

actual=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$actual" = "$soname" ] || fail "SONAME is '$actual', expected '$soname'"
echo "check_abi: $(wc -l <<<"$exported") functions exported and declared, SONAME $actual"
