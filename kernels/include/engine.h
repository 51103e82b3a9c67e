// Public C++ surface of the LatentMesh engine (used by kernels/napi and kernels/tests).
#pragma once
#include <string>
#include <vector>

namespace lm {

const char* engine_version();
std::vector<std::string> available_backends();

}  // namespace lm
