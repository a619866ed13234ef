// Ones' complement sums (RFC 1071) of byte ranges, a batch per call.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace weft {

// The ones' complement sum of `n` bytes read as big-endian 16-bit words (an odd last byte padded
// with a zero), folded to 16 bits and not complemented.
uint32_t OnesSum(const uint8_t* p, size_t n);

// Adds sumRanges to the addon's exports.
void RegisterChecksum(Napi::Env env, Napi::Object exports);

}  // namespace weft
