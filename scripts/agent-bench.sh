#!/usr/bin/env bash
# What udp-vmagent costs on the machine it watches: CPU per sample and
# resident memory over a long run, sending to a discard-mode aggregator on
# loopback. Prints key=value lines.
#
#   scripts/agent-bench.sh                     # 10ms for 60s (CPU), 10ms for 6m (RSS)
#   CPU_RUN=60s RSS_INTERVAL=1s RSS_RUN=60m scripts/agent-bench.sh
#
# CPU per sample: user+system time of the whole run (bash's `time`) over
# the samples the agent says it took. RSS: VmRSS every SAMPLE seconds;
# flat means the last is no higher than the first taken after 10 s.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CPU_RUN=${CPU_RUN:-60s}
RSS_INTERVAL=${RSS_INTERVAL:-10ms}
RSS_RUN=${RSS_RUN:-6m}
SAMPLE=${SAMPLE:-10}
AGENT=$ROOT/target/release/udp-vmagent
build_release
# Whatever is still running, then the scratch dir (a kill with no job fails:
# under set -e that ended the trap before remove_work, and the script with 2).
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; remove_work' EXIT

start_aggregator "$WORK/sink.log" "$WORK/none" --discard --stats-interval 1h
SERVER=127.0.0.1:$AGG_PORT

# CPU: a sample every 10 ms, CPU time of the whole process.
TIMEFORMAT='%U %S'
cpu=$( { time "$AGENT" --server "$SERVER" --interval 10ms --no-jitter \
    --duration "$CPU_RUN" 2>"$WORK/agent-cpu.log" >/dev/null; } 2>&1 )
samples=$(grep -oE 'samples=[0-9]+' "$WORK/agent-cpu.log" | cut -d= -f2)
read -r user sys <<<"$cpu"
awk -v u="$user" -v s="$sys" -v n="$samples" -v run="$CPU_RUN" \
    'BEGIN { printf "cpu_run=%s samples=%d cpu_s=%.3f cpu_us_per_sample=%.1f\n", run, n, u + s, (u + s) * 1e6 / n }'

# RSS over a long run.
"$AGENT" --server "$SERVER" --interval "$RSS_INTERVAL" --no-jitter \
    --duration "$RSS_RUN" 2>"$WORK/agent-rss.log" >/dev/null &
pid=$!
first= max=0 last=0 t=0
while kill -0 "$pid" 2>/dev/null; do
    sleep "$SAMPLE"
    t=$((t + SAMPLE))
    rss=$(rss_kib "$pid" 2>/dev/null) || break
    [ -z "$first" ] && [ "$t" -ge 10 ] && first=$rss
    [ "$rss" -gt "$max" ] && max=$rss
    last=$rss
    echo "t_s=$t rss_kib=$rss"
done
wait "$pid" || true
samples=$(grep -oE 'samples=[0-9]+' "$WORK/agent-rss.log" | cut -d= -f2)
flat=yes
[ "$last" -gt "$first" ] && flat=no
echo "rss_interval=$RSS_INTERVAL rss_run=$RSS_RUN samples=$samples rss_first_kib=$first rss_max_kib=$max rss_last_kib=$last flat=$flat"
stop_pid "$AGG_PID"
