# pb_insight: insight from studies (analysis*.cpp: axis and isolation plots, boundary check,
# training-curve diagnostics, the sampling bootstrap, trial variance) and the HTML report
# (report*.cpp, with the Vega-Lite assets of tuning/report/). Included by tuning/CMakeLists.txt.
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
add_library(pb_insight STATIC
  ${CMAKE_CURRENT_LIST_DIR}/analysis.cpp
  ${CMAKE_CURRENT_LIST_DIR}/analysis_curves.cpp
  ${CMAKE_CURRENT_LIST_DIR}/analysis_stats.cpp
  ${CMAKE_CURRENT_LIST_DIR}/analysis_text.cpp
  ${CMAKE_CURRENT_LIST_DIR}/report.cpp
  ${CMAKE_CURRENT_LIST_DIR}/report_input.cpp
)
target_include_directories(pb_insight PUBLIC ${PLAYBOOK_ROOT})
target_link_libraries(pb_insight PUBLIC pb_tuning nlohmann_json::nlohmann_json PRIVATE fmt::fmt)
pb_set_warnings(pb_insight)
# The Vega/Vega-Lite browser builds `npm ci` puts here are inlined into every report (report.h).
set(PLAYBOOK_REPORT_ASSETS_DIR ${CMAKE_CURRENT_LIST_DIR}/report/node_modules)
target_compile_definitions(pb_insight PRIVATE
                           PLAYBOOK_REPORT_ASSETS_DIR="${PLAYBOOK_REPORT_ASSETS_DIR}")
