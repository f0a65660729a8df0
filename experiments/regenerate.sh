#!/bin/sh
# Regenerate every number and figure of experiments/FINDINGS.md (issue 22).
#
#   sh experiments/regenerate.sh [JOBS]        # from the repository's top folder; JOBS default 2
#
# Runs each question's sweep into results/<name>/ (a rerun resumes: finished runs are kept),
# prints each table into results/findings/<name>.txt, runs the validation checks, and renders
# the reports whose figures FINDINGS cites (copied to docs/findings/). Nothing outside results/
# and docs/findings/ is written. The measured time is in FINDINGS ("Regenerating").
set -eu
JOBS=${1:-2}
OUT=results/findings
mkdir -p "$OUT"
T="python experiments/findings_table.py"

sweep() {
    desim sweep "experiments/$1.yaml" --out "results/$1" --jobs "$JOBS"
}

# Q3: a grace period on the exit path (closed loops), and which rules the checker rejects
sweep q3-exit-build
$T results/q3-exit-build build.jobs_per_s build.job_latency.mean_ns exit.p50_ns \
    safety.sleep_in_atomic --factor mm_lifetime --base none --kind inverse \
    --csv "$OUT/q3-exit-build.csv" > "$OUT/q3-exit-build.txt"
sweep q3-exit-spawn
$T results/q3-exit-spawn spawn.per_s exit.p50_ns --factor mm_lifetime --base none \
    --kind inverse --csv "$OUT/q3-exit-spawn.csv" > "$OUT/q3-exit-spawn.txt"
sweep q3-exit-safety
$T results/q3-exit-safety safety.violations safety.callback_freed_mm safety.sleep_in_atomic \
    count.tables.deferred --factor mm_lifetime --csv "$OUT/q3-exit-safety.csv" \
    > "$OUT/q3-exit-safety.txt"

# Q4: a global lock as CPUs grow
sweep q4-global-lock
$T results/q4-global-lock acq_per_us spin_share lock.s390_global_list.contention_ratio \
    lock.s390_global_list.wait_mean_ns alloc.p99_ns exit.p50_ns cpu.busy_fraction \
    count.mm.exited --lock s390_global_list --warmup 5ms --factor allocator.params \
    --csv "$OUT/q4-global-lock.csv" > "$OUT/q4-global-lock.txt"

sweep q4-global-lock-sens
$T results/q4-global-lock-sens acq_per_us spin_share lock.s390_global_list.contention_ratio \
    alloc.p99_ns cpu.busy_fraction count.mm.exited --lock s390_global_list --warmup 5ms \
    --cpus 32 --csv "$OUT/q4-global-lock-sens.csv" > "$OUT/q4-global-lock-sens.txt"
sweep q4-global-lock-big
$T results/q4-global-lock-big acq_per_us spin_share lock.s390_global_list.contention_ratio \
    alloc.p99_ns exit.p50_ns cpu.busy_fraction count.mm.exited --lock s390_global_list \
    --warmup 5ms --factor allocator.params \
    --csv "$OUT/q4-global-lock-big.csv" > "$OUT/q4-global-lock-big.txt"

# Validation beside ANCHORS.md
python experiments/validation.py --csv "$OUT/validation.csv" > "$OUT/validation.txt"

# Q1, Q2, Q5 (memory): see FINDINGS for which ran
for q in q1-powerpc-waste q2-s390-halves q5-percpu-pool; do
    if [ -f "experiments/$q.yaml" ]; then
        sweep "$q"
    fi
done
if [ -f experiments/q1-powerpc-waste.yaml ]; then
    $T results/q1-powerpc-waste mem.overhead.mean_bytes waste_per_gib waste_share \
        mem.stranded.mean_bytes mem.live.mean_bytes --per-gib --share \
        --factor allocator.name,allocator.params --base powerpc --kind ratio \
        --csv "$OUT/q1-powerpc-waste.csv" > "$OUT/q1-powerpc-waste.txt"
fi
sweep q1-server-db
$T results/q1-server-db mem.overhead.mean_bytes waste_per_gib waste_share \
    mem.stranded.mean_bytes mem.spare.mean_bytes mem.tlb_batch.mean_bytes mem.live.mean_bytes \
    --per-gib --share --factor allocator.name,allocator.params --base powerpc \
    --csv "$OUT/q1-server-db.csv" > "$OUT/q1-server-db.txt"
if [ -f experiments/q2-s390-halves.yaml ]; then
    $T results/q2-s390-halves mem.overhead.mean_bytes waste_per_gib waste_share \
        mem.total.mean_bytes alloc.p99_ns fault.p99_ns free_to_reuse.p50_ns --per-gib --share \
        --factor allocator.name --base s390 --kind ratio \
        --csv "$OUT/q2-s390-halves.csv" > "$OUT/q2-s390-halves.txt"
fi
sweep q2-s390-lpar
$T results/q2-s390-lpar mem.total.mean_bytes mem.overhead.mean_bytes waste_share \
    alloc.p99_ns free_to_reuse.p50_ns --share --factor allocator.name --base s390 \
    --csv "$OUT/q2-s390-lpar.csv" > "$OUT/q2-s390-lpar.txt"
if [ -f experiments/q5-percpu-pool.yaml ]; then
    $T results/q5-percpu-pool mem.overhead.mean_bytes waste_per_gib waste_share \
        mem.spare.mean_bytes alloc.p99_ns fault.p99_ns free_to_reuse.p50_ns --per-gib --share \
        --factor allocator.name,allocator.params --base powerpc --kind ratio \
        --csv "$OUT/q5-percpu-pool.csv" > "$OUT/q5-percpu-pool.txt"
fi

# Figures FINDINGS cites
mkdir -p docs/findings
for q in q4-global-lock q1-powerpc-waste q2-s390-halves q5-percpu-pool; do
    if [ -d "results/$q" ]; then
        desim report "results/$q"
        for f in results/$q/report/*.png; do
            cp "$f" "docs/findings/$q-$(basename "$f")"
        done
    fi
done
echo "tables in $OUT/, figures in docs/findings/"
