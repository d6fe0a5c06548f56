# ferry_ldconfig.cmake - runs at the end of `cmake --install` (install(SCRIPT)). Programs linked
# with -lferry find libferry.so through the dynamic loader's cache: after installing into a
# directory the loader searches (/usr/local/lib on Debian and Ubuntu), the cache must be rebuilt
# with ldconfig, as root, or they fail with "libferry.so.0: cannot open shared object file".
# This script runs ldconfig when it can, and otherwise says what to do. FERRY_INSTALL_LIBDIR is
# set by the install step before it; CMAKE_INSTALL_PREFIX is the prefix of this install
# (--prefix included).
if(NOT "$ENV{DESTDIR}" STREQUAL "")
  return() # a staged install (a package): the package's own scripts run ldconfig
endif()
if(IS_ABSOLUTE "${FERRY_INSTALL_LIBDIR}")
  set(ferry_libdir "${FERRY_INSTALL_LIBDIR}")
else()
  set(ferry_libdir "${CMAKE_INSTALL_PREFIX}/${FERRY_INSTALL_LIBDIR}")
endif()
get_filename_component(ferry_libdir "${ferry_libdir}" REALPATH)
find_program(FERRY_LDCONFIG ldconfig PATHS /sbin /usr/sbin /usr/local/sbin)
set(ferry_rpath_hint "link programs with -Wl,-rpath,${ferry_libdir} (or set LD_LIBRARY_PATH=${ferry_libdir});\n   CMake's find_package(ferry) sets the rpath by itself")
if(NOT FERRY_LDCONFIG)
  message(STATUS "ferry: no ldconfig here; ${ferry_rpath_hint}")
  return()
endif()

# The directories the loader searches: ldconfig lists them (-N -X: without touching anything).
execute_process(COMMAND "${FERRY_LDCONFIG}" -v -N -X OUTPUT_VARIABLE ferry_ld_out ERROR_QUIET)
string(REGEX MATCHALL "(^|\n)/[^:\n]*:" ferry_ld_lines "${ferry_ld_out}")
set(ferry_searched FALSE)
foreach(line IN LISTS ferry_ld_lines)
  string(REGEX REPLACE "^\n?(/[^:\n]*):$" "\\1" dir "${line}")
  get_filename_component(dir "${dir}" REALPATH)
  if(dir STREQUAL ferry_libdir)
    set(ferry_searched TRUE)
  endif()
endforeach()
if(NOT ferry_searched)
  message(STATUS "ferry: ${ferry_libdir} is not in the dynamic loader's search path: ${ferry_rpath_hint}")
  return()
endif()

execute_process(COMMAND id -u OUTPUT_VARIABLE ferry_uid OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(ferry_uid STREQUAL "0")
  execute_process(COMMAND "${FERRY_LDCONFIG}" RESULT_VARIABLE ferry_rc)
  if(ferry_rc EQUAL 0)
    message(STATUS "ferry: ran ldconfig: programs linked with -lferry find ${ferry_libdir}/libferry.so")
  else()
    message(WARNING "ferry: ldconfig failed (${ferry_rc}): run 'ldconfig' before starting programs linked with -lferry")
  endif()
else()
  message(WARNING "ferry: installed into ${ferry_libdir}, which the dynamic loader searches through its cache: "
                  "run 'sudo ldconfig' once, or programs linked with -lferry stop with "
                  "\"libferry.so.0: cannot open shared object file\"")
endif()
