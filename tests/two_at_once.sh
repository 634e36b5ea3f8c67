#!/usr/bin/env bash
# Runs each argument, a shell command, at most two at once, in the order
# given: the backends' test suites each keep about one of this machine's two
# cores busy. Each command's output is printed whole once it has ended; the
# script fails if any command failed.
set -u
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
count=0
for command in "$@"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
  echo "started: $command"
  (bash -c "$command" >"$dir/$count.log" 2>&1; echo $? >"$dir/$count.status") &
  count=$((count + 1))
done
wait
failed=0
index=0
for command in "$@"; do
  status=$(cat "$dir/$index.status")
  echo "=== $command (exit status $status)"
  cat "$dir/$index.log"
  [ "$status" = 0 ] || failed=1
  index=$((index + 1))
done
exit "$failed"
