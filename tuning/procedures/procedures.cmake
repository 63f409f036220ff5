# pb_procedures: the playbook's procedures as studies (playbook sweep batch-size|lr|warmup|clip):
# the study files they generate and their verdicts (sweep.h). Included by tuning/CMakeLists.txt.
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
add_library(pb_procedures STATIC
  ${CMAKE_CURRENT_LIST_DIR}/plans.cpp
  ${CMAKE_CURRENT_LIST_DIR}/run_log.cpp
  ${CMAKE_CURRENT_LIST_DIR}/batch_size.cpp
  ${CMAKE_CURRENT_LIST_DIR}/learning_rate.cpp
  ${CMAKE_CURRENT_LIST_DIR}/clip.cpp
)
target_include_directories(pb_procedures PUBLIC ${PLAYBOOK_ROOT})
target_link_libraries(pb_procedures PUBLIC pb_tuning nlohmann_json::nlohmann_json PRIVATE fmt::fmt)
pb_set_warnings(pb_procedures)
