# Install rules, the CMake package (find_package(playbook)) and the Debian package (CPack).
# Included once from the top-level CMakeLists.txt, after every layer's add_subdirectory.
#
#   cmake --install BUILD --prefix PREFIX      # installs the tree below
#   cpack -G DEB --config BUILD/CPackConfig.cmake   (or scripts/package)   # playbook_*.deb
#
# Layout under the prefix (/usr in the .deb):
#
#   bin/playbook                               the executable
#   include/playbook/kernels|runtime|models|train|tuning/...h
#       the headers at their paths in the source tree, so code written against the tree
#       (#include "runtime/core/tensor.h", "models/zoo.h") compiles unchanged with
#       -I<prefix>/include/playbook. The playbook/ level keeps generic folder names (train/,
#       models/, runtime/) out of <prefix>/include, where they would collide with other software.
#   lib/playbook/libpb_*.a                     the layer libraries (static, position-independent
#                                              so they also link into shared objects); in their own
#                                              folder for the same reason as the headers
#   lib/cmake/playbook/                        playbookConfig.cmake (+ Version, Targets) and
#                                              FindOpenBLAS.cmake, which the config uses
#   share/playbook/configs/                    example training configs and study files
#   share/playbook/examples/embed/             examples/embed: the library example
#   share/playbook/report/node_modules/        the chart libraries `playbook report` inlines (when
#                                              `npm ci` ran; point PLAYBOOK_REPORT_ASSETS here)
#
# Exported targets (namespace playbook::, each the layer library without its pb_ prefix):
# playbook::kernels, ::core, ::ops, ::nn, ::config, ::optim, ::data, ::checkpoint, ::runtime (all
# of runtime/), ::models, ::train, ::tuning, ::insight, ... (the config's playbook_TARGETS lists
# them all), and the umbrella playbook::playbook. The same names exist as aliases in this build,
# for projects that add playbook as a subdirectory.
#
# The libraries are found rather than listed: every library target defined under the layer
# folders is installed and exported, so a library a layer adds later needs no edit here. Their
# `target_include_directories(... PUBLIC ${PLAYBOOK_ROOT})` (the source root) is wrapped here in
# $<BUILD_INTERFACE:...>; the installed targets get include/playbook instead.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PLAYBOOK_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/playbook)
set(PLAYBOOK_INSTALL_LIBDIR ${CMAKE_INSTALL_LIBDIR}/playbook)
set(PLAYBOOK_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/playbook)
set(PLAYBOOK_INSTALL_DATADIR ${CMAKE_INSTALL_DATADIR}/playbook)
set(_pb_layers kernels runtime models train tuning)

# ---- the layer libraries ------------------------------------------------------------------------
# _pb_library_targets(out dir): the library targets defined in `dir` and its subdirectories.
function(_pb_library_targets out dir)
  set(found)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t IN LISTS targets)
    get_target_property(type ${t} TYPE)
    if(type MATCHES "^(STATIC|SHARED|INTERFACE)_LIBRARY$")
      list(APPEND found ${t})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _pb_library_targets(sub_found ${sub})
    list(APPEND found ${sub_found})
  endforeach()
  set(${out} ${found} PARENT_SCOPE)
endfunction()

set(PLAYBOOK_LIBRARIES)
foreach(layer IN LISTS _pb_layers)
  _pb_library_targets(libs ${PROJECT_SOURCE_DIR}/${layer})
  list(APPEND PLAYBOOK_LIBRARIES ${libs})
endforeach()

foreach(lib IN LISTS PLAYBOOK_LIBRARIES)
  string(REGEX REPLACE "^pb_" "" export_name ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name})
  if(NOT TARGET playbook::${export_name})
    add_library(playbook::${export_name} ALIAS ${lib})
  endif()
  get_target_property(type ${lib} TYPE)
  if(type STREQUAL "STATIC_LIBRARY")
    set_target_properties(${lib} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  endif()
  # Source-tree include directories exist only in the build tree.
  get_target_property(dirs ${lib} INTERFACE_INCLUDE_DIRECTORIES)
  if(dirs)
    set(wrapped)
    foreach(d IN LISTS dirs)
      cmake_path(IS_PREFIX PROJECT_SOURCE_DIR "${d}" NORMALIZE in_source)
      cmake_path(IS_PREFIX PROJECT_BINARY_DIR "${d}" NORMALIZE in_binary)
      if(in_source OR in_binary)
        list(APPEND wrapped "$<BUILD_INTERFACE:${d}>")
      else()
        list(APPEND wrapped "${d}")
      endif()
    endforeach()
    set_target_properties(${lib} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${wrapped}")
  endif()
  # The headers are C++20 (kernels/ stays C++17-clean: the CUDA sources include it).
  if(NOT lib STREQUAL "pb_kernels")
    target_compile_features(${lib} INTERFACE cxx_std_20)
  endif()
endforeach()

# Public headers that include <nlohmann/json*.hpp> of libraries that link it PRIVATE: consumers of
# the installed package need its include directory (header-only, so nothing changes at link time).
find_package(nlohmann_json REQUIRED)
foreach(lib pb_optim pb_train)
  if(TARGET ${lib})
    target_link_libraries(${lib} INTERFACE $<INSTALL_INTERFACE:nlohmann_json::nlohmann_json>)
  endif()
endforeach()

# playbook::playbook: everything.
add_library(pb_playbook INTERFACE)
target_link_libraries(pb_playbook INTERFACE ${PLAYBOOK_LIBRARIES})
set_target_properties(pb_playbook PROPERTIES EXPORT_NAME playbook)
add_library(playbook::playbook ALIAS pb_playbook)

install(TARGETS ${PLAYBOOK_LIBRARIES} pb_playbook
        EXPORT playbookTargets
        ARCHIVE DESTINATION ${PLAYBOOK_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${PLAYBOOK_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${PLAYBOOK_INSTALL_INCLUDEDIR})

# The headers of every layer, at their source-tree paths (not cli/: the executable's own).
foreach(layer IN LISTS _pb_layers)
  file(GLOB_RECURSE headers RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
       ${PROJECT_SOURCE_DIR}/${layer}/*.h ${PROJECT_SOURCE_DIR}/${layer}/*.cuh)
  list(FILTER headers EXCLUDE REGEX "/node_modules/")
  foreach(h IN LISTS headers)
    get_filename_component(rel_dir ${h} DIRECTORY)
    install(FILES ${PROJECT_SOURCE_DIR}/${h} DESTINATION ${PLAYBOOK_INSTALL_INCLUDEDIR}/${rel_dir})
  endforeach()
endforeach()

# ---- the executable and its data ----------------------------------------------------------------
install(TARGETS playbook RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(PLAYBOOK_WITH_CUDA)
  # libcudart.so.13 comes from the CUDA toolkit, not a Debian package: the installed executable
  # looks for it where this build found it (ld.so's own search path comes after).
  set_target_properties(playbook PROPERTIES INSTALL_RPATH "${CUDAToolkit_LIBRARY_DIR}")
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/configs/ DESTINATION ${PLAYBOOK_INSTALL_DATADIR}/configs)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/embed DESTINATION ${PLAYBOOK_INSTALL_DATADIR}/examples
        PATTERN "build" EXCLUDE)
# The report's chart libraries (tuning/report.h reads these three builds), when npm ci has run.
foreach(pkg vega vega-lite vega-embed)
  set(dir ${PROJECT_SOURCE_DIR}/tuning/report/node_modules/${pkg})
  install(FILES ${dir}/build/${pkg}.min.js
          DESTINATION ${PLAYBOOK_INSTALL_DATADIR}/report/node_modules/${pkg}/build OPTIONAL)
  install(FILES ${dir}/package.json ${dir}/LICENSE
          DESTINATION ${PLAYBOOK_INSTALL_DATADIR}/report/node_modules/${pkg} OPTIONAL)
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- the CMake package --------------------------------------------------------------------------
install(EXPORT playbookTargets NAMESPACE playbook:: DESTINATION ${PLAYBOOK_INSTALL_CMAKEDIR})
# The packages whose imported targets (Pkg::target) the libraries link, PUBLIC or PRIVATE (static
# libraries export even their private link dependencies): the config finds each of them, and
# cmake/Package.cmake turns them into Debian dependencies. OpenBLAS is found separately (our find
# module, installed next to the config).
set(PLAYBOOK_DEPENDENCY_PACKAGES)
foreach(lib IN LISTS PLAYBOOK_LIBRARIES)
  foreach(prop LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
    get_target_property(items ${lib} ${prop})
    if(items)
      string(REGEX MATCHALL "[A-Za-z0-9_]+::" namespaces "${items}")
      list(APPEND PLAYBOOK_DEPENDENCY_PACKAGES ${namespaces})
    endif()
  endforeach()
endforeach()
list(TRANSFORM PLAYBOOK_DEPENDENCY_PACKAGES REPLACE "::$" "")
list(TRANSFORM PLAYBOOK_DEPENDENCY_PACKAGES REPLACE "^SQLite$" "SQLite3")
list(TRANSFORM PLAYBOOK_DEPENDENCY_PACKAGES REPLACE "^CUDA$" "CUDAToolkit")
list(REMOVE_ITEM PLAYBOOK_DEPENDENCY_PACKAGES playbook OpenBLAS)
list(REMOVE_DUPLICATES PLAYBOOK_DEPENDENCY_PACKAGES)
list(SORT PLAYBOOK_DEPENDENCY_PACKAGES)
set(PLAYBOOK_FIND_DEPENDENCIES "")
foreach(pkg IN LISTS PLAYBOOK_DEPENDENCY_PACKAGES)
  if(pkg STREQUAL "CUDAToolkit")
    string(APPEND PLAYBOOK_FIND_DEPENDENCIES "find_dependency(CUDAToolkit ${CUDAToolkit_VERSION_MAJOR})\n")
  else()
    string(APPEND PLAYBOOK_FIND_DEPENDENCIES "find_dependency(${pkg})\n")
  endif()
endforeach()
message(STATUS "playbook package: depends on OpenBLAS ${PLAYBOOK_DEPENDENCY_PACKAGES}")

set(PLAYBOOK_EXPORTED_TARGETS playbook::playbook)
foreach(lib IN LISTS PLAYBOOK_LIBRARIES)
  get_target_property(export_name ${lib} EXPORT_NAME)
  list(APPEND PLAYBOOK_EXPORTED_TARGETS playbook::${export_name})
endforeach()
if(PLAYBOOK_WITH_CUDA)
  set(PLAYBOOK_CUDA_MAJOR ${CUDAToolkit_VERSION_MAJOR})
else()
  set(PLAYBOOK_CUDA_MAJOR "")
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/playbookConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/playbookConfig.cmake
                              INSTALL_DESTINATION ${PLAYBOOK_INSTALL_CMAKEDIR}
                              PATH_VARS CMAKE_INSTALL_BINDIR PLAYBOOK_INSTALL_DATADIR)
# 0.x: a minor version may break the API, so 0.1 accepts 0.1.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/playbookConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/playbookConfig.cmake
              ${PROJECT_BINARY_DIR}/playbookConfigVersion.cmake
              ${CMAKE_CURRENT_LIST_DIR}/FindOpenBLAS.cmake
        DESTINATION ${PLAYBOOK_INSTALL_CMAKEDIR})

include(${CMAKE_CURRENT_LIST_DIR}/Package.cmake)
