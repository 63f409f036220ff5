# pb_set_warnings(target): -Wall -Wextra for C++ and for the host side of CUDA sources;
# errors when PLAYBOOK_WERROR is on (scripts/test turns it on, so CI builds are warning-free).
function(pb_set_warnings target)
  set(cxx_flags -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wpedantic)
  if(PLAYBOOK_WERROR)
    list(APPEND cxx_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)
  if(PLAYBOOK_WITH_CUDA)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
      $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${PLAYBOOK_WERROR}>>:--Werror=all-warnings>)
  endif()
endfunction()
