#!/usr/bin/env bash
# Rehearses the packed GPU route on a machine without a GPU (tests/scripts/gpu_route.cmake).
#
#   test_gpu_route.sh timeout
#       gpu-run on a minimal archive with its test hook: a stage that sleeps past its cap is
#       killed (with its children) and recorded as "timeout", the run returns within cap + a small
#       margin, and a stage cap larger than the deadline is cut to the deadline.
#   test_gpu_route.sh rehearsal BUILD_DIR
#       gpu-pack --build-dir BUILD_DIR (packs the binaries already built there; builds nothing);
#       the archive is under 30 MiB; unpacked in an empty folder with LD_LIBRARY_PATH set to the
#       archive's lib/ only, ldd finds every library of every binary and packed library in the
#       archive, except glibc's and the CUDA driver/toolkit ones; RUNPATHs are $ORIGIN-relative;
#       the packed scripts/gpu-run runs to the end as on a machine without a device (the smoke
#       stage runs every packed binary, the CUDA stages are "skipped (no device)") and writes its
#       summary.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-route-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
check() {  # check DESCRIPTION COMMAND...: runs COMMAND, reports
  local what=$1
  shift
  if "$@"; then
    echo "ok    $what"
  else
    echo "FAIL  $what"
    failures=$((failures + 1))
  fi
}
now() { date +%s.%N; }
elapsed_below() { python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < float(sys.argv[3]) else 1)" "$@"; }
# stage_status SUMMARY STAGE -> prints the stage's status
stage_status() {
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(next((st["status"] for st in s["stages"] if st["stage"] == sys.argv[2]), "absent"))' "$1" "$2"
}
stage_seconds_between() {  # SUMMARY STAGE LO HI
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
sec = next((st["seconds"] for st in s["stages"] if st["stage"] == sys.argv[2]), -1)
sys.exit(0 if int(sys.argv[3]) <= sec <= int(sys.argv[4]) else 1)' "$@"
}
is_status() { [[ "$(stage_status "$1" "$2")" == "$3" ]]; }
few_result_files() { (($(find "$1" -type f | wc -l) <= 7)) && [[ -s "$1/summary.json" && -s "$1/summary.md" && -s "$1/logs.tgz" ]]; }
no_process() { ! ps -eo args= | grep -qx "$1"; }

mode=${1:-}
case "$mode" in
  timeout)
    # A minimal archive: no binaries, the summarizer only.
    mkdir -p "$tmp/pkg/bench" "$tmp/pkg/manifest" "$tmp/pkg/bin"
    cp "$root/bench/summarize.py" "$tmp/pkg/bench/"
    echo test-commit >"$tmp/pkg/manifest/commit.txt"
    tar -C "$tmp/pkg" -czf "$tmp/min.tgz" .

    # 1. cap 3 s, sleeping 61 s: killed at the cap; the run goes on and ends.
    t0=$(now)
    PLAYBOOK_GPU_RUN_NO_DEVICE=1 PLAYBOOK_GPU_RUN_TEST_STAGE='sleep 61.25; echo survived' \
      PLAYBOOK_GPU_RUN_TEST_CAP=3 "$root/scripts/gpu-run" "$tmp/min.tgz" "$tmp/r1" --deadline 120 \
      >"$tmp/r1.log" 2>&1
    rc=$?
    t1=$(now)
    check "gpu-run returns within the 3 s cap + 15 s" elapsed_below "$t0" "$t1" 18
    check "the stage was stopped at its cap (recorded 3-5 s)" stage_seconds_between "$tmp/r1/summary.json" test_hook 3 5
    check "exit status 1 (a stage did not pass)" test "$rc" -eq 1
    check "the overrunning stage is recorded as timeout" is_status "$tmp/r1/summary.json" test_hook timeout
    check "its sleep was killed with it" no_process "sleep 61.25"
    check "the next stage still ran" is_status "$tmp/r1/summary.json" smoke pass
    check "CUDA stages are skipped without a device" \
      is_status "$tmp/r1/summary.json" tests "skipped (no device)"
    check "at most 7 result files, summary and logs among them" few_result_files "$tmp/r1"
    check "summary.md lists the unfinished stage" grep -q "Did not finish: test_hook" "$tmp/r1/summary.md"

    # 2. cap 100 s but a 10 s deadline: the stage is cut to the deadline, later stages skipped.
    t0=$(now)
    PLAYBOOK_GPU_RUN_NO_DEVICE=1 PLAYBOOK_GPU_RUN_TEST_STAGE='sleep 61.5' \
      PLAYBOOK_GPU_RUN_TEST_CAP=100 "$root/scripts/gpu-run" "$tmp/min.tgz" "$tmp/r2" --deadline 10 \
      >"$tmp/r2.log" 2>&1
    t1=$(now)
    check "a 10 s deadline holds (returns within 10 s + 6 s)" elapsed_below "$t0" "$t1" 16
    check "the stage was cut to the deadline less the summary's reserve (recorded 7-9 s)" \
      stage_seconds_between "$tmp/r2/summary.json" test_hook 7 9
    check "the stage cut by the deadline is recorded as timeout" \
      is_status "$tmp/r2/summary.json" test_hook timeout
    check "stages after the deadline are skipped" \
      is_status "$tmp/r2/summary.json" smoke "skipped (deadline)"
    check "its sleep was killed too" no_process "sleep 61.5"
    check "the summary is still written" few_result_files "$tmp/r2"
    ((failures)) && { echo "--- gpu-run output (1)"; cat "$tmp/r1.log"; echo "--- (2)"; cat "$tmp/r2.log"; }
    ;;

  rehearsal)
    build_dir=${2:?usage: test_gpu_route.sh rehearsal BUILD_DIR}
    t0=$(now)
    if ! "$root/scripts/gpu-pack" "$tmp/p.tgz" --build-dir "$build_dir" >"$tmp/pack.log" 2>&1; then
      cat "$tmp/pack.log"
      echo "FAIL  gpu-pack --build-dir $build_dir"
      exit 1
    fi
    cat "$tmp/pack.log"
    size=$(stat -c %s "$tmp/p.tgz")
    echo "archive: $((size / 1024)) KiB"
    check "the archive is under 30 MiB" test "$size" -lt $((30 * 1024 * 1024))

    x=$tmp/unpacked
    mkdir -p "$x"
    tar -xzf "$tmp/p.tgz" -C "$x"
    for f in playbook pb_cuda_tests; do check "bin/$f is packed" test -x "$x/bin/$f"; done
    check "the CUDA benchmarks are packed" compgen -G "$x/bin/pb_bench_*_cuda"
    check "the CPU benchmark is not" test ! -e "$x/bin/pb_bench_conv2d_cpu"
    for f in scripts/gpu-run bench/summarize.py bench/pytorch/fused_adam.py \
      bench/pytorch/resnet_step_time.py configs/resnet50_synthetic.toml \
      configs/resnet20_fashion_mnist.toml manifest/commit.txt manifest/abi-needs.txt; do
      check "$f is packed" test -s "$x/$f"
    done

    # ldd with the archive's libraries only: every dependency is in the archive, glibc, or CUDA.
    glibc_re='^(linux-vdso|ld-linux[-a-z0-9_]*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil)\.so'
    cuda_re='^lib(cuda|cudart|cublas|cublasLt|cudnn[a-z_]*|nvrtc[-a-z]*|nvToolsExt|nvJitLink|cupti|nvidia-ml)\.so'
    bad=""
    for f in "$x"/bin/* "$x"/lib/*.so* "$x"/lib/compat/*.so*; do
      while read -r name arrow path _; do
        [[ "$arrow" == "=>" ]] || continue
        [[ $name =~ $glibc_re || $name =~ $cuda_re ]] && continue
        [[ "$path" == "$x"/* ]] || bad+="$(basename "$f"): $name => $path; "
      done < <(env -i PATH="$PATH" LD_LIBRARY_PATH="$x/lib:$x/lib/compat" ldd "$f" 2>&1)
    done
    [[ -n "$bad" ]] && echo "outside the archive: $bad"
    check "ldd finds every non-glibc, non-CUDA library in the archive" test -z "$bad"
    check "libopenblas is packed" compgen -G "$x/lib/libopenblas.so*"
    check "libstdc++ is packed (lib/compat)" test -f "$x/lib/compat/libstdc++.so.6"
    check "no CUDA toolkit library is packed" \
      bash -c "! ls '$x/lib' '$x/lib/compat' | grep -Eq '^lib(cuda|cudart|cublas|cudnn|nvrtc)'"
    runpath_ok() { readelf -d "$1" | grep -q 'RUNPATH.*\[\$ORIGIN'; }
    check "bin/playbook has an \$ORIGIN RUNPATH" runpath_ok "$x/bin/playbook"
    check "bin/pb_cuda_tests has an \$ORIGIN RUNPATH" runpath_ok "$x/bin/pb_cuda_tests"

    # The packed gpu-run, as on a machine without a GPU.
    t1=$(now)
    PLAYBOOK_GPU_RUN_NO_DEVICE=1 "$x/scripts/gpu-run" "$tmp/p.tgz" "$tmp/res" --deadline 60 \
      >"$tmp/run.log" 2>&1
    rc=$?
    t2=$(now)
    cat "$tmp/run.log"
    check "gpu-run exits 0 (smoke passes, CUDA stages skipped)" test "$rc" -eq 0
    check "gpu-run ends within its 60 s deadline" elapsed_below "$t1" "$t2" 60
    check "every packed binary loads (smoke stage)" is_status "$tmp/res/summary.json" smoke pass
    for st in tests bench_compute memcheck bench_memory e2e race_sync; do
      check "stage $st is skipped (no device)" is_status "$tmp/res/summary.json" "$st" "skipped (no device)"
    done
    check "at most 7 result files, summary and logs among them" few_result_files "$tmp/res"
    check "the summary names the commit" \
      python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['meta']; sys.exit(0 if m['commit'] not in ('', 'unknown') and m['have_device'] is False else 1)" \
      "$tmp/res/summary.json"
    check "ldd found every library there" grep -q "ldd: every library found" "$tmp/run.log"
    echo "rehearsal took $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(now)") s"
    ;;

  *)
    echo "usage: test_gpu_route.sh timeout | rehearsal BUILD_DIR" >&2
    exit 2
    ;;
esac
echo "$failures failure(s)"
((failures == 0))
