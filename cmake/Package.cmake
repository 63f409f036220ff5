# The Debian package (CPack), of everything cmake/Install.cmake installs: the executable, the
# static libraries with their headers and CMake package, the example configs and the library
# example. Included by cmake/Install.cmake.
#
#   scripts/package                                   # configures, builds, packs: build/package/
#   cpack -G DEB --config BUILD/CPackConfig.cmake     # from an existing build
#   apt-get install ./playbook_0.1.0_amd64.deb        # (--no-install-recommends: no -dev packages)
#
# Depends: the runtime libraries the executable links (what dpkg-shlibdeps derives from its
# NEEDED entries on Debian 12), from the packages the libraries link; scripts/package --check
# compares the two, so a new dependency without its Debian name below fails the install tests. The layer libraries are static, so the
# package has no shared library of its own.
# Recommends: the -dev packages a program built against the installed libraries needs (the
# headers and link libraries find_package(playbook) finds); a cluster node that only runs
# `playbook` installs with --no-install-recommends.
# A CUDA build (PLAYBOOK_WITH_CUDA) is versioned 0.1.0+cudaN: its executable needs the CUDA
# toolkit's libcudart.so.N, which no Debian package provides; it is found through the RUNPATH
# (the toolkit's library directory at build time) or ld.so's path.
set(CPACK_PACKAGE_NAME playbook)
set(CPACK_PACKAGE_VENDOR "playbook")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "C++20/CUDA deep-learning training runtime with a tuning layer")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(PLAYBOOK_PACKAGE_MAINTAINER "playbook maintainers <playbook@example.invalid>"
    CACHE STRING "The Maintainer field of the Debian package")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${PLAYBOOK_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(_pb_deb_version ${PROJECT_VERSION})
set(_pb_backend "CPU backend only")
if(PLAYBOOK_WITH_CUDA)
  set(_pb_deb_version ${PROJECT_VERSION}+cuda${CUDAToolkit_VERSION_MAJOR})
  set(_pb_backend "CPU and CUDA backends; needs the CUDA ${CUDAToolkit_VERSION_MAJOR} runtime \
(libcudart.so.${CUDAToolkit_VERSION_MAJOR}, from the CUDA toolkit) and an NVIDIA driver")
endif()
set(CPACK_DEBIAN_PACKAGE_VERSION ${_pb_deb_version})
set(CPACK_DEBIAN_FILE_NAME "playbook_${_pb_deb_version}_${CMAKE_SYSTEM_PROCESSOR}.deb")
execute_process(COMMAND dpkg --print-architecture OUTPUT_VARIABLE _pb_deb_arch
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _pb_dpkg_rc)
if(_pb_dpkg_rc EQUAL 0 AND _pb_deb_arch)
  set(CPACK_DEBIAN_FILE_NAME "playbook_${_pb_deb_version}_${_pb_deb_arch}.deb")
endif()

# Extended description: the lines after the summary (CPack indents them).
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION_SUMMARY}
The playbook executable (train, eval, study, studies, report, info), the static layer libraries
with their headers under /usr/include/playbook and a CMake package (find_package(playbook)),
example configs in /usr/share/playbook/configs and a library example in
/usr/share/playbook/examples/embed. Built with the ${_pb_backend}.")

# Per CMake package the libraries link (PLAYBOOK_DEPENDENCY_PACKAGES, cmake/Install.cmake): its
# Debian runtime package (versions as dpkg-shlibdeps gives them on Debian 12; none for header-only
# and toolkit packages) and its -dev package.
set(_pb_deb_runtime_OpenBLAS "libopenblas0")
set(_pb_deb_dev_OpenBLAS "libopenblas-dev")
set(_pb_deb_runtime_fmt "libfmt9 (>= 9.1.0)")
set(_pb_deb_dev_fmt "libfmt-dev")
set(_pb_deb_runtime_tomlplusplus "libtomlplusplus3 (>= 3.2.0)")
set(_pb_deb_dev_tomlplusplus "libtomlplusplus-dev")
set(_pb_deb_runtime_ZLIB "zlib1g (>= 1:1.1.4)")
set(_pb_deb_dev_ZLIB "zlib1g-dev")
set(_pb_deb_runtime_SQLite3 "libsqlite3-0 (>= 3.5.9)")
set(_pb_deb_dev_SQLite3 "libsqlite3-dev")
set(_pb_deb_runtime_PostgreSQL "libpq5")
set(_pb_deb_dev_PostgreSQL "libpq-dev")
set(_pb_deb_dev_nlohmann_json "nlohmann-json3-dev")
set(_pb_depends "libc6 (>= 2.34)" "libgcc-s1 (>= 3.0)" "libstdc++6 (>= 12)")
set(_pb_recommends)
foreach(pkg OpenBLAS ${PLAYBOOK_DEPENDENCY_PACKAGES})
  if(DEFINED _pb_deb_runtime_${pkg})
    list(APPEND _pb_depends "${_pb_deb_runtime_${pkg}}")
  endif()
  if(DEFINED _pb_deb_dev_${pkg})
    list(APPEND _pb_recommends "${_pb_deb_dev_${pkg}}")
  endif()
endforeach()
list(APPEND _pb_recommends "cmake (>= 3.25)" "g++ (>= 4:12)")
list(JOIN _pb_depends ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
list(JOIN _pb_recommends ", " CPACK_DEBIAN_PACKAGE_RECOMMENDS)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "dataset-fashion-mnist")

# `cpack --config CPackSourceConfig.cmake` (a source tarball) leaves out builds and VCS files.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build/" "/node_modules/" "/runs/" "/studies/")

include(CPack)
