// Node-API glue only: converts arguments, runs engine calls, turns C++ exceptions into JS errors.
#include <node_api.h>

#include <string>

#include "engine.h"

namespace {

napi_value Version(napi_env env, napi_callback_info) {
  napi_value out;
  napi_create_string_utf8(env, lm::engine_version(), NAPI_AUTO_LENGTH, &out);
  return out;
}

napi_value Backends(napi_env env, napi_callback_info) {
  auto names = lm::available_backends();
  napi_value arr;
  napi_create_array_with_length(env, names.size(), &arr);
  for (size_t i = 0; i < names.size(); ++i) {
    napi_value s;
    napi_create_string_utf8(env, names[i].c_str(), names[i].size(), &s);
    napi_set_element(env, arr, static_cast<uint32_t>(i), s);
  }
  return arr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"version", nullptr, Version, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"backends", nullptr, Backends, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
