# tests/profile: the input pipeline and its profiling (pb_profile_tests, registered in
# tests/CMakeLists.txt), plus the NVTX injection library its NVTX test loads into a training
# process through NVTX_INJECTION64_PATH, and the playbook executable that test runs.
if(TARGET pb_profile_tests)
  target_compile_definitions(pb_profile_tests PRIVATE PLAYBOOK_BIN="$<TARGET_FILE:playbook>")
  add_dependencies(pb_profile_tests playbook)
  if(PB_NVTX3_INCLUDE_DIR)
    add_library(pb_nvtx_injection SHARED ${CMAKE_CURRENT_LIST_DIR}/nvtx_injection.cc)
    target_include_directories(pb_nvtx_injection SYSTEM PRIVATE ${PB_NVTX3_INCLUDE_DIR})
    target_link_libraries(pb_nvtx_injection PRIVATE Threads::Threads)
    add_dependencies(pb_profile_tests pb_nvtx_injection)
    target_compile_definitions(pb_profile_tests
                               PRIVATE PB_NVTX_INJECTION_LIB="$<TARGET_FILE:pb_nvtx_injection>")
  else()
    target_compile_definitions(pb_profile_tests PRIVATE PB_NVTX_INJECTION_LIB="")
  endif()
endif()
