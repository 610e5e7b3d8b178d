#!/usr/bin/env bash
# One fuzzing campaign: a target, a sanitizer, a number of executions, with the target's
# dictionary. Run from anywhere; new inputs land in fuzz/corpus/<target>/ (minimize them with
# `cargo fuzz cmin` before committing), crashes in fuzz/artifacts/<target>/.
#
#   fuzz/campaign.sh <target> <none|address> <runs> [more libFuzzer flags]
#   fuzz/campaign.sh datagram none 100000000
#   fuzz/campaign.sh datagram address 10000000
#
# Every run stops on its first broken invariant, except that extreme_offer skips the inputs of
# fuzz/known-bugs/extreme_offer/ (a bug reported and being fixed) when
# NATTER_FUZZ_SKIP_KNOWN_BUGS=1 is set. Under ASan no single allocation may pass 128 MiB
# (the largest legitimate one is extreme_offer's 64 MiB bound on an accepted offer's state).
set -euo pipefail

target=${1:?target}
sanitizer=${2:?none or address}
runs=${3:?number of executions}
shift 3

here=$(cd "$(dirname "$0")" && pwd)
case $target in
    datagram | transfer | sealed) dicts=(datagram) ;;
    chat_line | line_framer | chat_server | chat_client) dicts=(chat) ;;
    client_driver) dicts=(chat datagram resume offer) ;;
    resume_record) dicts=(resume) ;;
    extreme_offer) dicts=(offer chat) ;;
    cluster_entry) dicts=(cluster chat) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
esac
mkdir -p "$here/target/dict"
dict="$here/target/dict/$target.dict"
for d in "${dicts[@]}"; do cat "$here/dict/$d.dict"; done > "$dict"

extra=()
if [ "$sanitizer" = address ]; then
    extra+=(-malloc_limit_mb=128)
fi

# cargo-fuzz needs a nightly compiler; RUSTC_BOOTSTRAP=1 lets a stable one stand in.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

cd "$here"
status=0
nice -n 10 cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
    -dict="$dict" -runs="$runs" -timeout=10 -print_final_stats=1 "${extra[@]}" "$@" || status=$?

# A campaign that skipped known bugs may have saved inputs that reach them: those belong in
# known-bugs/ (one of each is there already), not in the corpus that cargo test replays strictly.
if [ "$target" = extreme_offer ] && [ -n "${NATTER_FUZZ_SKIP_KNOWN_BUGS:-}" ]; then
    binary=$(find target -path "*/release/extreme_offer" -type f | head -n 1)
    for input in "corpus/$target"/*; do
        env -u NATTER_FUZZ_SKIP_KNOWN_BUGS "$binary" "$input" > /dev/null 2>&1 || rm -f "$input"
    done
fi
exit "$status"
