#include "args.h"

#include <cmath>
#include <cstring>

#include "errors.h"

namespace weft {

namespace {

// A Uint8Array's live bytes, or false with a TypeError pending.
bool Bytes(Napi::Env env, Napi::Value v, const char* what, const uint8_t** data, size_t* length) {
  if (!v.IsTypedArray()) return ThrowType(env, std::string(what) + " must be a Uint8Array or Buffer");
  napi_typedarray_type type;
  size_t elements = 0;
  void* bytes = nullptr;
  napi_value buffer;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &type, &elements, &bytes, &buffer, &offset) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array))
    return ThrowType(env, std::string(what) + " must be a Uint8Array or Buffer");
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, buffer, &detached) == napi_ok && detached)
    return ThrowType(env, std::string(what) + " is detached (its ArrayBuffer was transferred away)");
  *data = static_cast<const uint8_t*>(bytes);
  *length = elements;
  return true;
}

}  // namespace

bool ReadInt(Napi::Env env, Napi::Value v, const char* what, int64_t min, int64_t max, int64_t* out) {
  // One call, not IsNumber() then a read: send() takes two of these per batch.
  double d = 0;
  if (v.IsEmpty() || napi_get_value_double(env, v, &d) != napi_ok) return ThrowType(env, std::string(what) + " must be a number");
  if (!std::isfinite(d) || std::trunc(d) != d) return ThrowRange(env, std::string(what) + " must be an integer");
  if (d < static_cast<double>(min) || d > static_cast<double>(max))
    return ThrowRange(env, std::string(what) + " must be " + std::to_string(min) + " to " + std::to_string(max));
  *out = static_cast<int64_t>(d);
  return true;
}

bool ReadInt32(Napi::Env env, Napi::Value v, const char* what, int32_t min, int32_t max, int32_t* out) {
  int64_t wide = 0;
  if (!ReadInt(env, v, what, min, max, &wide)) return false;
  *out = static_cast<int32_t>(wide);
  return true;
}

bool ReadString(Napi::Env env, Napi::Value v, const char* what, size_t max_bytes, std::string* out) {
  if (!v.IsString()) return ThrowType(env, std::string(what) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.size() > max_bytes) return ThrowRange(env, std::string(what) + " must be at most " + std::to_string(max_bytes) + " bytes");
  if (s.find('\0') != std::string::npos) return ThrowRange(env, std::string(what) + " must not contain NUL");
  *out = std::move(s);
  return true;
}

bool ReadBool(Napi::Env env, Napi::Value v, const char* what, bool* out) {
  if (!v.IsBoolean()) return ThrowType(env, std::string(what) + " must be a boolean");
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

bool ReadBytes(Napi::Env env, Napi::Value v, const char* what, size_t length, uint8_t* out) {
  const uint8_t* data = nullptr;
  size_t n = 0;
  if (!Bytes(env, v, what, &data, &n)) return false;
  if (n != length) return ThrowRange(env, std::string(what) + " must be " + std::to_string(length) + " bytes");
  if (length > 0) memcpy(out, data, length);
  return true;
}

bool ReadElement(Napi::Env env, Napi::Value array, const char* what, uint32_t index, Napi::Value* out) {
  if (!array.IsArray()) return ThrowType(env, std::string(what) + " must be an array");
  Napi::Value v = array.As<Napi::Array>().Get(index);
  if (env.IsExceptionPending() || v.IsEmpty()) return false;
  *out = v;
  return true;
}

bool ArgOptionalString(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_bytes,
                       std::string* out) {
  if (info[i].IsUndefined()) {
    out->clear();
    return true;
  }
  return ArgString(info, i, what, max_bytes, out);
}

bool ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* what, Napi::Function* out) {
  Napi::Value v = info[i];
  if (!v.IsFunction()) return ThrowType(info.Env(), std::string(what) + " must be a function");
  *out = v.As<Napi::Function>();
  return true;
}

bool ArgByteView(const Napi::CallbackInfo& info, size_t i, const char* what, size_t min_length, size_t max_length,
                 const uint8_t** data, size_t* length) {
  if (!Bytes(info.Env(), info[i], what, data, length)) return false;
  if (*length < min_length || *length > max_length)
    return ThrowRange(info.Env(), std::string(what) + " must be " + std::to_string(min_length) + " to " +
                                      std::to_string(max_length) + " bytes");
  return true;
}

}  // namespace weft
