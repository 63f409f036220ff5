# Resolves PLAYBOOK_CUDA (AUTO|ON|OFF) into PLAYBOOK_WITH_CUDA and, when on, enables the CUDA
# language and finds the toolkit (cudart, cuBLAS, NVTX3) and cuDNN. The default architecture is
# sm_90 (Hopper) so that machines without a GPU still compile every kernel; scripts/gpu-check
# passes -DCMAKE_CUDA_ARCHITECTURES=native on a GPU machine.
string(TOUPPER "${PLAYBOOK_CUDA}" _pb_cuda)
set(PLAYBOOK_WITH_CUDA OFF)
if(_pb_cuda STREQUAL "OFF")
  # CPU-only build.
elseif(_pb_cuda STREQUAL "AUTO" OR _pb_cuda STREQUAL "ON")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(PLAYBOOK_WITH_CUDA ON)
  elseif(_pb_cuda STREQUAL "ON")
    message(FATAL_ERROR "PLAYBOOK_CUDA=ON but no CUDA compiler (nvcc) was found; "
                        "set CMAKE_CUDA_COMPILER or use PLAYBOOK_CUDA=AUTO|OFF")
  else()
    message(STATUS "PLAYBOOK_CUDA=AUTO: nvcc not found, building the CPU backend only")
  endif()
else()
  message(FATAL_ERROR "PLAYBOOK_CUDA must be AUTO, ON or OFF (got '${PLAYBOOK_CUDA}')")
endif()

if(PLAYBOOK_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  # CMake 3.25 does not know nvcc 13's C++20 dialect flag: CUDA sources are C++17 (the kernel
  # headers they include stay C++17-clean).
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib)
  if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
    add_library(pb_cudnn INTERFACE)
    target_include_directories(pb_cudnn INTERFACE ${CUDNN_INCLUDE_DIR})
    target_link_libraries(pb_cudnn INTERFACE ${CUDNN_LIBRARY})
    set(PLAYBOOK_HAVE_CUDNN ON)
  else()
    set(PLAYBOOK_HAVE_CUDNN OFF)
    message(STATUS "cuDNN not found: its benchmark baselines are skipped")
  endif()
endif()
