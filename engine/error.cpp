#include "engine/error.h"

namespace ppo {

void fail_at(const char* file, int line, const std::string& message) {
  throw Error(message + " [" + file + ":" + std::to_string(line) + "]");
}

}  // namespace ppo
