// Batch ChaCha20-Poly1305 for WireGuard transport messages, through Node's own OpenSSL.
#pragma once

#include <napi.h>

namespace weft {

// Adds sealTransport and openTransport to the addon's exports.
void RegisterCrypto(Napi::Env env, Napi::Object exports);

}  // namespace weft
