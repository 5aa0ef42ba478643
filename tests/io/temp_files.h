// Helpers shared by the io tests: scratch directories that clean up after themselves, files
// written from text, and the message of the ppo::Error a call throws.
#pragma once
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>
#include "engine/error.h"

namespace ppo::test {

// A fresh directory under /tmp, removed with everything in it when the test binary exits.
inline std::string temp_dir() {
  struct Dirs {
    std::vector<std::string> paths;
    ~Dirs() {
      for (const std::string& p : paths) std::filesystem::remove_all(p);
    }
  };
  static Dirs dirs;
  char name[] = "/tmp/ppo_test_io_XXXXXX";
  REQUIRE(::mkdtemp(name) != nullptr);
  dirs.paths.push_back(name);
  return name;
}

inline std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The what() of the ppo::Error fn throws, or "(no error)".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ppo::Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace ppo::test
