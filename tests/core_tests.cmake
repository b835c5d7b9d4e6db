# Core tests: each area is a folder with its own CMakeLists.txt.
foreach(sub unit loader integration install)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${sub}/CMakeLists.txt)
    add_subdirectory(${sub})
  endif()
endforeach()
