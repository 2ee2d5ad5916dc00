# CMake package configuration for libedgellm, installed by scripts/install.sh into
# <prefix>/lib/cmake/EdgeLLM. `find_package(EdgeLLM REQUIRED)` then provides:
#   EdgeLLM::edgellm         the shared library (libedgellm.so / .dylib) with its headers
#   EdgeLLM::edgellm_static  the static library (libedgellm.a) plus the system libraries a Rust
#                            static library needs (threads, dl, m, rt, util, gcc_s)
# Both carry <prefix>/include, which holds edgellm.h (C) and edgellm.hpp (C++ RAII wrapper).

include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_edgellm_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(EdgeLLM_INCLUDE_DIRS "${_edgellm_prefix}/include")

if(APPLE)
  set(_edgellm_shared "${_edgellm_prefix}/lib/libedgellm.dylib")
else()
  set(_edgellm_shared "${_edgellm_prefix}/lib/libedgellm.so")
endif()
set(_edgellm_static "${_edgellm_prefix}/lib/libedgellm.a")

foreach(_f "${_edgellm_shared}" "${_edgellm_static}" "${EdgeLLM_INCLUDE_DIRS}/edgellm.h")
  if(NOT EXISTS "${_f}")
    set(EdgeLLM_FOUND FALSE)
    set(EdgeLLM_NOT_FOUND_MESSAGE "EdgeLLM installation is incomplete: ${_f} is missing")
    return()
  endif()
endforeach()

if(NOT TARGET EdgeLLM::edgellm)
  add_library(EdgeLLM::edgellm SHARED IMPORTED)
  set_target_properties(EdgeLLM::edgellm PROPERTIES
    IMPORTED_LOCATION "${_edgellm_shared}"
    # The Rust-built library has no SONAME; link it by name so executables do not record the
    # absolute path of the install tree.
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${EdgeLLM_INCLUDE_DIRS}")
endif()

if(NOT TARGET EdgeLLM::edgellm_static)
  add_library(EdgeLLM::edgellm_static STATIC IMPORTED)
  set(_edgellm_system_libs Threads::Threads ${CMAKE_DL_LIBS})
  if(UNIX AND NOT APPLE)
    # What `rustc --print native-static-libs` lists for a Rust staticlib on Linux.
    list(APPEND _edgellm_system_libs m rt util gcc_s)
  endif()
  set_target_properties(EdgeLLM::edgellm_static PROPERTIES
    IMPORTED_LOCATION "${_edgellm_static}"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "${EdgeLLM_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "${_edgellm_system_libs}")
endif()

set(EdgeLLM_LIBRARIES EdgeLLM::edgellm)
unset(_edgellm_prefix)
unset(_edgellm_shared)
unset(_edgellm_static)
unset(_edgellm_system_libs)
