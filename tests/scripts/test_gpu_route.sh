#!/usr/bin/env bash
# Rehearses the packed GPU route on a machine without a GPU (tests/scripts/gpu_route.cmake).
#
#   test_gpu_route.sh timeout
#       gpu-run on a minimal archive with its test hook: a stage that sleeps past its cap is
#       killed (with its children) and recorded as "timeout", the run returns within cap + a small
#       margin, a stage cap larger than the deadline is cut to the deadline, and a command that a
#       stage runs in its own process group (under its inner timeout) dies with the stage.
#   test_gpu_route.sh summary
#       bench/summarize.py on a log folder in the formats a GPU run leaves (gtest XML with a
#       failure and a skip, Google Benchmark JSON with an error row, sanitizer logs, training
#       metrics): counts, ratios, geometric means and step times come out right.
#   test_gpu_route.sh rehearsal BUILD_DIR
#       gpu-pack --build-dir BUILD_DIR (packs the binaries already built there; builds nothing);
#       the archive is under 30 MiB; unpacked in an empty folder with LD_LIBRARY_PATH set to the
#       archive's lib/ only, ldd finds every library of every binary and packed library in the
#       archive, except glibc's and the CUDA driver/toolkit ones; RUNPATHs are $ORIGIN-relative;
#       the packed scripts/gpu-run runs to the end as on a machine without a device (the smoke
#       stage runs every packed binary, the CUDA stages are "skipped (no device)") and writes its
#       summary; then again with a fake nvidia-smi and compute-sanitizer, so that every stage runs
#       its real commands here and leaves its results where bench/summarize.py reads them.
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

    # 3. A stage's own command under its inner timeout (its own process group, as the benchmark
    #    and sanitizer commands run) is killed with the stage too.
    PLAYBOOK_GPU_RUN_NO_DEVICE=1 PLAYBOOK_GPU_RUN_TEST_CAP=3 \
      PLAYBOOK_GPU_RUN_TEST_STAGE='STAGE_END=$(($(date +%s) + 100)); subw 1 1 sleep 61.75' \
      "$root/scripts/gpu-run" "$tmp/min.tgz" "$tmp/r3" --deadline 60 >"$tmp/r3.log" 2>&1
    check "a command in its own process group is recorded as timeout with its stage" \
      is_status "$tmp/r3/summary.json" test_hook timeout
    check "and killed with it" no_process "sleep 61.75"
    ((failures)) && { echo "--- gpu-run output (1)"; cat "$tmp/r1.log"; echo "--- (2)"; cat "$tmp/r2.log"; }
    ;;

  summary)
    # bench/summarize.py on a log folder in the formats gpu-run collects (gtest XML, Google
    # Benchmark JSON, compute-sanitizer logs, metrics.jsonl), as a GPU run would leave it.
    w=$tmp/logs
    mkdir -p "$w"/{tests,bench,sanitizer,e2e/resnet50,e2e/resnet20}
    printf 'stage\tstatus\tseconds\tcap\nsmoke\tpass\t1\t10\ntests\tpass\t40\t90\nmemcheck\ttimeout\t95\t95\n' \
      >"$w/stages.tsv"
    echo '{"gpu": "NVIDIA H200", "driver": "580.159.03", "commit": "abc123", "deadline_s": 500}' >"$w/meta.json"
    cat >"$w/tests/pb_cuda_tests.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1" disabled="0" errors="0" time="1" name="AllTests">
  <testsuite name="GemmCuda" tests="3" failures="1" disabled="0" skipped="1" errors="0" time="1">
    <testcase name="MatchesCpuAllTransposes" status="run" result="completed" time="0.5" classname="GemmCuda" />
    <testcase name="BetaOneAccumulates" status="run" result="completed" time="0.1" classname="GemmCuda">
      <failure message="test_gemm_cuda.cpp:220&#x0A;Expected equality" type=""><![CDATA[x]]></failure>
    </testcase>
    <testcase name="EmptyAndInvalidShapes" status="run" result="skipped" time="0" classname="GemmCuda">
      <skipped message="no CUDA device"><![CDATA[no CUDA device]]></skipped>
    </testcase>
  </testsuite>
</testsuites>
XML
    cat >"$w/bench/pb_bench_gemm_cuda.json" <<'JSON'
{"context": {}, "benchmarks": [
 {"name": "gemm/4096^3_NN/manual_time", "run_type": "iteration", "real_time": 5.0, "time_unit": "ms",
  "TFLOP/s": 27.5, "cublas_TFLOP/s": 50.0, "ratio_vs_cublas": 0.55},
 {"name": "gemm/2048^3_NN/manual_time", "run_type": "iteration", "real_time": 1.0, "time_unit": "ms",
  "TFLOP/s": 17.2, "cublas_TFLOP/s": 21.5, "ratio_vs_cublas": 0.8},
 {"name": "gemm/odd/manual_time", "run_type": "iteration", "error_occurred": true,
  "error_message": "result differs", "real_time": 0.0, "time_unit": "ms"}]}
JSON
    cat >"$w/bench/pb_bench_optim_cuda.json" <<'JSON'
{"benchmarks": [{"name": "BM_FusedUpdate/adam/manual_time", "run_type": "iteration",
  "real_time": 200.0, "time_unit": "us", "GB/s": 3600.0, "copy_GB/s": 4000.0, "copy_frac": 0.9,
  "params": 25557032, "tensors": 161}]}
JSON
    echo '{"copy_GB/s": 4000.0, "fused": {"us": 180.0, "GB/s": 4000.0, "copy_frac": 1.0},
      "foreach": {"us": 400.0, "GB/s": 1800.0, "copy_frac": 0.45}}' >"$w/bench/pytorch_fused_adam.json"
    printf '========= ERROR SUMMARY: 0 errors\n' >"$w/sanitizer/racecheck.log"
    printf '========= ERROR SUMMARY: 2 errors\n' >"$w/sanitizer/memcheck.log"
    for s in 5 10 15; do
      echo "{\"step\": $s, \"examples_per_sec\": $((s == 5 ? 100 : 640))}" >>"$w/e2e/resnet50/metrics.jsonl"
    done
    echo '{"model": "resnet50", "step_ms": 50.0}' >"$w/e2e/pytorch_resnet50.json"
    python3 "$root/bench/summarize.py" --work "$w" --out "$tmp/out" >/dev/null
    check "summarize.py writes summary.json and summary.md" test -s "$tmp/out/summary.md"
    check "summary.json holds what the inputs say" python3 - "$tmp/out/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["test_counts"]
assert (t["total"], t["passed"], t["failed"], t["skipped"]) == (3, 1, 1, 1), t
assert [c["name"] for c in s["tests"] if c["status"] == "failed"] == ["GemmCuda.BetaOneAccumulates"]
rows = {r["name"]: r for r in s["benchmarks"]}
assert rows["gemm/4096^3_NN/manual_time"]["ratio_vs_cublas"] == 0.55
assert rows["gemm/odd/manual_time"]["error"] == "result differs"
adam = rows["BM_FusedUpdate/adam/manual_time"]
assert abs(adam["ratio_vs_torch_fused"] - 0.9) < 1e-12, adam
assert "params" not in adam and "copy_GB/s" in adam
assert rows["torch.optim.Adam(fused=True)"]["GB/s"] == 4000.0
g = s["geomean_ratios"]["pb_bench_gemm_cuda:ratio_vs_cublas"]
assert abs(g - (0.55 * 0.8) ** 0.5) < 1e-12, g
assert s["sanitizers"]["memcheck"]["errors"] == 2 and s["sanitizers"]["racecheck"]["errors"] == 0
assert s["sanitizers"]["synccheck"] is None
e = s["e2e"]["resnet50"]
assert abs(e["playbook_step_ms"] - 100.0) < 1e-9, e  # 64 / 640 examples/s, warm-up line dropped
assert abs(e["ratio_vs_pytorch"] - 0.5) < 1e-9, e
assert s["unfinished_stages"] == ["memcheck"], s["unfinished_stages"]
assert s["meta"]["gpu"] == "NVIDIA H200"
PY
    check "summary.md lists the failed test and the ratios" bash -c "grep -q 'FAILED GemmCuda.BetaOneAccumulates' '$tmp/out/summary.md' && grep -q 'ratio_vs_cublas 0.550' '$tmp/out/summary.md' && grep -q '| resnet50 | 64 | 100.00 | 50.00 | 0.500 |' '$tmp/out/summary.md'"
    ((failures)) && cat "$tmp/out/summary.md"
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

    # Once more with a fake nvidia-smi and a fake compute-sanitizer (which runs the program and
    # prints a clean summary): every stage runs its real commands on this machine, where the
    # CUDA tests skip, the benchmarks report "no CUDA device", playbook train refuses cuda and
    # PyTorch is absent. Each stage must finish (pass or fail, never timeout) and leave its
    # results where summarize.py reads them.
    mkdir -p "$tmp/fake"
    printf '%s\n' '#!/bin/bash' \
      'if [[ "$*" == *query-gpu* ]]; then echo "Fake GPU, 999.1"; else echo "fake nvidia-smi"; fi' \
      >"$tmp/fake/nvidia-smi"
    printf '%s\n' '#!/bin/bash' 'tool=memcheck; args=()' \
      'while (($#)); do case "$1" in --tool) tool=$2; shift 2 ;; --leak-check|--error-exitcode) shift 2 ;; *) args+=("$1"); shift ;; esac; done' \
      'echo "== fake compute-sanitizer $tool: ${args[*]}"; "${args[@]}" >/dev/null 2>&1; rc=$?' \
      'echo "========= ERROR SUMMARY: 0 errors"; exit $rc' >"$tmp/fake/compute-sanitizer"
    chmod +x "$tmp/fake/nvidia-smi" "$tmp/fake/compute-sanitizer"
    t1=$(now)
    PATH="$tmp/fake:$PATH" "$x/scripts/gpu-run" "$tmp/p.tgz" "$tmp/res2" --deadline 120 \
      >"$tmp/run2.log" 2>&1
    t2=$(now)
    check "with a (fake) device gpu-run ends within 120 s" elapsed_below "$t1" "$t2" 120
    for st in smoke tests bench_compute memcheck bench_memory e2e race_sync; do
      check "stage $st ran to its end" python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
st = next(st for st in s["stages"] if st["stage"] == sys.argv[2])
sys.exit(0 if st["status"] == "pass" or st["status"].startswith("fail") else 1)' "$tmp/res2/summary.json" "$st"
    done
    mkdir -p "$tmp/logs2"
    tar -xzf "$tmp/res2/logs.tgz" -C "$tmp/logs2"
    for f in tests/pb_cuda_tests.xml bench/pb_bench_gemm_cuda.json bench/pb_bench_conv2d_cuda-fprop.json \
      bench/pb_bench_conv2d_cuda-wgrad.json bench/pb_bench_memory_cuda.json bench/pb_bench_optim_cuda.json \
      sanitizer/memcheck.log sanitizer/racecheck.log sanitizer/synccheck.log e2e/resnet50.log \
      e2e/resnet20.log nvidia-smi.txt; do
      check "logs.tgz holds $f" test -s "$tmp/logs2/logs/$f"
    done
    check "the tests stage ran every CUDA test (skipped here)" python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["test_counts"]
sys.exit(0 if t["total"] > 50 and t["failed"] == 0 else 1)' "$tmp/res2/summary.json"
    check "memcheck ran without caching and without the deliberate OOM test" \
      grep -q "gtest_filter=-DeviceCuda.OutOfMemoryFromCudaMallocLeavesNoStickyError" \
      "$tmp/logs2/logs/sanitizer/memcheck.log"
    check "racecheck ran suite by suite" test "$(grep -c "fake compute-sanitizer racecheck" \
      "$tmp/logs2/logs/sanitizer/racecheck.log")" -ge 5
    check "playbook train got as far as choosing the device" \
      grep -q "CUDA device" "$tmp/logs2/logs/e2e/resnet50.log"
    ((failures)) && cat "$tmp/run2.log"
    grep "gpu-run \[" "$tmp/run.log" "$tmp/run2.log" | sed "s/^.*gpu-run/gpu-run/"
    echo "rehearsal took $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(now)") s"
    ;;

  *)
    echo "usage: test_gpu_route.sh timeout | summary | rehearsal BUILD_DIR" >&2
    exit 2
    ;;
esac
echo "$failures failure(s)"
((failures == 0))
