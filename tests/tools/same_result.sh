#!/usr/bin/env bash
# The demo's result.json of two runs agree on the given keys to |a - b| <= 1e-5 + 1e-4 |b| (a run on
# several ranks against one rank: the same work summed in another order).
#   same_result.sh <result.json of the ranks> <result.json of one rank> <key>...
set -u
many=$1 one=$2
shift 2
value() { sed -n "s/^ *\"$2\": *\([-+0-9.eE]*\),\{0,1\}$/\1/p" "$1"; }
status=0
for key in "$@"; do
  a=$(value "$many" "$key") b=$(value "$one" "$key")
  if [[ -z $a || -z $b ]]; then
    echo "FAIL: '$key' missing from $many or $one"
    status=1
    continue
  fi
  if awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= 1e-5 + 1e-4 * m) }'; then
    echo "same $key: $a vs $b"
  else
    echo "FAIL: $key differs: $a (ranks) vs $b (one rank)"
    status=1
  fi
done
exit $status
