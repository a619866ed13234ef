// The addon's free functions, one per file by topic; addon.cc puts them on the exports.
#pragma once

#include <napi.h>

#include "errors.h"
#include "syscalls.h"

namespace weft {

// open.cc
Napi::Value OpenTunJs(const Napi::CallbackInfo& info);
Napi::Value OpenUdpJs(const Napi::CallbackInfo& info);
Napi::Value OpenNetlinkJs(const Napi::CallbackInfo& info);
// ifconfig.cc
Napi::Value IfconfigJs(const Napi::CallbackInfo& info);

// Paths (a device, a network namespace) are at most PATH_MAX bytes.
constexpr size_t kMaxPathBytes = 4096;

// Enters the network namespace at `path` ("" stays) until the end of the enclosing scope, or
// returns a system error. Read every argument first: no JS may run inside another namespace.
#define WEFT_ENTER_NETNS(env, path) \
  NetnsGuard netns_guard(path);     \
  if (netns_guard.error != 0) return ThrowErrno(env, netns_guard.error, "setns(" + (path) + ")")

}  // namespace weft
