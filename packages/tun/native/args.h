// Reading JS values without trusting them: C++ exceptions are off in this build, so an unchecked
// As<>() on a value of the wrong type is a crash. Each reader checks the type and the range of
// one value (an argument, or an element of an array argument) and either stores it or throws a
// TypeError/RangeError naming `what` and returns false.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace weft {

// An integer (a Number with no fraction) in [min, max].
bool ReadInt(Napi::Env env, Napi::Value v, const char* what, int64_t min, int64_t max, int64_t* out);
bool ReadInt32(Napi::Env env, Napi::Value v, const char* what, int32_t min, int32_t max, int32_t* out);
// A string of at most `max_bytes` UTF-8 bytes, without NUL.
bool ReadString(Napi::Env env, Napi::Value v, const char* what, size_t max_bytes, std::string* out);
bool ReadBool(Napi::Env env, Napi::Value v, const char* what, bool* out);
// A Uint8Array (a Buffer) of exactly `length` bytes, copied out.
bool ReadBytes(Napi::Env env, Napi::Value v, const char* what, size_t length, uint8_t* out);
// Element `index` of an Array (a getter may run JS: false if it threw).
bool ReadElement(Napi::Env env, Napi::Value array, const char* what, uint32_t index, Napi::Value* out);

inline bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t min, int64_t max, int64_t* out) {
  return ReadInt(info.Env(), info[i], what, min, max, out);
}
inline bool ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* what, int32_t min, int32_t max,
                     int32_t* out) {
  return ReadInt32(info.Env(), info[i], what, min, max, out);
}
inline bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_bytes, std::string* out) {
  return ReadString(info.Env(), info[i], what, max_bytes, out);
}
// As ArgString, but undefined (or a missing argument) reads as "".
bool ArgOptionalString(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_bytes, std::string* out);
inline bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* what, bool* out) {
  return ReadBool(info.Env(), info[i], what, out);
}
bool ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* what, Napi::Function* out);
inline bool ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* what, size_t length, uint8_t* out) {
  return ReadBytes(info.Env(), info[i], what, length, out);
}
// A Uint8Array of `min_length` to `max_length` bytes, as a view valid until the call returns.
bool ArgByteView(const Napi::CallbackInfo& info, size_t i, const char* what, size_t min_length, size_t max_length,
                 const uint8_t** data, size_t* length);

}  // namespace weft
