# The options bench/compare.sh and bench/compare-det.sh share, parsed into the caller's variables:
# rounds, quick, build, peers (comma-separated, kept as given) and workloads (each one of $ALL;
# all of them when none is named). Sourced, not run: `source bench/args.sh; parse_bench_args "$@"`.
parse_bench_args() {
    rounds=3 quick=0 build=1 workloads=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
            --quick) quick=1; shift ;;
            --peers) peers="${2:?--peers needs a value}"; shift 2 ;;
            --no-build) build=0; shift ;;
            -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
            -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
            *) [[ " $ALL " == *" $1 "* ]] || { echo "unknown workload $1; one of: $ALL" >&2; exit 2; }
               workloads+=("$1"); shift ;;
        esac
    done
    [[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
    [ ${#workloads[@]} -gt 0 ] || read -ra workloads <<< "$ALL"
}
