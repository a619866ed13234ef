// The addon's JS errors, defined once: system errors in Node's shape, and argument errors.
#pragma once

#include <napi.h>

#include <string>

namespace weft {

// Throws an Error carrying code (e.g. "EPERM"), errno and syscall, like Node's own system errors.
Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& syscall);

// Throw a TypeError (wrong kind of value) or RangeError (right kind, out of range); return false.
bool ThrowType(Napi::Env env, const std::string& message);
bool ThrowRange(Napi::Env env, const std::string& message);

}  // namespace weft
