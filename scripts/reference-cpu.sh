#!/usr/bin/env bash
# The CPU reference run (docs/reference/cpu, src/mrsr/reference/): train the jobs of
# config/paper-cpu.yaml not committed yet, one at a time, at the lowest CPU priority, and copy each
# into docs/reference/cpu as soon as it finishes; with --commit, commit it at once, so a session that
# stops loses at most the job it was running. A later run (any machine) restores the committed jobs
# and goes on with the rest.
#
#   bash scripts/reference-cpu.sh [--commit] [--jobs N] [--cores N] [JOB ...]
#
# Naming jobs limits the run to those of them still pending (two checkouts can then share a machine,
# one core each: one torch thread per job keeps OpenMP from spinning when the cores are shared).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=0 max_jobs=1000 cores=2 only=()
while (($#)); do
  case $1 in
    --commit) commit=1 ;;
    --jobs) max_jobs=$2; shift ;;
    --cores) cores=$2; shift ;;
    -*) echo "usage: bash scripts/reference-cpu.sh [--commit] [--jobs N] [--cores N] [JOB ...]" >&2; exit 2 ;;
    *) only+=("$1") ;;
  esac
  shift
done
profile=config/paper-cpu.yaml
# The reference is kept in git, not DVC: the workflow's DVC record after each Snakemake run would
# rewrite dvc.lock, and every later job's sidecar would name a "-dirty" revision.
export MRSR_NO_DVC_COMMIT=1
mrsr reference profile --check
# The prepared data (ingest, split, patches) first, then the committed jobs on top: newer than the
# patches they were trained on, so Snakemake (rerun triggers: mtime only) takes them as done.
# (targets come before --configfile, which takes every value after it)
snakemake --cores "$cores" prepare --quiet rules --configfile "$profile"
mrsr reference restore
# The shipped networks (100 epochs) on the same test split, once.
for weights in src/mrsr/zoo/*.safetensors; do
  name=$(basename "$weights" .safetensors)
  out=docs/reference/cpu/results/metrics/per_image/shipped/$name.csv
  [[ -f $out ]] && continue
  # the sidecar names the model (a shipped name need not: proposed-multi-x2)
  model=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"])' "${weights%.safetensors}.json")
  scale=${name##*-x}
  mkdir -p "$(dirname "$out")"
  mrsr evaluate --method "$model" --weights "$weights" --scale "$scale" --store data/prepared/paper-cpu/store \
    --split data/prepared/paper-cpu/split.csv --config "$profile" --threads "$cores" --out "$out"
done
done_jobs=0
for job in $(mrsr reference pending); do
  ((done_jobs < max_jobs)) || break
  if ((${#only[@]})) && [[ " ${only[*]} " != *" $job "* ]]; then continue; fi
  echo "== $job: $(date -u +%FT%TZ)"
  scale=${job##*_x} results=results/paper-cpu
  nice -n 19 snakemake --cores "$cores" \
    "$results/metrics/per_image/seed0/$job.csv" "$results/examples/seed0/$job.npz" \
    "$results/metrics/per_image/bicubic_x$scale.csv" "$results/examples/bicubic_x$scale.npz" \
    --rerun-triggers mtime --quiet rules --configfile "$profile"
  mrsr reference collect "$job"
  if ((commit)); then
    git add docs/reference/cpu
    psnr=$(python -c "import pandas as p; s=p.read_csv('docs/reference/cpu/summary.csv'); r=s[s.job=='$job'].iloc[0]; print(f'{r.psnr:.2f} dB, {r.gain_db:+.2f} over bicubic')")
    git commit -q -m "reference-cpu: $job ($psnr)" -- docs/reference/cpu
  fi
  done_jobs=$((done_jobs + 1))
done
mrsr reference check
[[ -z $(mrsr reference pending) ]] || exit 0
# Every job committed: render the report from them (summary, Table 3's timing and the report run; the
# training jobs are restored, hence done) and publish it into docs/reference/cpu.
mrsr reference restore
nice -n 19 snakemake --cores "$cores" reports/paper-cpu/report.html --rerun-triggers mtime --quiet rules \
  --configfile "$profile"
mrsr reference publish
if ((commit)); then
  git add docs/reference/cpu
  git commit -q -m "reference-cpu: the report rendered from every committed job" -- docs/reference/cpu
fi
