# The packed GPU route (scripts/gpu-pack, scripts/gpu-run) rehearsed without a GPU; included from
# tests/CMakeLists.txt. Label `scripts`.
#   gpu_run_stage_timeout  a stage that overruns its cap is killed and recorded, and the overall
#                          deadline holds (gpu-run's test hook; no binaries needed: every build)
#   gpu_run_summary        bench/summarize.py on GPU-run-shaped logs (every build)
#   gpu_route_rehearsal    gpu-pack --build-dir <this build> (nothing is rebuilt), the archive's
#                          libraries, and a no-device gpu-run to the end (CUDA builds only)
find_program(PB_BASH bash)
find_program(PB_PYTHON3 python3)
if(PB_BASH AND PB_PYTHON3)
  add_test(NAME gpu_run_stage_timeout
           COMMAND ${PB_BASH} ${CMAKE_CURRENT_LIST_DIR}/test_gpu_route.sh timeout)
  set_tests_properties(gpu_run_stage_timeout PROPERTIES LABELS scripts TIMEOUT 120)
  add_test(NAME gpu_run_summary
           COMMAND ${PB_BASH} ${CMAKE_CURRENT_LIST_DIR}/test_gpu_route.sh summary)
  set_tests_properties(gpu_run_summary PROPERTIES LABELS scripts TIMEOUT 60)
  if(PLAYBOOK_WITH_CUDA)
    add_test(NAME gpu_route_rehearsal
             COMMAND ${PB_BASH} ${CMAKE_CURRENT_LIST_DIR}/test_gpu_route.sh rehearsal
                     ${CMAKE_BINARY_DIR})
    set_tests_properties(gpu_route_rehearsal PROPERTIES LABELS scripts TIMEOUT 240)
  endif()
endif()
