// Errors: every failure is a ppo::Error whose message names what failed and where (file:line).
// PPO_ASSERT stays on in release builds.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ppo {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_at(const char* file, int line, const std::string& message);

// a * b and a + b of byte counts; an error naming `what` when the result does not fit size_t.
size_t checked_mul(size_t a, size_t b, const std::string& what);
size_t checked_add(size_t a, size_t b, const std::string& what);

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace ppo

// Throws ppo::Error with the message built from the arguments (streamed) and file:line.
#define PPO_FAIL(...) ::ppo::fail_at(__FILE__, __LINE__, ::ppo::detail::concat(__VA_ARGS__))
// Checks a precondition; the message says what was expected and, through the arguments, why.
#define PPO_ASSERT(cond, ...) \
  do {                        \
    if (!(cond)) PPO_FAIL("check failed: " #cond ": ", __VA_ARGS__); \
  } while (0)
