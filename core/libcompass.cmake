# libcompass (shared and static) and compassd.
set(COMPASS_CORE_SOURCES src/config.c src/loader.c src/metrics.c src/host.c src/engine.c src/breaker.c
    src/loop.c)
foreach(kind shared static)
  if(kind STREQUAL "shared")
    add_library(compass SHARED ${COMPASS_CORE_SOURCES})
    set(t compass)
  else()
    add_library(compass_static STATIC ${COMPASS_CORE_SOURCES})
    set_target_properties(compass_static PROPERTIES OUTPUT_NAME compass)
    set(t compass_static)
  endif()
  target_include_directories(${t} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/sdk>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_compile_definitions(${t} PRIVATE COMPASS_BUILDING=1
    COMPASS_VERSION_STRING="${PROJECT_VERSION}")
  target_link_libraries(${t} PRIVATE compass_common PkgConfig::CURL PkgConfig::LIBCONFIG
    PkgConfig::JSONC Threads::Threads ${CMAKE_DL_LIBS} m)
endforeach()
set_target_properties(compass PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION 0)

add_executable(compassd compassd/main.c compassd/http.c compassd/anthropic_front.c)
set_target_properties(compassd PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
target_include_directories(compassd PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/compassd
  ${CMAKE_CURRENT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/plugins/providers/common)
target_link_libraries(compassd PRIVATE compass compass_common PkgConfig::MHD PkgConfig::JSONC
  Threads::Threads)
target_compile_definitions(compassd PRIVATE COMPASS_VERSION_STRING="${PROJECT_VERSION}"
  COMPASS_DEFAULT_PLUGIN_DIR="${CMAKE_INSTALL_PREFIX}/${COMPASS_PLUGIN_INSTALL_DIR}")

install(TARGETS compass compass_static compassd
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES include/compass/compass.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/compass)

# .pc files locate the prefix from their own directory, so an install with --prefix works
file(RELATIVE_PATH COMPASS_PC_RELPREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig"
  "${CMAKE_INSTALL_PREFIX}")
set_target_properties(compassd PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/compass.pc.in ${CMAKE_BINARY_DIR}/compass.pc @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/cmake/compass-plugin.pc.in
  ${CMAKE_BINARY_DIR}/compass-plugin.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/compass.pc ${CMAKE_BINARY_DIR}/compass-plugin.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_SOURCE_DIR}/etc/compassd.conf ${PROJECT_SOURCE_DIR}/etc/models.conf
  DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/compass OPTIONAL)
install(FILES ${PROJECT_SOURCE_DIR}/etc/compassd.service
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/systemd/system OPTIONAL)
