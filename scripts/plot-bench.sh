#!/usr/bin/env bash
# Draws doppel-bench results as a PNG: throughput (ceiling, doppeld, baseline) and latency
# percentiles. Needs python3 and gnuplot (apt-get install gnuplot-nox).
#   scripts/plot-bench.sh docs/bench/results.json docs/bench/performance.png
set -euo pipefail
in="${1:?usage: plot-bench.sh RESULTS.json OUT.png}"
out="${2:?usage: plot-bench.sh RESULTS.json OUT.png}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 - "$in" "$tmp" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, out = r["scenarios"], sys.argv[2]
with open(out + "/throughput.dat", "w") as f:
    rows = [("ceiling\\nQoS 0", s.get("ceiling", {}).get("qos0", {}).get("msgs_per_s")),
            ("ceiling\\nQoS 1", s.get("ceiling", {}).get("qos1", {}).get("msgs_per_s")),
            ("doppeld\\ningest", s.get("ingest", {}).get("updates_per_s")),
            ("baseline\\nread-merge-write", s.get("baseline", {}).get("updates_per_s"))]
    for name, v in rows:
        if v is not None:
            f.write('"%s" %f\n' % (name, v / 1000.0))
with open(out + "/latency.dat", "w") as f:
    for key, name in (("desired_to_device_ms", "PATCH -> delta"),
                      ("patch_response_ms", "PATCH response"),
                      ("command_to_device_ms", "POST -> command")):
        p = s.get("latency", {}).get(key)
        if p and p.get("count"):
            f.write('"%s" %f %f %f %f\n' % (name, p["p50"], p["p90"], p["p99"], p["max"]))
with open(out + "/title", "w") as f:
    f.write("doppel-bench %s, %s, %s cores" % (r.get("commit"), r.get("date"), r["machine"]["cores"]))
PY

gnuplot <<GP
set terminal pngcairo size 1200,500 font "Sans,10"
set output "$out"
set bmargin 5
set multiplot layout 1,2 title "$(cat "$tmp/title")"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set title "Throughput (thousand messages or committed updates per second)"
set ylabel "k/s"
set yrange [0:*]
plot "$tmp/throughput.dat" using 2:xtic(1) notitle lc rgb "#3b7dd8", \
     "" using 0:2:(sprintf("%.1f", \$2)) with labels offset 0,0.7 notitle
set title "Latency while ingesting (ms, log scale)"
set ylabel "ms"
set logscale y
set yrange [0.1:*]
set style histogram clustered gap 1
set key top left
plot "$tmp/latency.dat" using 2:xtic(1) title "p50", "" using 3 title "p90", \
     "" using 4 title "p99", "" using 5 title "max"
unset multiplot
GP
echo "wrote $out"
