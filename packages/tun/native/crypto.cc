// Batch AEAD for WireGuard's transport messages (the paper, section 5.4.6): ChaCha20-Poly1305
// (RFC 8439) from the OpenSSL that Node itself links and exports, one call per batch, reading
// and writing caller-owned buffers in place. The protocol stays in TypeScript: these functions
// only seal or open messages whose 16-byte header JS has already written or checked.
//
// Every argument is checked before any byte is touched; a bad one throws a TypeError or
// RangeError naming it, and nothing is sealed or opened.
#include "crypto.h"

#include <openssl/evp.h>
#include <string.h>

#include <cstdint>
#include <string>

namespace weft {
namespace {

constexpr int kKeyBytes = 32;
constexpr int kTagBytes = 16;
constexpr int kHeaderBytes = 16;
constexpr int kCounterOffset = 8;
constexpr int kSealStride = 6;  // srcOff, srcLen, padLen, dstOff, keySlot, result
constexpr int kOpenStride = 4;  // msgOff, msgLen, keySlot, result
// A transport message carries at most a 64 KiB packet (plus padding); more is a wrong call.
constexpr int64_t kMaxPlaintext = 65536 + 16;

const uint8_t kZeros[16] = {0};

// One cipher context per thread (the addon may load in worker threads), reused for every packet.
struct Contexts {
  EVP_CIPHER_CTX* seal = nullptr;
  EVP_CIPHER_CTX* open = nullptr;
  ~Contexts() {
    EVP_CIPHER_CTX_free(seal);
    EVP_CIPHER_CTX_free(open);
  }
};
thread_local Contexts contexts;

// The bytes of a typed array argument of the given type; false with a JS error pending otherwise.
struct View {
  uint8_t* data = nullptr;
  size_t bytes = 0;
  size_t length = 0;  // elements
};

bool GetView(Napi::Env env, const Napi::Value& v, napi_typedarray_type want, const char* what, View* out) {
  if (!v.IsTypedArray()) {
    Napi::TypeError::New(env, std::string(what) + " must be a typed array").ThrowAsJavaScriptException();
    return false;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t byte_offset = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &byte_offset) != napi_ok) {
    Napi::TypeError::New(env, std::string(what) + " could not be read").ThrowAsJavaScriptException();
    return false;
  }
  bool uint8 = want == napi_uint8_array && (type == napi_uint8_array || type == napi_uint8_clamped_array);
  if (type != want && !uint8) {
    const char* name = want == napi_int32_array ? "an Int32Array" : "a Uint8Array (or Buffer)";
    Napi::TypeError::New(env, std::string(what) + " must be " + name).ThrowAsJavaScriptException();
    return false;
  }
  size_t element = want == napi_int32_array ? 4 : 1;
  out->data = static_cast<uint8_t*>(data);
  out->length = length;
  out->bytes = length * element;
  // A detached (transferred) buffer reads as zero length: every range check below fails on it.
  if (out->data == nullptr) out->bytes = out->length = 0;
  return true;
}

bool InRange(int64_t offset, int64_t length, size_t size) {
  return offset >= 0 && length >= 0 && static_cast<uint64_t>(offset) <= size &&
         static_cast<uint64_t>(length) <= size - static_cast<uint64_t>(offset);
}

bool Overlap(const uint8_t* a, size_t alen, const uint8_t* b, size_t blen) { return a < b + blen && b < a + alen; }

Napi::Value RangeFail(Napi::Env env, int op, const std::string& why) {
  Napi::RangeError::New(env, "op " + std::to_string(op) + ": " + why).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool ReadCount(Napi::Env env, const Napi::Value& v, size_t capacity, int* out) {
  if (!v.IsNumber()) {
    Napi::TypeError::New(env, "count must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > static_cast<double>(capacity)) {
    Napi::RangeError::New(env, "count must be an integer from 0 to the ops table's capacity (" +
                                   std::to_string(capacity) + ")")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int>(d);
  return true;
}

// 12-byte nonce: 4 zero bytes, then the message's little-endian counter (the paper, 5.4.6).
void Nonce(const uint8_t* header, uint8_t nonce[12]) {
  memset(nonce, 0, 4);
  memcpy(nonce + 4, header + kCounterOffset, 8);
}

// sealTransport(src, dst, keys, ops: Int32Array, count) -> count
// Op k (6 words at 6k): srcOff, srcLen, padLen, dstOff, keySlot, result. The header is already
// at dst[dstOff..+16]; the ciphertext of src[srcOff..+srcLen] and padLen zeros goes to dst[dstOff+16..],
// then the tag. result = the message length (16 + srcLen + padLen + 16).
Napi::Value SealTransportJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View src, dst, keys, ops;
  if (!GetView(env, info[0], napi_uint8_array, "src", &src) || !GetView(env, info[1], napi_uint8_array, "dst", &dst) ||
      !GetView(env, info[2], napi_uint8_array, "keys", &keys) || !GetView(env, info[3], napi_int32_array, "ops", &ops))
    return env.Undefined();
  int count = 0;
  if (!ReadCount(env, info[4], ops.length / kSealStride, &count)) return env.Undefined();
  int32_t* op = reinterpret_cast<int32_t*>(ops.data);
  size_t key_slots = keys.bytes / kKeyBytes;
  // Check every op before sealing any, so a bad table changes nothing.
  for (int k = 0; k < count; k++) {
    const int32_t* o = op + k * kSealStride;
    int64_t src_off = o[0], src_len = o[1], pad = o[2], dst_off = o[3], slot = o[4];
    if (src_len < 0 || src_len > kMaxPlaintext) return RangeFail(env, k, "srcLen out of range");
    if (pad < 0 || pad > 15) return RangeFail(env, k, "padLen must be 0..15");
    if (!InRange(src_off, src_len, src.bytes)) return RangeFail(env, k, "src range outside the src buffer");
    int64_t total = kHeaderBytes + src_len + pad + kTagBytes;
    if (!InRange(dst_off, total, dst.bytes)) return RangeFail(env, k, "message does not fit in the dst buffer");
    if (slot < 0 || static_cast<uint64_t>(slot) >= key_slots) return RangeFail(env, k, "keySlot outside the keys buffer");
    const uint8_t* in = src.data + src_off;
    const uint8_t* out = dst.data + dst_off + kHeaderBytes;
    // In place (the plaintext right after its header) or apart; a partial overlap would corrupt.
    if (in != out && Overlap(in, static_cast<size_t>(src_len), dst.data + dst_off, static_cast<size_t>(total)))
      return RangeFail(env, k, "src and dst overlap other than in place");
  }
  if (contexts.seal == nullptr) {
    contexts.seal = EVP_CIPHER_CTX_new();
    if (contexts.seal == nullptr || EVP_EncryptInit_ex(contexts.seal, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) != 1) {
      Napi::Error::New(env, "OpenSSL: ChaCha20-Poly1305 is not available").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  EVP_CIPHER_CTX* ctx = contexts.seal;
  for (int k = 0; k < count; k++) {
    int32_t* o = op + k * kSealStride;
    int src_len = o[1], pad = o[2];
    uint8_t* header = dst.data + o[3];
    uint8_t* out = header + kHeaderBytes;
    uint8_t nonce[12];
    Nonce(header, nonce);
    int n = 0;
    bool ok = EVP_EncryptInit_ex(ctx, nullptr, nullptr, keys.data + static_cast<size_t>(o[4]) * kKeyBytes, nonce) == 1;
    if (ok && src_len > 0) ok = EVP_EncryptUpdate(ctx, out, &n, src.data + o[0], src_len) == 1;
    if (ok && pad > 0) ok = EVP_EncryptUpdate(ctx, out + src_len, &n, kZeros, pad) == 1;
    if (ok) ok = EVP_EncryptFinal_ex(ctx, out + src_len + pad, &n) == 1;
    if (ok) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kTagBytes, out + src_len + pad) == 1;
    o[5] = ok ? kHeaderBytes + src_len + pad + kTagBytes : -1;
  }
  return Napi::Number::New(env, count);
}

// openTransport(buf, keys, ops: Int32Array, count) -> messages that authenticated
// Op k (4 words at 4k): msgOff, msgLen, keySlot, result. Decrypts the message at buf[msgOff]
// in place (the plaintext lands at msgOff+16); result = plaintext length, or -1 when the tag
// does not verify (the plaintext bytes are then garbage and must not be used).
Napi::Value OpenTransportJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  View buf, keys, ops;
  if (!GetView(env, info[0], napi_uint8_array, "buf", &buf) || !GetView(env, info[1], napi_uint8_array, "keys", &keys) ||
      !GetView(env, info[2], napi_int32_array, "ops", &ops))
    return env.Undefined();
  int count = 0;
  if (!ReadCount(env, info[3], ops.length / kOpenStride, &count)) return env.Undefined();
  int32_t* op = reinterpret_cast<int32_t*>(ops.data);
  size_t key_slots = keys.bytes / kKeyBytes;
  for (int k = 0; k < count; k++) {
    const int32_t* o = op + k * kOpenStride;
    int64_t off = o[0], len = o[1], slot = o[2];
    if (len < kHeaderBytes + kTagBytes || len > kMaxPlaintext + kHeaderBytes + kTagBytes)
      return RangeFail(env, k, "msgLen must be 32 bytes or more");
    if (!InRange(off, len, buf.bytes)) return RangeFail(env, k, "message outside the buffer");
    if (slot < 0 || static_cast<uint64_t>(slot) >= key_slots) return RangeFail(env, k, "keySlot outside the keys buffer");
  }
  if (contexts.open == nullptr) {
    contexts.open = EVP_CIPHER_CTX_new();
    if (contexts.open == nullptr || EVP_DecryptInit_ex(contexts.open, EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) != 1) {
      Napi::Error::New(env, "OpenSSL: ChaCha20-Poly1305 is not available").ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  EVP_CIPHER_CTX* ctx = contexts.open;
  int opened = 0;
  for (int k = 0; k < count; k++) {
    int32_t* o = op + k * kOpenStride;
    uint8_t* header = buf.data + o[0];
    uint8_t* body = header + kHeaderBytes;
    int body_len = o[1] - kHeaderBytes - kTagBytes;
    uint8_t nonce[12];
    Nonce(header, nonce);
    // The tag is read before decrypting in place.
    uint8_t tag[kTagBytes];
    memcpy(tag, body + body_len, kTagBytes);
    int n = 0;
    bool ok = EVP_DecryptInit_ex(ctx, nullptr, nullptr, keys.data + static_cast<size_t>(o[2]) * kKeyBytes, nonce) == 1;
    if (ok && body_len > 0) ok = EVP_DecryptUpdate(ctx, body, &n, body, body_len) == 1;
    if (ok) ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, kTagBytes, tag) == 1;
    if (ok) ok = EVP_DecryptFinal_ex(ctx, body + body_len, &n) == 1;
    o[3] = ok ? body_len : -1;
    if (ok) opened++;
  }
  return Napi::Number::New(env, opened);
}

}  // namespace

void RegisterCrypto(Napi::Env env, Napi::Object exports) {
  exports.Set("sealTransport", Napi::Function::New(env, SealTransportJs));
  exports.Set("openTransport", Napi::Function::New(env, OpenTransportJs));
}

}  // namespace weft
