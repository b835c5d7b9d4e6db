# compass_add_plugin(<name> KIND provider|router|pattern SOURCES ... [LIBS ...])
# Builds a MODULE shared object that sees only sdk/compass/plugin.h, links with -z defs (no
# undefined references into the core) and exports only its entry symbols.
function(compass_add_plugin name)
  cmake_parse_arguments(P "" "KIND" "SOURCES;LIBS" ${ARGN})
  if(NOT P_KIND MATCHES "^(provider|router|pattern)$")
    message(FATAL_ERROR "compass_add_plugin(${name}): KIND must be provider, router or pattern")
  endif()
  set(target compass_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME "${name}"
    LIBRARY_OUTPUT_DIRECTORY ${COMPASS_PLUGIN_BUILD_DIR}
    C_VISIBILITY_PRESET hidden)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/sdk)
  target_link_options(${target} PRIVATE -Wl,-z,defs)
  if(P_LIBS)
    target_link_libraries(${target} PRIVATE ${P_LIBS})
  endif()
  install(TARGETS ${target} LIBRARY DESTINATION ${COMPASS_PLUGIN_INSTALL_DIR})
  set_property(GLOBAL APPEND PROPERTY COMPASS_PLUGINS ${target})
endfunction()
