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
