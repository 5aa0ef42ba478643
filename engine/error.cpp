#include "engine/error.h"

namespace ppo {

void fail_at(const char* file, int line, const std::string& message) {
  throw Error(message + " [" + file + ":" + std::to_string(line) + "]");
}

size_t checked_mul(size_t a, size_t b, const std::string& what) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) PPO_FAIL(what, ": ", a, " x ", b, " bytes overflow a 64-bit size");
  return r;
}

size_t checked_add(size_t a, size_t b, const std::string& what) {
  size_t r;
  if (__builtin_add_overflow(a, b, &r)) PPO_FAIL(what, ": ", a, " + ", b, " bytes overflow a 64-bit size");
  return r;
}

}  // namespace ppo
