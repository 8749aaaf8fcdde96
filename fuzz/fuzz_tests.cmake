# ctest tests fuzz.<name>: each libFuzzer target of fuzz/ (built by the separate clang project in
# fuzz/CMakeLists.txt, by default into build-fuzz/ next to the sources; scripts/test.sh builds it)
# runs for VESSEL_FUZZ_SECONDS on a copy of its seed corpus fuzz/corpus/<name>. Any crash, leak,
# sanitizer report or timeout fails the test; a missing binary skips it (77) with the reason.
set(VESSEL_FUZZ_BUILD_DIR ${CMAKE_SOURCE_DIR}/build-fuzz CACHE PATH "Build tree of the fuzz targets (fuzz/CMakeLists.txt)")
set(VESSEL_FUZZ_SECONDS 15 CACHE STRING "How long ctest runs each fuzz target")

file(GLOB VESSEL_FUZZ_TARGET_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/*_fuzz.cpp)
foreach(src IN LISTS VESSEL_FUZZ_TARGET_SOURCES)
  get_filename_component(target ${src} NAME_WE)        # virtqueue_fuzz
  string(REGEX REPLACE "_fuzz$" "" name ${target})     # virtqueue
  add_test(NAME fuzz.${name} COMMAND ${CMAKE_SOURCE_DIR}/fuzz/run_fuzz.sh
    ${VESSEL_FUZZ_BUILD_DIR}/${target} ${CMAKE_SOURCE_DIR}/fuzz/corpus/${name} ${VESSEL_FUZZ_SECONDS}
    ${CMAKE_BINARY_DIR}/fuzz-artifacts/${name})
  # One core each (libFuzzer runs a single process here); the timeout leaves room for start-up
  # and for ASan's leak check at exit.
  set_tests_properties(fuzz.${name} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 PROCESSORS 1 LABELS "fuzz")
endforeach()
