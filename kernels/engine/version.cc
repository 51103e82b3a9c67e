// Build identity of the native engine: which backends this binary contains.
#include "engine.h"

namespace lm {

const char* engine_version() { return "0.1.0"; }

std::vector<std::string> available_backends() {
  std::vector<std::string> out{"cpu"};
#ifdef LM_HAVE_CUDA
  out.push_back("cuda");
#endif
  return out;
}

}  // namespace lm
