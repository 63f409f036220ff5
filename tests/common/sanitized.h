#pragma once
// Sanitizer builds (PLAYBOOK_SANITIZE, scripts/test's build/test-asan) run our instrumented code
// several times slower while OpenBLAS, the kernel's I/O and sleeps keep their speed. A test whose
// assertion is a ratio of such times (is the loader faster than the step?) does not measure the
// code there: it skips itself in those builds and runs in every other build.
#include <gtest/gtest.h>

#if defined(PLAYBOOK_SANITIZED)
#define PB_SKIP_TIME_RATIOS_IN_SANITIZED_BUILDS()                                                \
  GTEST_SKIP() << "a ratio of measured times: sanitizers slow our code but not OpenBLAS or the " \
                  "loader's sleeps (runs in the default build)"
#else
#define PB_SKIP_TIME_RATIOS_IN_SANITIZED_BUILDS() \
  do {                                            \
  } while (false)
#endif
