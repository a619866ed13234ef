// Reading JS arguments without trusting them: C++ exceptions are off in this build, so an
// unchecked As<>() on a value of the wrong type is a crash. Each reader checks the type and the
// range of argument `i` and either stores it or throws a TypeError/RangeError naming `what`.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace weft {

// An integer (a Number with no fraction) in [min, max].
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t min, int64_t max, int64_t* out);
bool ArgInt32(const Napi::CallbackInfo& info, size_t i, const char* what, int32_t min, int32_t max, int32_t* out);
// A string of at most `max_bytes` UTF-8 bytes, without NUL.
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_bytes, std::string* out);
// As ArgString, but undefined (or a missing argument) reads as "".
bool ArgOptionalString(const Napi::CallbackInfo& info, size_t i, const char* what, size_t max_bytes, std::string* out);
bool ArgBool(const Napi::CallbackInfo& info, size_t i, const char* what, bool* out);
bool ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* what, Napi::Function* out);
// A Uint8Array (a Buffer) of exactly `length` bytes, copied out.
bool ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* what, size_t length, uint8_t* out);
// A Uint8Array of `min_length` to `max_length` bytes, as a view valid until the call returns.
bool ArgByteView(const Napi::CallbackInfo& info, size_t i, const char* what, size_t min_length, size_t max_length,
                 const uint8_t** data, size_t* length);

}  // namespace weft
