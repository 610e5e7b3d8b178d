#!/usr/bin/env bash
# Many small files against one big one (issue 11, must-have 3): `natter get` of 100 files of
# 100 KiB in one session against `natter get` of one 10 MiB file, under one network condition,
# with a TCP baseline of the same bytes over one TCP connection each (tar through socat, BBR).
#
#   sudo bench/transfer/many-files.sh [CONDITION]     # default 1gbit:5:1500:20
#
# It reuses the shared transfer harness's network namespaces (netns.sh: tbf rate, random loss each
# way, a delay line for the RTT) by sourcing it from HARNESS (default /work/bench-transfer, a copy
# of ../shared/bench/transfer with its setup.sh run; see bench/README.md). Knobs: NATTER (the
# binary, default /work/natter-bench-bin/natter), RUNTIME (mio|smol, default mio), REPS (3),
# N (100 files), SMALL_KIB (100), BIG_MIB (10), SERVER_ARGS (the server's transfer ports and caps,
# default its own: --udp-ports 55000-55015, 4 per client) and GET_ARGS (extra `natter get` flags,
# such as --transfers 32). Every run starts a fresh server, and every file
# is checked (sha256sum) afterwards. Prints the median wall time of each case and the ratio
# many/one; the target is many/one <= 1.5.
set -uo pipefail

HARNESS="${HARNESS:-/work/bench-transfer}"
NATTER="${NATTER:-/work/natter-bench-bin/natter}"
RUNTIME="${RUNTIME:-mio}"
REPS="${REPS:-3}"
N="${N:-100}"
SMALL_KIB="${SMALL_KIB:-100}"
BIG_MIB="${BIG_MIB:-10}"
COND="${1:-1gbit:5:1500:20}"
SERVER_ARGS="${SERVER_ARGS:---udp-ports 55000-55015}"
GET_ARGS="${GET_ARGS:-}"
PORT=56000

die() { echo "many-files.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc, nft)"
[ -x "$NATTER" ] || die "no natter binary at $NATTER"
[ -f "$HARNESS/netns.sh" ] || die "no harness at $HARNESS (set HARNESS)"
for t in socat tar sha256sum ip awk; do command -v "$t" >/dev/null || die "missing $t"; done
# shellcheck source=/dev/null
source "$HARNESS/netns.sh"

IFS=: read -r RATE LOSS MTU RTT <<< "$COND"
TAG="mf$$"
TMP="$(mktemp -d)"; chmod 755 "$TMP"
SRV_PGID=""
cleanup() {
    [ -n "$SRV_PGID" ] && kill -KILL -- "-$SRV_PGID" 2>/dev/null
    xnet_down "$TAG"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- files
mkdir -p "$TMP/files" "$TMP/many"
NAMES=()
for i in $(seq -w 0 $((N - 1))); do
    head -c $((SMALL_KIB << 10)) /dev/urandom > "$TMP/many/f$i.bin"
    NAMES+=("f$i.bin")
done
cp "$TMP"/many/*.bin "$TMP/files/"
head -c $((BIG_MIB << 20)) /dev/urandom > "$TMP/files/big.bin"
chmod -R a+r "$TMP/files" "$TMP/many"
(cd "$TMP/files" && sha256sum -- *.bin) > "$TMP/sums"

xnet_up "$TAG" "$RATE" "$LOSS" "$MTU" "${RTT:-0}" || die "cannot set up $COND"

# start_bg CMD: runs CMD in the server namespace as its own process group
start_bg() {
    setsid ip netns exec "$NS_SRV" bash -c "$1" >"$TMP/server.log" 2>&1 &
    SRV_PGID=$!
    for _ in $(seq 200); do
        ip netns exec "$NS_SRV" ss -Htln "sport = :$PORT" | grep -q . && return 0
        sleep 0.02
    done
    die "server did not listen: $(tail -3 "$TMP/server.log")"
}
stop_bg() { [ -n "$SRV_PGID" ] && kill -KILL -- "-$SRV_PGID" 2>/dev/null; wait "$SRV_PGID" 2>/dev/null; SRV_PGID=""; }

# timed OUTDIR CMD...: runs CMD in the client namespace, prints wall seconds; checks OUTDIR's files
timed() {
    local out="$1"; shift
    local t0 t1
    t0=$(date +%s.%N)
    ip netns exec "$NS_CLI" "$@" >"$TMP/get.log" 2>&1 || { echo "FAILED: $(grep -i "fail\|error\|refused" "$TMP/get.log" | head -3)" >&2; echo nan; return; }
    t1=$(date +%s.%N)
    if ! (cd "$out" && for f in *; do
            grep -qx "$(sha256sum < "$f" | cut -d' ' -f1)  $f" "$TMP/sums" || exit 1
        done); then
        echo "CORRUPT in $out" >&2; echo nan; return
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "nan") }'; }

run_natter() {   # run_natter FILES... -> wall seconds (median of REPS)
    local r out
    for r in $(seq "$REPS"); do
        PORT=$((PORT + 1))
        start_bg "exec $NATTER server --addr $SRV_HOST:$PORT --files $TMP/files $SERVER_ARGS --runtime $RUNTIME"
        out="$TMP/out-$r-$PORT"; mkdir -p "$out"
        timed "$out" "$NATTER" get "$@" --addr "$SRV_HOST:$PORT" --name bench --out "$out" --quiet --runtime "$RUNTIME" $GET_ARGS
        stop_bg
        [ "$(ls "$out" | wc -l)" -eq "$#" ] || echo "MISSING files in $out" >&2
        rm -rf "$out"
    done | median
}

run_tcp() {      # run_tcp SERVE_CMD CLIENT_CMD_IN_OUT -> wall seconds (median of REPS)
    local r out
    for r in $(seq "$REPS"); do
        PORT=$((PORT + 1))
        out="$TMP/out-$r-$PORT"; mkdir -p "$out"
        start_bg "exec socat -u -b 262144 SYSTEM:'$1' TCP-LISTEN:$PORT,bind=$SRV_HOST,reuseaddr,setsockopt-string=6:13:bbr"
        timed "$out" bash -c "cd '$out' && socat -u -b 262144 TCP:$SRV_HOST:$PORT STDOUT | $2"
        stop_bg
        rm -rf "$out"
    done | median
}

echo "many-files: $COND, $N x $SMALL_KIB KiB vs 1 x $BIG_MIB MiB, $RUNTIME runtime, median of $REPS"
echo "  server: $SERVER_ARGS; get: ${GET_ARGS:-(defaults)}"
MANY=$(run_natter "${NAMES[@]}")
ONE=$(run_natter big.bin)
TCP_MANY=$(run_tcp "tar -C $TMP/many -cf - ." "tar -xf -")
TCP_ONE=$(run_tcp "cat $TMP/files/big.bin" "cat > big.bin")
printf '%-28s %8s %8s %10s\n' case "many s" "one s" "many/one"
printf '%-28s %8s %8s %10s\n' "natter ($RUNTIME)" "$MANY" "$ONE" "$(awk -v a="$MANY" -v b="$ONE" 'BEGIN { printf "%.2f", a / b }')"
printf '%-28s %8s %8s %10s\n' "tcp (tar | socat, bbr)" "$TCP_MANY" "$TCP_ONE" "$(awk -v a="$TCP_MANY" -v b="$TCP_ONE" 'BEGIN { printf "%.2f", a / b }')"
