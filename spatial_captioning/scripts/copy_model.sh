#!/bin/sh
# Copy a run directory to a new id for SCST fine-tuning (spec 2.10):
#   scripts/copy_model.sh <src_id> <dst_id> [checkpoint_root]
# README layout: <root>/<id>/ (default root: checkpoints); ORT layout log_<id>/ is used when it exists.
set -e
if [ $# -lt 2 ]; then
    echo "usage: $0 <src_id> <dst_id> [checkpoint_root (default: checkpoints)]" >&2
    exit 2
fi
src=$1
dst=$2
root=${3:-checkpoints}
if [ -d "log_$src" ] && [ $# -lt 3 ]; then
    from="log_$src"; to="log_$dst"
else
    from="$root/$src"; to="$root/$dst"
fi
if [ ! -d "$from" ]; then
    echo "error: $from: run directory not found" >&2
    exit 2
fi
if [ -e "$to" ]; then
    echo "error: $to: already exists (never overwritten)" >&2
    exit 2
fi
cp -r "$from" "$to"
for f in "$to"/infos_"$src"*.pkl "$to"/histories_"$src".pkl "$to"/train_log_"$src".jsonl; do
    [ -e "$f" ] || continue
    base=$(basename "$f")
    mv "$f" "$to/$(echo "$base" | sed "s/_$src/_$dst/")"
done
echo "copied $from to $to"
