// The addon's JS errors, defined once: system errors in Node's shape, and argument errors.
// Each throws only when no exception is pending already (a second napi_throw would abort), and
// the first one stands.
#pragma once

#include <napi.h>

#include <string>

namespace weft {

// Throws an Error carrying code (e.g. "EPERM"), errno and syscall, like Node's own system errors.
Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& syscall);

// Throw a TypeError (wrong kind of value), a RangeError (right kind, out of range) or an Error
// (wrong state, with an optional `code`); return false.
bool ThrowType(Napi::Env env, const std::string& message);
bool ThrowRange(Napi::Env env, const std::string& message);
bool ThrowError(Napi::Env env, const std::string& message, const char* code = nullptr);

}  // namespace weft
