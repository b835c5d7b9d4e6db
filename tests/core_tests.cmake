# Core tests: each area is a folder with its own CMakeLists.txt.
set(COMPASS_TEST_AREAS "unit;unit_front;loader;integration;install;e2e" CACHE STRING
  "Core test areas to build (folders under tests/)")
foreach(sub ${COMPASS_TEST_AREAS})
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${sub}/CMakeLists.txt)
    add_subdirectory(${sub})
  endif()
endforeach()
