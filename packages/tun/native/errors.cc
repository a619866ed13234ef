#include "errors.h"

#include <errno.h>
#include <string.h>
#include <uv.h>

namespace weft {

namespace {

// libuv names the errnos it knows; a TUN queue whose device is gone says EBADFD, which it does not.
const char* ErrnoName(int err) { return err == EBADFD ? "EBADFD" : uv_err_name(-err); }

}  // namespace

Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& syscall) {
  if (env.IsExceptionPending()) return env.Undefined();
  Napi::Error e = Napi::Error::New(env, syscall + ": " + strerror(err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

bool ThrowType(Napi::Env env, const std::string& message) {
  if (!env.IsExceptionPending()) Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
  return false;
}

bool ThrowRange(Napi::Env env, const std::string& message) {
  if (!env.IsExceptionPending()) Napi::RangeError::New(env, message).ThrowAsJavaScriptException();
  return false;
}

bool ThrowError(Napi::Env env, const std::string& message, const char* code) {
  if (env.IsExceptionPending()) return false;
  Napi::Error e = Napi::Error::New(env, message);
  if (code != nullptr) e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
  return false;
}

}  // namespace weft
