#include "slab.h"

#include "errors.h"

namespace weft {

namespace {

// A typed array of `type` with at least `min_elements` elements over a plain, attached
// ArrayBuffer, and where its bytes lie; false with a JS error pending otherwise.
bool Inspect(Napi::Env env, Napi::Value value, napi_typedarray_type type, size_t min_elements, const char* what,
             napi_value* buffer, uint8_t** base, size_t* offset, size_t* length) {
  if (!value.IsTypedArray()) return ThrowType(env, std::string(what) + " must be a typed array");
  napi_typedarray_type actual;
  size_t elements = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &actual, &elements, &data, buffer, offset) != napi_ok)
    return ThrowType(env, std::string(what) + " must be a typed array");
  if (actual != type && !(type == napi_uint8_array && actual == napi_uint8_clamped_array))
    return ThrowType(env, std::string(what) + " has the wrong element type");
  if (elements < min_elements)
    return ThrowRange(env, std::string(what) + " is too short: it needs " + std::to_string(min_elements) + " elements");
  bool is_buffer = false;
  if (napi_is_arraybuffer(env, *buffer, &is_buffer) != napi_ok || !is_buffer)
    return ThrowType(env, std::string(what) + " must not be backed by a SharedArrayBuffer");
  void* start = nullptr;
  size_t base_length = 0;
  if (napi_get_arraybuffer_info(env, *buffer, &start, &base_length) != napi_ok)
    return ThrowType(env, std::string(what) + " has no readable memory");
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, *buffer, &detached) != napi_ok || detached)
    return ThrowType(env, std::string(what) + " is detached (its ArrayBuffer was transferred away)");
  size_t element_size = 1;
  switch (actual) {
    case napi_int16_array:
    case napi_uint16_array:
      element_size = 2;
      break;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      element_size = 4;
      break;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      element_size = 8;
      break;
    default:
      break;
  }
  *length = elements * element_size;
  if (*offset > base_length || *length > base_length - *offset)
    return ThrowRange(env, std::string(what) + " lies outside its ArrayBuffer");
  *base = static_cast<uint8_t*>(start);
  return true;
}

}  // namespace

bool Pinned::Pin(Napi::Env env, Napi::Value value, napi_typedarray_type type, size_t min_elements, const char* what) {
  Reset();
  napi_value buffer;
  uint8_t* base = nullptr;
  size_t offset = 0;
  size_t length = 0;
  if (!Inspect(env, value, type, min_elements, what, &buffer, &base, &offset, &length)) return false;
  buffer_ = Napi::Reference<Napi::ArrayBuffer>::New(Napi::ArrayBuffer(env, buffer), 1);
  base_ = base;
  offset_ = offset;
  length_ = length;
  pinned_ = true;
  return true;
}

bool Pinned::Borrow(Napi::Env env, Napi::Value value, napi_typedarray_type type, size_t min_elements, const char* what,
                    SlabRange* out) {
  napi_value buffer;
  uint8_t* base = nullptr;
  size_t offset = 0;
  size_t length = 0;
  if (!Inspect(env, value, type, min_elements, what, &buffer, &base, &offset, &length)) return false;
  *out = SlabRange(base + offset, length);
  return true;
}

bool Pinned::ReadBuffer(napi_env env, uint8_t** base, size_t* length) const {
  if (!pinned_) return false;
  napi_value buffer = nullptr;
  void* data = nullptr;
  if (napi_get_reference_value(env, buffer_, &buffer) != napi_ok || buffer == nullptr ||
      napi_get_arraybuffer_info(env, buffer, &data, length) != napi_ok) {
    return false;
  }
  *base = static_cast<uint8_t*>(data);
  return true;
}

bool Pinned::Check(napi_env env) {
  uint8_t* base = nullptr;
  size_t length = 0;
  if (ReadBuffer(env, &base, &length) && Fits(base, length)) return true;
  Reset();
  return false;
}

bool Pinned::SameBuffer(napi_env env, const Pinned& other) const {
  napi_value a = nullptr;
  napi_value b = nullptr;
  bool same = false;
  return pinned_ && other.pinned_ && napi_get_reference_value(env, buffer_, &a) == napi_ok &&
         napi_get_reference_value(env, other.buffer_, &b) == napi_ok && a != nullptr && b != nullptr &&
         napi_strict_equals(env, a, b, &same) == napi_ok && same;
}

void PinSet::Build(napi_env env, std::initializer_list<Pinned*> pins) {
  pins_.clear();
  first_.clear();
  for (Pinned* p : pins) {
    if (!p->pinned() || pins_.size() == kMaxPins) continue;
    size_t first = pins_.size();
    for (size_t j = 0; j < pins_.size(); j++) {
      if (first_[j] == j && p->SameBuffer(env, *pins_[j])) {
        first = j;
        break;
      }
    }
    pins_.push_back(p);
    first_.push_back(first);
  }
}

bool PinSet::Check(napi_env env) const {
  uint8_t* bases[kMaxPins];
  size_t lengths[kMaxPins];
  for (size_t i = 0; i < pins_.size(); i++) {
    size_t f = first_[i];
    if (f == i && !pins_[i]->ReadBuffer(env, &bases[i], &lengths[i])) return false;
    if (!pins_[i]->Fits(bases[f], lengths[f])) return false;
  }
  return true;
}

void Pinned::Reset() {
  buffer_.Reset();
  base_ = nullptr;
  offset_ = 0;
  length_ = 0;
  pinned_ = false;
}

bool SlabTable::PinSlab(Napi::Env env, Napi::Value value, Pinned* out) {
  return out->Pin(env, value, napi_uint8_array, 0, "a slab");
}

void SlabTable::Put(uint32_t index, Pinned&& pin) {
  if (index >= kSlabs) return;
  if (slabs_.size() <= index) {
    slabs_.resize(index + 1);
    checked_.resize(index + 1, 0);
  }
  slabs_[index] = std::move(pin);
  checked_[index] = 0;
}

bool SlabTable::Check(napi_env env, uint32_t index) { return index < slabs_.size() && slabs_[index].Check(env); }

void SlabTable::Clear() {
  slabs_.clear();
  checked_.clear();
}

}  // namespace weft
