# compass_add_test(<name> SOURCES ... [LIBS ...])
# A criterion test executable registered with ctest. Tests find built plugins through
# COMPASS_PLUGIN_DIR, the source tree through COMPASS_SOURCE_DIR, binaries through
# COMPASS_BINARY_DIR.
pkg_check_modules(CRITERION REQUIRED IMPORTED_TARGET criterion)
function(compass_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(test_${name} ${T_SOURCES})
  target_link_libraries(test_${name} PRIVATE PkgConfig::CRITERION ${T_LIBS})
  target_include_directories(test_${name} PRIVATE ${PROJECT_SOURCE_DIR}/sdk
    ${PROJECT_SOURCE_DIR}/sdk/testing)
  target_compile_definitions(test_${name} PRIVATE
    COMPASS_PLUGIN_DIR="${COMPASS_PLUGIN_BUILD_DIR}"
    COMPASS_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    COMPASS_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_test(NAME ${name} COMMAND test_${name} --jobs 2)
  set_tests_properties(${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "COMPASS_PLUGIN_DIR=${COMPASS_PLUGIN_BUILD_DIR}")
endfunction()
