#!/bin/sh
# bench/will_it_fit.sh LANGUAGE COMMAND...: run the worked example's COMMAND
# and keep what it printed in bench/results/will_it_fit_LANGUAGE.txt, after
# a line with the date, the versions and the seconds it took.
set -e
language=$1
shift
out=bench/results/will_it_fit_$language.txt
started=$(date +%s)
"$@" > "$out.new"
seconds=$(( $(date +%s) - started ))
versions=$(.venv-accelerators/bin/python -c 'from importlib.metadata import version as v; print(", ".join(f"{p} {v(p)}" for p in ("jax", "libtpu", "jax-cuda12-plugin", "keras", "keras-hub")))')
{ echo "# $(date -u +%F), $versions; $seconds s on this machine"; cat "$out.new"; } > "$out"
rm "$out.new"
