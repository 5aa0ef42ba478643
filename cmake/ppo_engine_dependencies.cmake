# The libraries ppo_engine links publicly (Debian packages, see README; the CUDA toolkit when the
# CUDA backend is built). Included by the project's CMakeLists.txt and by the installed
# ppo_engine-config.cmake, so an embedding program finds exactly what the engine was built with.
find_package(OpenMP REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
if(PPO_HAS_CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()
# MPI (Open MPI: libopenmpi-dev) for data-parallel ranks; optional: without it the engine runs one rank.
# The installed package needs it exactly when the engine was built with it. The C API from C++ (no
# C++ bindings; a project that embeds the engine need not enable C).
set(MPI_CXX_SKIP_MPICXX ON)
if(DEFINED PPO_HAS_MPI_INSTALLED)
  if(PPO_HAS_MPI_INSTALLED)
    find_package(MPI REQUIRED COMPONENTS CXX)
  endif()
else()
  find_package(MPI COMPONENTS CXX)
  set(PPO_HAS_MPI ${MPI_CXX_FOUND})
endif()
